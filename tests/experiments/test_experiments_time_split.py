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
