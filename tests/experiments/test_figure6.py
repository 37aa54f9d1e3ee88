"""Figure 6 (experiments.figure6): the paper grid, and ``--preset smoke`` end to end (curves of SDFT, offline
distillation and SFT from the teacher against the run files)."""

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.section_scripts import paper_dry_run, run_ok

ROOT = Path(__file__).resolve().parents[2]
TRAINED = ["sdft", "offline_distill", "sft_from_teacher"]


def test_paper_dry_run_prints_the_three_methods_times_three_seeds_and_the_base():
    proc = paper_dry_run("figure6")
    assert ("[figure6] preset paper: 12 runs (base: 3, sdft: 3, offline_distill: 3, sft_from_teacher: 3)"
            in proc.stdout)


@pytest.mark.slow
def test_run_figure6_smoke_writes_a_curve_per_method_from_the_run_files(tmp_path):
    import yaml

    from experiments.figure6 import aggregate
    from experiments.reporting import primary_score

    out = tmp_path / "figure6"
    run_ok("figure6", "--preset", "smoke", "--results-dir", str(out))
    for name in ("figure6.md", "figure6.csv", "figure6_curve.csv", "figure6_onpolicy.png", "figure6_onpolicy.pdf"):
        assert (out / name).stat().st_size > 0, name
    curve = pd.read_csv(out / "figure6_curve.csv")
    assert sorted(set(curve["method"])) == sorted(TRAINED)
    for method in TRAINED:
        run_dir = out / "embedded_tool" / method / "seed0"
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        points = curve[curve["method"] == method].sort_values("step")
        assert points["step"].tolist() == [0, 1, 2, 3]  # base, two checkpoints, the final model (smoke: 3 steps)
        assert points["generations"].tolist() == [s * config["per_device_train_batch_size"] *
                                                  config["gradient_accumulation_steps"] for s in range(4)]
        final = primary_score(json.loads((run_dir / "eval.json").read_text())["evaluations"]["student"])[0]
        assert points["value"].iloc[-1] == pytest.approx(final)
        assert not (run_dir / "checkpoints").exists()
    # the offline methods trained on cached teacher samples (drawn once, before training)
    for method in ("offline_distill", "sft_from_teacher"):
        assert (out / "embedded_tool" / method / "seed0" / "teacher_samples.jsonl").stat().st_size > 0
    table = pd.read_csv(out / "figure6.csv")
    assert table["method"].tolist() == TRAINED
    (out / "figure6.csv").unlink()  # rebuilt from the result files alone
    aggregate(out)
    assert pd.read_csv(out / "figure6.csv").equals(table)
