"""Figure 6 (Section 4): is on-policy learning needed? SDFT vs offline distillation vs SFT from the teacher.

    bash experiments/run_figure6.sh [--preset smoke|mini|paper] [--seeds N] [--methods a,b] [--every N]
                                    [--keep-checkpoints] [--launcher local|slurm] [--dry-run] [--force]
                                    [key=value ...]

On Tool Use, three ways of learning from the same teacher (the initial model with the demonstration in context, the
preset's SDFT teacher template), one run per method and seed, plus the base model (step 0 of every curve):

  * ``sdft``: on-policy -- the student's own rollouts, the per-token divergence to the (EMA) teacher on them;
  * ``offline_distill``: the same divergence, on teacher samples drawn once before training (frozen teacher);
  * ``sft_from_teacher``: SFT on those cached teacher samples.

(``sdft.baselines.offline``.) Each run keeps a checkpoint every ``--every`` optimizer steps, evaluated greedily on
the test split after training and then deleted (``experiments.checkpoint_curve``); the x axis is the number of
generations the run has trained on: ``step x prompts per step x samples per prompt`` -- the student's rollouts for
SDFT, the cached teacher samples for the offline methods (one per training row). The paper does not define its x
axis further. On ``paper``, SDFT uses its Tool Use recipe; the offline methods have no recipe of the paper (it
gives no hyperparameters for them) and train with the ``paper`` preset's values.

:func:`aggregate` reads only the result files and writes ``figure6_curve.csv`` (every point, Wilson intervals),
``figure6.md`` / ``.csv`` (per method: final accuracy, best on the curve, drop from best to final, mean and 95%
t-interval over seeds) and ``figure6_onpolicy.png`` / ``.pdf`` (:mod:`figures.onpolicy`). The paper prints curves
only (y from 35 to 70: neither offline method matches on-policy SDFT; offline distillation improves over SFT), so
none are drawn beside ours.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from experiments import checkpoint_curve as C
from experiments import grid as G
from experiments import reporting as R
from experiments import section

EXPERIMENT = "figure6"
METHODS = ["base", "sdft", "offline_distill", "sft_from_teacher"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--every", type=int,
                        help="optimizer steps between evaluated checkpoints (default: the preset's, "
                             f"experiments.settings.{EXPERIMENT}.every)")
    parser.add_argument("--keep-checkpoints", action="store_true",
                        help="keep each run's checkpoints once evaluated (default: delete them; model/ stays)")


def adjust_grid(args, specs: list[G.RunSpec]) -> list[G.RunSpec]:
    """Every trained run keeps a checkpoint every ``--every`` steps (the base model is evaluated once)."""
    curve = C.curve_overrides(args.every or section.preset_setting(EXPERIMENT, args.preset, "every"))
    for spec in specs:
        if G.trains(spec.method):
            spec.overrides = {**spec.overrides, **curve}
            spec.keep_evaluated_checkpoints = args.keep_checkpoints
    return specs


def describe(args, specs: list[G.RunSpec]) -> list[str]:
    every = args.every or section.preset_setting(EXPERIMENT, args.preset, "every")
    return [f"a curve point every {every} optimizer steps (test split), checkpoints "
            f"{'kept' if args.keep_checkpoints else 'deleted once evaluated'}"]


def execute(spec: G.RunSpec) -> None:
    """The base model: its test accuracy; a trained method: train, its curve, its ``eval.json``."""
    C.execute_with_curve(spec)


def collect_curve(results_dir: str | Path) -> pd.DataFrame:
    """Every point of every trained run's curve, labelled with its method."""
    return C.collect_curves(results_dir, lambda run, config: run.method, "method")


PAPER = "no numbers printed; neither offline method matches on-policy SDFT, offline distillation improves over SFT."


def aggregate(results_dir: str | Path) -> pd.DataFrame:
    """figure6_curve.csv, figure6.csv / .md and figure6_onpolicy.png / .pdf, from the result files only."""
    from figures.onpolicy import plot_onpolicy

    results_dir = Path(results_dir)
    table = C.aggregate_curves(results_dir, EXPERIMENT, collect_curve(results_dir), "method", METHODS,
                               "# Figure 6: on-policy SDFT vs offline distillation vs SFT from the teacher", PAPER,
                               R.method_title)
    plot_onpolicy(results_dir)
    return table


def main(argv: list[str] | None = None) -> None:
    section.main(argv, experiment=EXPERIMENT, doc=__doc__, methods=METHODS, aggregate=aggregate,
                 outputs=["figure6.md", "figure6.csv", "figure6_curve.csv", "figure6_onpolicy.png (and .pdf)"],
                 add_arguments=add_arguments, adjust_grid=adjust_grid, describe=describe, execute_fn=execute)


if __name__ == "__main__":
    main()
