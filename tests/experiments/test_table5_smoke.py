"""`bash experiments/run_table5.sh --preset smoke` end to end: the user's entry point, as CI runs it."""

import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from tests.section_scripts import run_ok, run_section

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def test_run_table5_smoke_writes_the_table_and_figure(tmp_path):
    out = tmp_path / "table5"
    # --jobs 2: two runs at a time, each its own process (the parallel launcher end to end)
    proc = run_ok("table5", "--preset", "smoke", "--jobs", "2", "--results-dir", str(out))
    for name in ("table5.md", "table5.csv", "figure4_pareto.png", "figure4_pareto.pdf"):
        assert (out / name).stat().st_size > 0, name
    table = pd.read_csv(out / "table5.csv")
    # 3 tasks x 5 methods, every cell measured by this run (no precomputed numbers)
    assert len(table) == 15 and set(table["method"]) == {"base", "sft", "reinvoke", "dft", "sdft"}
    assert table["new_task"].notna().all() and table["prior_avg"].notna().all()
    assert len(list(out.glob("*/*/*/eval.json"))) == 15
    assert "[15/15]" in proc.stdout and "table5.md" in proc.stdout  # one progress line per run, outputs printed
    assert proc.stdout.count("finished in") >= 15 and len(list(out.glob("*/*/seed0.log"))) == 15  # a log per run
    # the paper's checkpoint protocol: every trained run chose a step on validation; the final model's score beside
    import json

    for task in ("embedded_science", "embedded_tool", "embedded_medical"):
        block = json.loads((out / task / "sdft" / "seed0" / "eval.json").read_text())["checkpoint"]
        selection = json.loads((out / task / "sdft" / "seed0" / "selection.json").read_text())
        assert block["chosen_step"] == selection["chosen_step"] and block["final_step"] == 3
        assert (out / task / "sdft" / "seed0" / "final" / "eval.json").exists() == (block["chosen_step"] != 3)
    assert table["new_task_final"].notna().all() and "Final model" in (out / "table5.md").read_text()

    # A second invocation skips every run whose eval.json exists and only re-aggregates.
    proc2 = run_section("table5", "--preset", "smoke", "--results-dir", str(out))
    assert proc2.returncode == 0 and proc2.stdout.count("skipped") >= 15, proc2.stdout[-2000:]
