"""experiments.time_split: the seconds of a results tree, from its files only (a hand-made tree)."""

import json
import os

import pytest


def _run(root, task, method, seed, train=None, task_eval=0.0, prior=0.0, cached=False, start=None, end=None):
    run = root / task / method / f"seed{seed}"
    run.mkdir(parents=True)
    if train is not None:
        (run / "manifest.json").write_text(json.dumps({"wall_clock_s": train, "started": start}))
    result = {"evaluations": {"student": {"wall_s": task_eval}},
              "prior": {"embedded": {"wall_s": prior, **({"reused_from_cache": True} if cached else {})}}}
    (run / "eval.json").write_text(json.dumps(result))
    os.utime(run / "eval.json", (end, end))


def test_time_split_adds_up_the_files_and_ignores_a_cached_prior(tmp_path):
    from experiments.time_split import collect, per_method, per_seed, to_markdown

    t0 = 1_800_000_000  # 2027-01-15T08:00:00Z
    _run(tmp_path, "a", "base", 0, task_eval=30, prior=200, end=t0 + 230)
    _run(tmp_path, "b", "base", 0, task_eval=20, prior=200, cached=True, end=t0 + 260)  # prior from the cache
    _run(tmp_path, "a", "sft", 0, train=100, task_eval=40, prior=150, start="2027-01-15T08:00:00+0000",
         end=t0 + 290)
    _run(tmp_path, "b", "sft", 0, train=300, task_eval=60, prior=170, start="2027-01-15T08:05:00+0000",
         end=t0 + 900)
    runs = collect(tmp_path)
    methods = per_method(runs).set_index("method")
    # by hand: base (230 + 20) / 2 = 125; sft (290 + 530) / 2 = 410, training (100 + 300) / 2 = 200
    assert methods.loc["base", "total"] == pytest.approx(125) and methods.loc["base", "train"] == 0
    assert methods.loc["sft", "total"] == pytest.approx(410) and methods.loc["sft", "train"] == pytest.approx(200)
    seed = per_seed(runs).iloc[0]
    assert seed["sum_s"] == pytest.approx(230 + 20 + 290 + 530) and seed["prior_s"] == pytest.approx(520)
    assert seed["span_s"] == pytest.approx(900)  # the first manifest's start (t0) to the last eval.json (t0 + 900)
    md = to_markdown(runs, "t")
    assert "| sft | 2 | 200 | 50 | 160 | 410 |" in md and "| 0 | 4 |" in md and "15.0 min |" in md


def _profiled_run(root, method, seed, *, train, startup, lines, probes, test, prior):
    """A run directory as a run with the step phases writes it (``lines``: the time/* keys of each training line;
    ``probes``: step -> the probe's wall_s, or None for a probe file without it)."""
    run = root / "a" / method / f"seed{seed}"
    (run / "selection").mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps({"wall_clock_s": train, "started": "2027-01-15T08:00:00+0000",
                                                   **({"startup": startup} if startup else {})}))
    rows = [{"step": i + 1, "loss": 1.0, **{f"time/{k}_s": v for k, v in line.items()}} for i, line in enumerate(lines)]
    rows.append({"step": len(lines), "train_runtime": 9.0})  # the end-of-training summary: not a step line
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for step, wall in probes.items():
        (run / "selection" / f"step{step}.json").write_text(json.dumps({"value": 1.0, **({} if wall is None else
                                                                                        {"wall_s": wall})}))
    benchmarks = {name: {"value": 50.0, **({} if wall is None else {"wall_s": wall})} for name, wall in prior.items()}
    total = sum(w for w in prior.values() if w is not None)
    (run / "eval.json").write_text(json.dumps({"evaluations": {"student": {"wall_s": test}},
                                               "prior": {"embedded": {"wall_s": total, "benchmarks": benchmarks}}}))


def test_the_profile_splits_each_part_and_shows_what_older_runs_lack_as_missing(tmp_path):
    import math

    from experiments.time_split import collect_profiles, main, profile_table

    startup = {"process_to_run_s": 12.0, "run_to_first_step_s": 5.0, "model_load_s": 2.0}
    sdft = {"rollout": 4.0, "teacher": 1.0, "student": 2.0, "backward": 3.0, "optimizer": 0.5, "ema": 0.25,
            "checkpoint": 0.0}
    _profiled_run(tmp_path, "sdft", 0, train=60.0, startup=startup, lines=[sdft, {**sdft, "checkpoint": 1.5}],
                  probes={1: 3.0, 2: 4.0}, test=20.0, prior={"facts": 30.0, "code": 10.0})
    _profiled_run(tmp_path, "sdft", 1, train=80.0, startup={**startup, "process_to_run_s": None},
                  lines=[sdft, sdft], probes={2: 5.0}, test=30.0, prior={"facts": 40.0, "code": 20.0})
    # an older run: no startup, no time/* keys, a probe without wall_s, a prior without per-benchmark seconds
    _profiled_run(tmp_path, "sft", 0, train=50.0, startup=None, lines=[{}, {}], probes={2: None}, test=10.0,
                  prior={"facts": None, "code": None})
    # a base model's suite reused from the cache: 0 where the cached suite recorded the benchmark's seconds
    base = tmp_path / "a" / "base" / "seed0"
    base.mkdir(parents=True)
    (base / "eval.json").write_text(json.dumps({"evaluations": {"student": {"wall_s": 5.0}}, "prior": {"embedded": {
        "wall_s": 70.0, "reused_from_cache": True, "benchmarks": {"facts": {"wall_s": 60.0}, "code": {}}}}}))
    runs = collect_profiles(tmp_path).set_index("method")
    assert runs.loc["base", "prior/facts"] == 0.0 and math.isnan(runs.loc["base", "prior/code"])
    assert math.isnan(runs.loc["base", "train"]) and runs.loc["base", "total"] == 5.0
    # by hand, seed 0: phases 2 x 10.75 + 1.5 = 23; probes 7; other 60 - 5 - 23 - 7 = 25; total 12 + 60 + 20 + 40
    first = runs.loc["sdft"].iloc[0]
    assert first["train/rollout"] == 8.0 and first["train/checkpoint"] == 1.5 and first["train/probes"] == 7.0
    assert first["train/other"] == pytest.approx(25.0) and first["total"] == pytest.approx(132.0)
    assert first["prior/facts"] == 30.0 and first["prior"] == 40.0
    # seed 1: other 80 - 5 - 21.5 - 5 = 48.5; no process start-up (a later run of its process): total 80 + 30 + 60
    second = runs.loc["sdft"].iloc[1]
    assert second["train/other"] == pytest.approx(48.5) and second["total"] == pytest.approx(170.0)
    assert math.isnan(second["startup"])
    old = runs.loc["sft"]
    for part in ("startup", "train/setup", "train/model_load", "train/rollout", "train/probes", "train/other",
                 "prior/facts"):
        assert math.isnan(old[part]), part
    assert old["train"] == 50.0 and old["prior"] == 0.0 and old["total"] == 60.0

    table = profile_table(collect_profiles(tmp_path))
    assert list(table.columns) == ["base", "sdft", "sft"]
    assert table.loc["train/other", "sdft"] == pytest.approx((25.0 + 48.5) / 2)
    assert table.loc["startup", "sdft"] == 12.0  # the mean over the runs that recorded it
    assert table.loc["train/student", "sdft"] == 4.0 and table.loc["prior/code", "sdft"] == 15.0
    assert math.isnan(table.loc["train/rollout", "sft"]) and "train/forward_backward" not in table.index
    assert table.loc["runs"].tolist() == [1, 2, 1]
    parts = list(table.index)  # the phases in the order of sdft.timing, the benchmarks as the files list them
    assert parts.index("train/model_load") < parts.index("train/rollout") < parts.index("train/ema") \
        < parts.index("train/probes") < parts.index("prior/facts") < parts.index("prior/code") < parts.index("total")

    out = main([str(tmp_path), "--profile"])
    md = out.read_text()
    assert out.name == "time_profile.md" and out.with_suffix(".csv").exists()
    assert "| · other (data, schedule, logging, final save) | – | 36.8 | – |" in md and "| runs | 1 | 2 | 1 |" in md
    assert "| **total** | 5.0 | 151.0 | 60.0 |" in md
