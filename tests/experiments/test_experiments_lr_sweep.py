"""The learning-rate sweep's table from hand-made curve files: the final step per run, the reused curves, the
selection rule (highest validation score; a tie to the preset's rate, else to the smaller one) and the errors."""

import pandas as pd
import pytest

from experiments.lr_sweep import collect, main, select


def _curves(path, rows, with_task=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = ["method", "step", "metric", "value", "ci_low", "ci_high", "n"]
    frame = pd.DataFrame(rows, columns=(["task", "seed"] if with_task else []) + cols)
    frame.to_csv(path, index=False)
    return path


def test_collect_keeps_the_last_step_of_each_run_and_adds_the_reused_rate(tmp_path):
    out = tmp_path / "sweep"
    _curves(out / "embedded_tool" / "sdft" / "lr5e-05" / "curves.csv", [
        ("base", 0, "acc", 0.0, 0, 7, 50), ("sdft", 0, "acc", 0.0, 0, 7, 50), ("sdft", 32, "acc", 20.0, 11, 33, 50)])
    _curves(out / "embedded_tool" / "sft" / "lr5e-05" / "curves.csv", [
        ("sft", 0, "acc", 0.0, 0, 7, 50), ("sft", 32, "acc", 90.0, 79, 96, 50)])
    _curves(out / "embedded_tool" / "sdft" / "lr0.0002" / "curves.csv", [
        ("sdft", 16, "acc", 70.0, 56, 81, 50), ("sdft", 32, "acc", 40.0, 27, 54, 50)])
    _curves(out / "embedded_tool" / "sft" / "lr0.0002" / "curves.csv", [("sft", 32, "acc", 100.0, 93, 100, 50)])
    reused = _curves(tmp_path / "from_runs.csv", [
        ("embedded_tool", None, "base", 0, "acc", 0.0, 0, 7, 50),
        ("embedded_tool", 1, "sdft", 16, "acc", 12.0, 6, 24, 50), ("embedded_tool", 1, "sdft", 32, "acc", 34.0, 22, 48, 50),
        ("embedded_tool", 1, "sft", 32, "acc", 100.0, 93, 100, 50)], with_task=True)
    table = collect(out, {1e-4: reused}, steps=32, seed=1)
    got = {(r.method, r.learning_rate): r.value for r in table.itertuples()}
    assert got == {("sdft", 5e-5): 20.0, ("sdft", 1e-4): 34.0, ("sdft", 2e-4): 40.0,
                   ("sft", 5e-5): 90.0, ("sft", 1e-4): 100.0, ("sft", 2e-4): 100.0}
    preset = {("embedded_tool", "sdft"): 1e-4, ("embedded_tool", "sft"): 1e-4}
    chosen = {r.method: r.selected_lr for r in select(table, preset).itertuples()}
    assert chosen == {"sdft": 2e-4, "sft": 1e-4}  # sft: a tie between 1e-4 and 2e-4 goes to the preset's rate
    preset[("embedded_tool", "sft")] = 2e-4  # the task's own rate in the preset (data_prep.tasks' preset values)
    assert {r.method: r.selected_lr for r in select(table, preset).itertuples()}["sft"] == 2e-4
    preset[("embedded_science", "sft")] = preset.pop(("embedded_tool", "sft"))  # another task's rate: not this one's
    assert {r.method: r.selected_lr for r in select(table, preset).itertuples()}["sft"] == 1e-4
    chosen = {r.method: r.selected_lr for r in select(table, {("embedded_tool", "sdft"): 1e-4, ("embedded_tool", "sft"): 5e-5}).itertuples()}
    assert chosen["sft"] == 1e-4  # a tie without the preset's rate goes to the smaller one

    with pytest.raises(SystemExit, match="ends at step 32, not 64"):
        collect(out, {}, steps=64, seed=1)
    with pytest.raises(SystemExit, match=r"seeds \[1\], the sweep's of seed 0"):
        collect(out, {1e-4: reused}, steps=32, seed=0)
    with pytest.raises(SystemExit, match="keep one"):
        collect(out, {2e-4: reused}, steps=32, seed=1)


def test_aggregate_only_writes_the_table_with_the_selection_in_bold(tmp_path):
    out = tmp_path / "sweep"
    for lr, value in (("5e-05", 10.0), ("0.0002", 30.0)):
        _curves(out / "embedded_science" / "sdft" / f"lr{lr}" / "curves.csv", [("sdft", 32, "acc", value, 1, 40, 50)])
    main(["--aggregate-only", "--output", str(out), "--methods", "sdft", "--steps", "32"])
    text = (out / "sweep.md").read_text()
    assert "| embedded_science | sdft | acc | 10.0 [1.0, 40.0] (50) | **30.0 [1.0, 40.0] (50)** | 0.0002 |" in text
    assert "embedded_science/sdft 0.0001" in text  # the mini preset's rate for that task, named in the title
    assert len(pd.read_csv(out / "sweep.csv")) == 2
