"""Figure 8 (Appendix A.3): which weights the teacher has -- EMA of the student, the frozen base model, the student.

    bash experiments/run_figure8.sh [--preset smoke|mini|paper] [--seeds N] [--teachers ema,base,live]
                                    [--every N] [--keep-checkpoints] [--launcher local|slurm] [--dry-run]
                                    [--sweep] [--force] [key=value ...]

One SDFT run per teacher kind and seed on Tool Use (``teacher_model_kind`` = ``ema`` | ``base`` | ``live``,
recorded in each run's ``config.yaml``; the rest is the preset's SDFT, with the recipe on ``paper``), and the base
model (step 0 of every curve). Each run keeps a checkpoint every ``--every`` optimizer steps; after training, every
checkpoint is evaluated greedily on the test split into ``<run>/curve/step<s>/eval.json`` and then deleted (unless
``--keep-checkpoints``); the final model is the run's own ``eval.json``. Until training ends every checkpoint is on
disk (student, teacher, optimizer: on the order of 90 GB each for a 7B model): choose ``--every`` to fit. A run
killed mid-way resumes: training from its last complete checkpoint, the curve from the first point without an
``eval.json``.

The x axis is the paper's: the number of generations (student rollouts) so far, ``step x prompts per step x
rollouts per prompt`` (``per_device_train_batch_size x gradient_accumulation_steps x num_generations`` of the run's
config; one training process). :func:`aggregate` reads only the result files and writes

  * ``figure8_curve.csv``: every point (teacher, seed, step, generations, accuracy, Wilson 95% interval, n);
  * ``figure8.csv`` / ``figure8.md``: per teacher kind, the final accuracy, the best accuracy on the curve and the
    drop from it to the end (instability), mean and 95% t-interval over seeds;
  * ``figure8_teacher.png`` / ``.pdf`` (:mod:`figures.teacher_weights`).

The paper prints no numbers for Figure 8 (curves only: EMA best and stable, the frozen base stable but lower, the
student unstable), so none are drawn beside ours. ``figure8.md`` gives tinker-cookbook's EMA vs frozen-teacher
ablation on the authors' code (one accuracy per run, in the *final* column; :data:`experiments.reproductions.FIGURE8`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from experiments import checkpoint_curve as C
from experiments import grid as G
from experiments import reproductions as RP
from experiments import section

EXPERIMENT = "figure8"
METHODS = ["base", "sdft"]
TEACHERS = ("ema", "base", "live")
TEACHER_TITLES = {"ema": "EMA(θ) (the paper's)", "base": "θ₀ (frozen base)", "live": "θ (current student)"}


# ------------------------------------------------------------------------------------------------ grid
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--teachers", default=",".join(TEACHERS),
                        help=f"teacher kinds to run, a comma-separated subset of {','.join(TEACHERS)} (default: all)")
    parser.add_argument("--every", type=int,
                        help="optimizer steps between evaluated checkpoints (default: the preset's, "
                             f"experiments.settings.{EXPERIMENT}.every)")
    parser.add_argument("--keep-checkpoints", action="store_true",
                        help="keep each run's checkpoints once evaluated (default: delete them; model/ stays)")


def chosen_teachers(text: str) -> list[str]:
    return G.comma_subset(text, TEACHERS, "--teachers")


def teacher_run_id(kind: str, run_name: str) -> str:
    """``ema__seed0``: the run folder of one teacher kind."""
    return f"{kind}__{run_name}"


def adjust_grid(args, specs: list[G.RunSpec]) -> list[G.RunSpec]:
    """One SDFT run per teacher kind, each saving a checkpoint every ``--every`` steps and keeping them all."""
    kinds = chosen_teachers(args.teachers)
    curve = C.curve_overrides(args.every or section.preset_setting(EXPERIMENT, args.preset, "every"))
    if any("teacher_model_kind" in s.overrides for s in specs):
        raise SystemExit("error: set the teacher kinds with --teachers, not teacher_model_kind=...")
    out = []
    for spec in specs:
        if spec.method != "sdft":
            out.append(spec)
            continue
        for kind in kinds:
            variant = G.as_variant(spec, teacher_run_id(kind, Path(spec.run_dir).name),
                                   {"teacher_model_kind": kind, **curve}, f"teacher: {kind}")
            variant.keep_evaluated_checkpoints = args.keep_checkpoints
            out.append(variant)
    return out


def describe(args, specs: list[G.RunSpec]) -> list[str]:
    every = args.every or section.preset_setting(EXPERIMENT, args.preset, "every")
    return [f"teachers: {', '.join(chosen_teachers(args.teachers))}; a curve point every {every} optimizer steps "
            f"(test split), checkpoints {'kept' if args.keep_checkpoints else 'deleted once evaluated'}"]


# ------------------------------------------------------------------------------------------------ one run
def execute(spec: G.RunSpec) -> None:
    """The base model: its test accuracy. An SDFT run: train, evaluate every kept checkpoint into the curve, delete
    the checkpoints (unless ``--keep-checkpoints``), then the run's own ``eval.json``
    (:func:`experiments.checkpoint_curve.execute_with_curve`)."""
    C.execute_with_curve(spec)


# ------------------------------------------------------------------------------------------------ results
def _teacher_kind(run, config: dict) -> str:
    kind = config.get("teacher_model_kind")
    if kind is None:
        raise SystemExit(f"{Path(run.run_dir) / 'config.yaml'}: no field 'teacher_model_kind'")
    return kind


def collect_curve(results_dir: str | Path) -> pd.DataFrame:
    """Every point of every SDFT run's curve, labelled with the run's teacher kind (``teacher``)."""
    return C.collect_curves(results_dir, _teacher_kind, "teacher")


PAPER = "no numbers printed; EMA best and stable, frozen base stable but lower, the live student unstable."


def aggregate(results_dir: str | Path) -> pd.DataFrame:
    """figure8_curve.csv, figure8.csv / .md and figure8_teacher.png / .pdf, from the result files only."""
    from figures.teacher_weights import plot_teacher_weights

    results_dir = Path(results_dir)
    table = C.aggregate_curves(results_dir, EXPERIMENT, collect_curve(results_dir), "teacher", list(TEACHERS),
                               "# Figure 8 (A.3): teacher weights -- EMA vs frozen base vs current student", PAPER,
                               lambda kind: TEACHER_TITLES.get(kind, kind), RP.FIGURE8)
    plot_teacher_weights(results_dir)
    return table


def main(argv: list[str] | None = None) -> None:
    section.main(argv, experiment=EXPERIMENT, doc=__doc__, methods=METHODS, aggregate=aggregate,
                 outputs=["figure8.md", "figure8.csv", "figure8_curve.csv", "figure8_teacher.png (and .pdf)"],
                 add_arguments=add_arguments, adjust_grid=adjust_grid, describe=describe, execute_fn=execute)


if __name__ == "__main__":
    main()
