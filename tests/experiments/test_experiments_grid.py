"""The experiment grid: sizes of the paper sweep, run ids, the SLURM dry run, the recipes."""

import json
import sys
from pathlib import Path

import pytest

from sdft.config import build_config, load_recipe

RECIPES = sorted((Path(__file__).resolve().parents[2] / "experiments" / "recipes").rglob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_every_recipe_builds_a_paper_config(recipe):
    values, sweep = load_recipe(recipe)
    cfg = build_config("paper", recipe=recipe)
    assert cfg.method == values["method"] and cfg.model == values["model"]  # each recipe names its model
    # Tables 3-4: CPT's learning rates are a decade lower; the knowledge epochs are longer
    lrs = [1e-6, 5e-6, 1e-5] if cfg.method == "cpt" else [5e-6, 1e-5, 5e-5]
    assert cfg.learning_rate in sweep["learning_rate"] == lrs
    epochs = {"cpt": [1, 2, 4, 8], "sdft": [1, 2, 4]}.get(cfg.method, [1, 2]) if cfg.task == "knowledge" else [1, 2]
    assert sweep["num_train_epochs"] == epochs
    if cfg.task == "knowledge" and cfg.method == "sdft":
        assert cfg.teacher_context == "text+answer" and cfg.max_completion_length == 1024
    assert cfg.warmup_steps == 10 and cfg.max_grad_norm == 1.0 and cfg.weight_decay == 0.0
    if cfg.method == "sdft":
        assert sweep["teacher_update_rate"] == [0.01, 0.02, 0.05] and cfg.divergence == "forward"


@pytest.mark.slow
def test_slurm_dry_run_prints_the_array_and_grid_size(tmp_path, run_module):
    out = run_module("experiments.table5", ["--preset", "paper", "--sweep", "--launcher", "slurm", "--dry-run",
                                            "--results-dir", str(tmp_path)], timeout=120)
    assert out.returncode == 0, out.stderr
    # Table 3: lr 3 x epochs 2 x batch 3 (x EMA 3 for SDFT), 3 tasks, 3 seeds; Base is evaluated once per task/seed
    per_task_seed = {"sft": 18, "reinvoke": 18, "dft": 18, "sdft": 54, "base": 1}
    expected = {m: n * 3 * 3 for m, n in per_task_seed.items()}
    total = sum(expected.values())
    assert f"#SBATCH --array=0-{total - 1}" in out.stdout
    for method, n in expected.items():
        assert f"{method}: {n}" in out.stdout
    assert (tmp_path / "grid.json").exists() and (tmp_path / "table5.sbatch").exists()
    assert "experiments.run_one --grid" in out.stdout


def test_run_parallel_reports_a_failed_run_with_its_log_and_runs_the_others(tmp_path, capsys):
    """A run that fails (here: its experiment module does not exist) is named with its log; the others still run."""
    from experiments.grid import RunSpec, run_log, run_parallel

    specs = [RunSpec(experiment=name, task="embedded_tool", method="base", seed=0, preset="smoke",
                     run_dir=str(tmp_path / name)) for name in ("no_such_section_a", "no_such_section_b")]
    with pytest.raises(RuntimeError, match="2 of 2 runs failed: .*no_such_section"):
        run_parallel(specs, tmp_path / "grid.json", jobs=2)
    out = capsys.readouterr().out
    assert out.count("FAILED") == 2 and str(run_log(specs[0])) in out
    for spec in specs:  # each process wrote its own log, beside its run directory, which holds the error
        assert run_log(spec).parent == Path(spec.run_dir).parent
        assert "no_such_section" in run_log(spec).read_text()
    assert len(json.loads((tmp_path / "grid.json").read_text())) == 2


def test_progress_lines_of_runs_ending_and_starting_at_once_stay_whole_lines(tmp_path, monkeypatch):
    """The launcher prints from its waiting thread and from each starting thread: every progress line is whole, on
    its own line. (A stdout that lets other threads run inside each write makes two ``print`` calls, each a write of
    the text and one of the newline, join two lines and leave an empty one.)"""
    import re
    import time

    from experiments.grid import RunSpec, run_parallel

    class SlowOut:
        def __init__(self):
            self.parts = []

        def write(self, text):
            time.sleep(0.002)  # another thread runs here
            self.parts.append(text)
            return len(text)

        def flush(self):
            pass

    out = SlowOut()
    monkeypatch.setattr(sys, "stdout", out)
    specs = [RunSpec(experiment=f"no_such_section_{i}", task="embedded_tool", method="base", seed=0, preset="smoke",
                     run_dir=str(tmp_path / str(i))) for i in range(8)]
    with pytest.raises(RuntimeError, match="8 of 8 runs failed"):
        run_parallel(specs, tmp_path / "grid.json", jobs=4)
    lines = "".join(out.parts).splitlines()
    line = re.compile(r"\[\d/8\] \S+ seed 0: (running \(.*\)|FAILED \(exit \d+; see .*\)) \(\d+s elapsed\)")
    assert [x for x in lines if not line.fullmatch(x)] == []
    assert len(lines) == 16  # a start and an end per run


def test_the_local_queue_starts_the_longest_runs_first(tmp_path):
    """Two epochs of SDFT (rollouts) before one of SDFT, before SFT, before Base (which does not train)."""
    from experiments.grid import RunSpec, expected_cost

    def spec(method, task="embedded_tool", **overrides):
        return RunSpec(experiment="table5", task=task, method=method, seed=0, preset="mini",
                       run_dir=str(tmp_path / method), overrides=overrides)

    two_epochs, one_epoch, sft, base = (spec("sdft", num_train_epochs=2), spec("sdft"), spec("sft"), spec("base"))
    costs = [expected_cost(s) for s in (two_epochs, one_epoch, sft, base)]
    assert costs == sorted(costs, reverse=True) and len(set(costs)) == 4 and costs[-1] == 0
    assert expected_cost(spec("sft", max_steps=5)) == 5  # max_steps counts, as it does in training


def test_sdft_num_threads_sets_the_thread_count_of_an_evaluated_only_run_too(tmp_path, monkeypatch):
    """The committed ``mini`` runs computed with one thread; ``SDFT_NUM_THREADS=1`` reproduces that for every run of a
    section, Base (no training) included."""
    import torch

    from experiments.grid import RunSpec
    from experiments.section import execute

    before = torch.get_num_threads()
    asked = before + 1
    monkeypatch.setenv("SDFT_NUM_THREADS", str(asked))
    try:
        execute(RunSpec("table5", "embedded_tool", "base", 0, "smoke", str(tmp_path / "base" / "seed0"),
                        eval_options={"n": 2, "max_new_tokens": 4, "prior_suite": "none"}), prior=False)
        assert torch.get_num_threads() == asked
    finally:
        torch.set_num_threads(before)
    assert (tmp_path / "base" / "seed0" / "eval.json").exists()
