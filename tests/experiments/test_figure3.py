"""Figure 3 (skills learned in sequence): the paper's normalization against a hand computation, a sequence killed
in phase 2 resuming in phase 2 from phase 1's model, and `run_figure3.sh --preset smoke` end to end."""

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from experiments.figure3 import aggregate, collect_points, main, normalize, phase_dir, points_dir
from tests.section_scripts import section_ok

ROOT = Path(__file__).resolve().parents[2]


def test_normalization_equals_a_hand_computation():
    rows = [  # method, phase, phase_task, global_step, task, value  (mean curves)
        ("sdft", 0, "base", 0, "tool", 20.0), ("sdft", 0, "base", 0, "science", 50.0),
        ("sdft", 1, "tool", 10, "tool", 60.0), ("sdft", 1, "tool", 10, "science", 45.0),
        ("sdft", 2, "science", 20, "tool", 55.0), ("sdft", 2, "science", 20, "science", 70.0),
        ("sft", 0, "base", 0, "tool", 20.0), ("sft", 0, "base", 0, "science", 50.0),
        ("sft", 1, "tool", 10, "tool", 100.0), ("sft", 1, "tool", 10, "science", 30.0),
        ("sft", 2, "science", 20, "tool", 40.0), ("sft", 2, "science", 20, "science", 60.0),
        ("sft", 0, "base", 0, "medical", 10.0), ("sft", 1, "tool", 10, "medical", 5.0),  # never above the base
    ]
    curves = pd.DataFrame(rows, columns=["method", "phase", "phase_task", "global_step", "task", "value"])
    got = normalize(curves.assign(metric="acc"))
    norm = {(r.method, r.global_step, r.task): r.normalized for r in got.itertuples()}
    # tool: base 20, best 100 (SFT at step 10) -> (v - 20) / 80; science: base 50, best 70 (SDFT at 20) -> /20
    assert norm[("sdft", 10, "tool")] == pytest.approx(40 / 80)
    assert norm[("sdft", 20, "tool")] == pytest.approx(35 / 80)
    assert norm[("sft", 10, "tool")] == pytest.approx(1.0)
    assert norm[("sft", 20, "tool")] == pytest.approx(20 / 80)
    assert norm[("sdft", 10, "science")] == pytest.approx(-5 / 20)
    assert norm[("sdft", 20, "science")] == pytest.approx(1.0)
    assert norm[("sft", 10, "science")] == pytest.approx(-20 / 20)
    assert norm[("sft", 20, "science")] == pytest.approx(10 / 20)
    assert norm[("sdft", 0, "tool")] == 0.0 and norm[("sft", 0, "science")] == 0.0
    assert math.isnan(norm[("sft", 10, "medical")])  # no point beats the base: undefined, not 0 or 1


def _argv(out, *extra):
    return ["--preset", "smoke", "--results-dir", str(out), "--methods", "sft",
            "--phases", "embedded_tool,embedded_science", *extra]


def test_a_sequence_killed_in_phase_2_resumes_in_phase_2_from_phase_1s_model(tmp_path, monkeypatch, capsys):
    import sdft.train

    out = tmp_path / "figure3"
    real = sdft.train.run_training
    trained = []

    def killed_in_phase_2(cfg, *args, **kwargs):
        trained.append(cfg.task)
        if cfg.task == "embedded_science":
            raise KeyboardInterrupt("killed in phase 2")
        return real(cfg, *args, **kwargs)

    monkeypatch.setattr(sdft.train, "run_training", killed_in_phase_2)
    with pytest.raises(KeyboardInterrupt):
        main(_argv(out))
    phase1 = phase_dir(out, "sft", 0, 0, "embedded_tool")
    weights = phase1 / "model" / "model.safetensors"
    before = weights.stat().st_mtime_ns, weights.read_bytes()
    evaluated = {p: p.stat().st_mtime_ns for p in points_dir(out, "sft", 0, 0, "embedded_tool").rglob("eval.json")}
    assert trained == ["embedded_tool", "embedded_science"] and evaluated

    monkeypatch.setattr(sdft.train, "run_training", real)
    capsys.readouterr()
    main(_argv(out))
    printed = capsys.readouterr().out
    assert f"{phase1} is complete; skipping" in printed  # phase 1 is not trained again...
    assert (weights.stat().st_mtime_ns, weights.read_bytes()) == before
    assert {p: p.stat().st_mtime_ns for p in evaluated} == evaluated  # ...nor evaluated again
    phase2 = phase_dir(out, "sft", 0, 1, "embedded_science")
    config = (phase2 / "config.yaml").read_text()
    assert f"model: {phase1 / 'model'}" in config  # phase 2 trains from phase 1's model
    assert json.loads((phase2 / "manifest.json").read_text())["status"] == "completed"
    raw = collect_points(out)
    # global steps continue across phases: phase 2's points come after phase 1's last one
    end1 = raw.loc[raw["phase"] == 1, "global_step"].max()
    assert raw.loc[raw["phase"] == 2, "global_step"].min() > end1 == 3
    assert not (phase1 / "checkpoints").exists()  # evaluated, then deleted; model/ stays


@pytest.mark.slow
def test_run_figure3_smoke_writes_the_table_and_figure(tmp_path):
    out = tmp_path / "figure3"
    section_ok("figure3", "--preset", "smoke", "--jobs", "2", "--results-dir", str(out))
    for name in ("figure3.md", "figure3.csv", "figure3_raw.csv", "figure3.png", "figure3.pdf"):
        assert (out / name).stat().st_size > 0, name
    raw = pd.read_csv(out / "figure3_raw.csv")
    tasks = {"embedded_tool", "embedded_science", "embedded_medical"}
    # both methods, three phases of 3 steps evaluated at steps 2 and 3 of each, on all three tasks, plus step 0
    for method in ("sdft", "sft"):
        steps = raw[(raw["method"] == method) & (raw["task"] != "prior")].groupby("global_step")["task"].apply(set)
        assert list(steps.index) == [0, 2, 3, 5, 6, 8, 9] and all(s == tasks for s in steps)
        prior = raw[(raw["method"] == method) & (raw["task"] == "prior")]
        assert list(prior["global_step"]) == [0, 3, 6, 9]  # the prior suite at the base and every phase end
    table = pd.read_csv(out / "figure3.csv")
    assert set(table["method"]) == {"sdft", "sft"}
    # the table is rebuilt from the result files alone, and `experiments.make_figures --all` draws Figure 3 from them
    (out / "figure3.csv").unlink()
    (out / "figure3.png").unlink()
    aggregate(out)
    assert pd.read_csv(out / "figure3.csv").equals(table)
    from experiments.make_figures import main as make

    (out / "figure3.png").unlink()
    report = make(["--all", "--results-root", str(tmp_path)])
    assert report["3"][0] == "written" and (out / "figure3.png").exists()
    assert all(status == "skipped" for name, (status, _) in report.items() if name != "3")


def test_figures_make_names_and_skips_every_figure_without_results(tmp_path, capsys):
    from experiments.make_figures import FIGURES
    from experiments.make_figures import main as make

    (tmp_path / "table5").mkdir()  # a results folder with nothing in it: skipped, not drawn
    report = make(["--all", "--results-root", str(tmp_path)])
    assert set(report) == set(FIGURES) and all(status == "skipped" for status, _ in report.values())
    assert "nothing to aggregate" in report["4"][1] and "no results at" in report["3"][1]
    assert "run_figure3.sh" in report["3"][1]  # the command that makes the missing results
    assert "0 written, 8 skipped" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="unknown"):
        make(["9"])
