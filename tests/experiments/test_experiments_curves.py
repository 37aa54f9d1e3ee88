"""The measurement scripts of the mini preset's design: learning curves and the teacher view (smoke scale)."""

import json

import pandas as pd
import pytest


@pytest.mark.slow
def test_learning_curve_has_the_base_point_and_every_checkpoint(tmp_path):
    from experiments.learning_curve import main

    out = main(["--preset", "smoke", "--methods", "sft", "--steps", "2", "--every", "1", "--n", "2",
                "--output", str(tmp_path / "curves")])
    table = pd.read_csv(out / "curves.csv")
    assert table["step"].tolist() == [0, 1, 2] and set(table["method"]) == {"sft"}
    assert (table["n"] == 2).all() and (table["ci_low"] <= table["value"]).all()
    assert (table["value"] <= table["ci_high"]).all()
    assert (out / "curves.png").stat().st_size > 0 and "| sft | 2 |" in (out / "curves.md").read_text()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["steps"] == 2 and manifest["wall_clock_s"] > 0
    # the checkpoints were kept, and a rerun reuses the run instead of training again
    assert sorted(p.name for p in (out / "runs" / "sft" / "checkpoints").glob("checkpoint-*")) == \
        ["checkpoint-1", "checkpoint-2"]

    # --from-runs evaluates the same kept checkpoints without training: the same numbers, the base as step 0
    again = main(["--from-runs", str(out / "runs" / "sft"), "--n", "2", "--output", str(tmp_path / "again")])
    redone = pd.read_csv(again / "curves.csv")
    assert redone["method"].tolist() == ["base", "sft", "sft"] and redone["step"].tolist() == [0, 1, 2]
    assert redone["seed"].isna().tolist() == [True, False, False] and (redone["task"] == "embedded_tool").all()
    assert redone["value"].tolist() == pytest.approx(table["value"].tolist())
    assert (again / "curves.png").exists() and "| base | base | 0 |" in (again / "curves.md").read_text()


def test_learning_curve_from_runs_names_a_folder_that_is_not_a_run(tmp_path):
    from experiments.learning_curve import main

    with pytest.raises(SystemExit, match=f"{tmp_path}: no config.yaml"):
        main(["--from-runs", str(tmp_path), "--output", str(tmp_path / "out")])


def test_learning_curve_refuses_multi_stage_methods():
    from experiments.learning_curve import main

    with pytest.raises(SystemExit, match="reinvoke"):
        main(["--methods", "sdft,reinvoke"])


@pytest.mark.slow
def test_teacher_view_rows_are_the_student_then_each_template(tmp_path):
    from experiments.teacher_view import main

    out = main(["--preset", "smoke", "--tasks", "embedded_tool", "--n", "2", "--templates", "same_format", "paper",
                "--output", str(tmp_path / "tv")])
    table = pd.read_csv(out / "teacher_view.csv")
    assert table["prompt"].tolist() == ["student", "teacher (same_format)", "teacher (paper)"]
    student = table["accuracy"][0]
    assert table["gap"][1:].tolist() == pytest.approx((table["accuracy"][1:] - student).tolist())
    assert (out / "predictions" / "embedded_tool_teacher_paper.jsonl").exists()
