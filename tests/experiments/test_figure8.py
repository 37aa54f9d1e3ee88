"""Figure 8 (experiments.figure8): the teacher-kind grid, the curve bookkeeping on hand-made rows, the paper grid, and
``--preset smoke`` end to end."""

import json
from argparse import Namespace
from pathlib import Path

import pandas as pd
import pytest

from tests.section_scripts import paper_dry_run, section_ok

ROOT = Path(__file__).resolve().parents[2]


def test_adjust_grid_runs_each_teacher_kind_with_kept_checkpoints_and_refuses_the_key_as_an_override():
    from experiments import grid as G
    from experiments.figure8 import adjust_grid

    base = G.RunSpec("figure8", "embedded_tool", "base", 0, "smoke", "/r/embedded_tool/base/seed0")
    sdft = G.RunSpec("figure8", "embedded_tool", "sdft", 0, "smoke", "/r/embedded_tool/sdft/seed0")
    args = Namespace(teachers="ema,live", every=2, keep_checkpoints=False, preset="smoke")
    specs = adjust_grid(args, [base, sdft])
    assert [s.method for s in specs] == ["base", "sdft", "sdft"] and specs[0] is base
    assert [Path(s.run_dir).name for s in specs[1:]] == ["ema__seed0", "live__seed0"]
    cfg = specs[2].config()
    assert (cfg.teacher_model_kind, cfg.save_steps, cfg.save_total_limit, cfg.keep_checkpoints) == ("live", 2, None,
                                                                                                    True)
    with pytest.raises(SystemExit, match="--teachers"):
        adjust_grid(args, [G.RunSpec(**{**sdft.__dict__, "overrides": {"teacher_model_kind": "base"}})])
    with pytest.raises(SystemExit, match="--teachers"):
        adjust_grid(Namespace(**{**vars(args), "teachers": "ema,frozen"}), [sdft])


def test_generations_and_the_drop_after_the_peak_by_hand():
    from experiments.checkpoint_curve import curve_summary, generations_per_step

    config = {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 8, "num_generations": 2}
    assert generations_per_step(config) == 64  # 4 x 8 prompts per step, 2 rollouts each
    with pytest.raises(SystemExit, match="cfg.yaml: no field 'gradient_accumulation_steps'"):
        generations_per_step({"per_device_train_batch_size": 4}, "cfg.yaml")
    curve = pd.DataFrame({"task": "t", "teacher": "live", "seed": 0, "run_id": "live__seed0",
                          "step": [0, 10, 20, 30], "value": [40.0, 65.0, 50.0, 45.0],
                          "final": [False, False, False, True]})
    row = curve_summary(curve, "teacher").iloc[0]
    assert (row["final"], row["best"], row["drop"]) == (45.0, 65.0, 20.0)  # peak 65 at step 10, then down to 45


def test_paper_dry_run_prints_three_teacher_kinds_times_three_seeds_and_the_base():
    proc = paper_dry_run("figure8")
    assert "[figure8] preset paper: 12 runs (base: 3, sdft: 9)" in proc.stdout
    assert "a curve point every 25 optimizer steps" in proc.stdout
    assert "tooluse/sdft (teacher: live) seed 2 -> /nonexistent/figure8/tooluse/sdft/live__seed2" in proc.stdout


@pytest.mark.slow
def test_run_figure8_smoke_writes_a_curve_per_teacher_kind_from_the_run_files(tmp_path):
    import yaml

    from experiments.figure8 import TEACHERS, aggregate
    from experiments.reporting import primary_score

    out = tmp_path / "figure8"
    section_ok("figure8", "--preset", "smoke", "--jobs", "2", "--results-dir", str(out))
    for name in ("figure8.md", "figure8.csv", "figure8_curve.csv", "figure8_teacher.png", "figure8_teacher.pdf"):
        assert (out / name).stat().st_size > 0, name
    curve = pd.read_csv(out / "figure8_curve.csv")
    assert set(curve["teacher"]) == set(TEACHERS)
    base_value = primary_score(json.loads((out / "embedded_tool" / "base" / "seed0" / "eval.json").read_text())
                               ["evaluations"]["student"])[0]
    for kind in TEACHERS:
        run_dir = out / "embedded_tool" / "sdft" / f"{kind}__seed0"
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert config["teacher_model_kind"] == kind  # each run trained with its teacher kind
        points = curve[curve["teacher"] == kind].sort_values("step")
        # smoke: 3 steps, a checkpoint every step: the base model, steps 1 and 2 from checkpoints, 3 = the final model
        assert points["step"].tolist() == [0, 1, 2, 3] and points["final"].tolist() == [False, False, False, True]
        assert points["generations"].tolist() == [s * config["per_device_train_batch_size"] *
                                                  config["gradient_accumulation_steps"] for s in range(4)]
        assert points["value"].iloc[0] == pytest.approx(base_value)
        final = primary_score(json.loads((run_dir / "eval.json").read_text())["evaluations"]["student"])[0]
        assert points["value"].iloc[-1] == pytest.approx(final)
        for step in (1, 2):  # every curve point is an evaluation file of the run
            ev = json.loads((run_dir / "curve" / f"step{step}" / "eval.json").read_text())["evaluations"]["student"]
            assert points.loc[points["step"] == step, "value"].iloc[0] == pytest.approx(primary_score(ev)[0])
        assert not (run_dir / "checkpoints").exists()  # evaluated, then deleted; model/ stays
        assert (run_dir / "model").is_dir()
    table = pd.read_csv(out / "figure8.csv")
    assert table["teacher"].tolist() == list(TEACHERS) and (table["drop"] >= 0).all()
    (out / "figure8_curve.csv").unlink()  # rebuilt from the result files alone
    aggregate(out)
    assert pd.read_csv(out / "figure8_curve.csv").equals(curve)


def test_markdown_gives_tinkers_ema_and_frozen_teacher_scores_after_ours_on_tool_use():
    from experiments import reproductions as RP
    from experiments.checkpoint_curve import curve_markdown, curve_table
    from experiments.figure8 import TEACHER_TITLES, TEACHERS

    curve = pd.DataFrame({"task": "embedded_tool", "teacher": ["ema", "ema", "base", "base"], "seed": 0,
                          "run_id": ["ema__seed0", "ema__seed0", "base__seed0", "base__seed0"], "step": [0, 8, 0, 8],
                          "value": [0.0, 60.0, 0.0, 30.0], "final": [False, True, False, True]})
    table = curve_table(curve, "teacher", list(TEACHERS))
    args = ("# F8", "no numbers printed.", table, curve, "teacher", TEACHER_TITLES.get)
    plain = curve_markdown(*args).splitlines()
    lines = curve_markdown(*args, RP.FIGURE8).splitlines()
    ours = lines.index("| θ₀ (frozen base) | 30.0 | 30.0 | 0.0 | 1 | 2 |")
    assert lines[ours + 1:ours + 5] == [
        "| *repro (tinker-cookbook ablation): EMA(θ) (the paper's)* | *68.0* |  |  | | |",
        "| *repro (tinker-cookbook ablation): θ₀ (frozen base)* | *67.0* |  |  | | |",
        "| *repro (tinker-cookbook ablation, top-20): EMA(θ) (the paper's)* | *68.0* |  |  | | |",
        "| *repro (tinker-cookbook ablation, top-20): θ₀ (frozen base)* | *69.1* |  |  | | |"]
    assert lines[:ours + 1] == plain[:ours + 1] and "repro" not in "\n".join(plain)


def test_a_curve_point_is_a_checkpoint_on_the_interval_before_the_last_step_not_an_interrupted_runs():
    from experiments.checkpoint_curve import is_curve_point

    kept = [8, 16, 24, 25, 32]  # 25: the checkpoint a SIGTERM left, resumed from
    assert [s for s in kept if is_curve_point(s, every=8, final=32)] == [8, 16, 24]
    assert [s for s in [1, 2, 3] if is_curve_point(s, every=1, final=3)] == [1, 2]
