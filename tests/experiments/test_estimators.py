"""Appendix A.1 (experiments.estimators): the gradient-norm statistic by hand, the rows' configs, the paper grid, and
``--preset smoke`` end to end."""

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from tests.section_scripts import paper_dry_run, section_ok

ROOT = Path(__file__).resolve().parents[2]


def test_grad_norm_stats_equal_a_hand_computation_on_a_hand_written_log():
    from experiments.estimators import grad_norm_stats

    log = [{"step": 1, "grad_norm": 1.0, "loss": 0.5},
           {"step": 2, "grad_norm": 3.0},
           {"step": 2, "grad_norm": 2.0},  # the run resumed before step 2: the repeat counts, once
           {"step": 3, "grad_norm": "nan"},  # a non-finite norm, as metrics.jsonl writes it
           {"step": 4, "grad_norm": 5.0},
           {"step": 4, "train_runtime": 1.2, "train_loss": 0.3}]  # the end-of-training line: no grad_norm
    got = grad_norm_stats(log)
    # by hand: values 1, 2, 5; mean 8/3; sample variance ((5/3)^2 + (2/3)^2 + (7/3)^2) / 2 = (78/9) / 2 = 13/3
    assert got["n_steps"] == 3 and got["n_nonfinite"] == 1
    assert got["mean"] == pytest.approx(8 / 3) and got["var"] == pytest.approx(13 / 3)
    one = grad_norm_stats([{"step": 1, "grad_norm": 0.7}])
    assert one["mean"] == pytest.approx(0.7) and math.isnan(one["var"])
    assert math.isnan(grad_norm_stats([])["mean"])


def test_row_of_reads_the_four_recorded_values_and_names_the_file_when_no_row_fits():
    from experiments.estimators import ROWS, row_of

    for name, values in ROWS.items():
        assert row_of({**values, "learning_rate": 1e-5}) == name
    with pytest.raises(ValueError, match="runs/x/config.yaml.*'estimator': 'token'.*'divergence': 'forward'"):
        row_of({**ROWS["token"], "divergence": "forward"}, "runs/x/config.yaml")


def test_adjust_grid_gives_each_row_its_keys_and_refuses_them_as_overrides():
    from argparse import Namespace

    from experiments import grid as G
    from experiments.estimators import ROWS, adjust_grid

    spec = G.RunSpec("estimators", "embedded_tool", "sdft", 0, "smoke", "/r/embedded_tool/sdft/seed0")
    specs = adjust_grid(Namespace(rows="token,rollouts4"), [spec])
    assert [Path(s.run_dir).name for s in specs] == ["token__seed0", "rollouts4__seed0"]
    assert specs[0].overrides == {**ROWS["token"], "logging_steps": 1}
    assert specs[0].config().divergence == "reverse"  # the token estimator's config validates (reverse KL only)
    assert specs[1].config().num_generations == 4
    with pytest.raises(SystemExit, match="estimator"):
        adjust_grid(Namespace(rows="token"), [G.RunSpec(**{**spec.__dict__, "overrides": {"estimator": "token"}})])
    with pytest.raises(SystemExit, match="--rows"):
        adjust_grid(Namespace(rows="analytic,nope"), [spec])


def test_paper_dry_run_prints_six_rows_times_three_seeds():
    proc = paper_dry_run("estimators")
    assert "[estimators] preset paper: 18 runs (sdft: 18)" in proc.stdout
    assert "tooluse/sdft (row: rao_blackwell) seed 2 -> /nonexistent/estimators/tooluse/sdft/rao_blackwell__seed2" \
        in proc.stdout


@pytest.mark.slow
def test_run_estimators_smoke_writes_tables_that_match_the_run_files(tmp_path):
    import yaml

    from experiments.estimators import ROW_KEYS, ROWS, aggregate, grad_norm_stats
    from experiments.reporting import primary_score
    from sdft.run_io import read_metrics

    out = tmp_path / "estimators"
    section_ok("estimators", "--preset", "smoke", "--jobs", "2", "--results-dir", str(out))
    for name in ("estimators.md", "estimators.csv", "estimators_runs.csv", "estimators_gradnorm.csv",
                 "estimators.png", "estimators.pdf"):
        assert (out / name).stat().st_size > 0, name
    runs = pd.read_csv(out / "estimators_runs.csv")
    assert runs["row"].tolist() == list(ROWS)  # one run per row, in the rows' order
    for r in runs.itertuples():
        run_dir = Path(r.run_dir)
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert {k: config[k] for k in ROW_KEYS} == ROWS[r.row]  # each run trained with its row's values
        evaluation = json.loads((run_dir / "eval.json").read_text())["evaluations"]["student"]
        assert r.new_task == pytest.approx(primary_score(evaluation)[0])  # the table's accuracy is the run's
        stats = grad_norm_stats(read_metrics(run_dir))
        assert r.n_steps == stats["n_steps"] == config["max_steps"]  # a norm for every optimizer step
        assert (r.grad_norm_mean, r.grad_norm_var) == (pytest.approx(stats["mean"]), pytest.approx(stats["var"]))
    steps = pd.read_csv(out / "estimators_gradnorm.csv")
    by_run = steps.groupby("row")["grad_norm"].var(ddof=1)  # the per-step file gives the same variance
    assert by_run.loc[runs["row"]].to_numpy() == pytest.approx(runs["grad_norm_var"].to_numpy())
    table = pd.read_csv(out / "estimators.csv")
    assert table["row"].tolist() == list(ROWS) and (table["n_seeds"] == 1).all()
    (out / "estimators.csv").unlink()  # rebuilt from the result files alone
    aggregate(out)
    assert pd.read_csv(out / "estimators.csv").equals(table)
