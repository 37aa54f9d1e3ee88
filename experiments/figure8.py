"""Figure 8 (Appendix A.3): which weights the teacher has -- EMA of the student, the frozen base model, the student.

    bash experiments/run_figure8.sh [--preset smoke|mini|paper] [--seeds N] [--teachers ema,base,live]
                                    [--every N] [--keep-checkpoints] [--launcher local|slurm] [--dry-run]
                                    [--sweep] [--force] [key=value ...]

One SDFT run per teacher kind and seed on Tool Use (``teacher_model_kind`` = ``ema`` | ``base`` | ``live``,
recorded in each run's ``config.yaml``; the rest is the preset's SDFT, with the recipe on ``paper``), and the base
model (step 0 of every curve). Each run keeps a checkpoint every ``--every`` optimizer steps; after training, every
checkpoint is evaluated greedily on the test split into ``<run>/curve/step<s>/eval.json`` and then deleted (unless
``--keep-checkpoints``); the final model is the run's own ``eval.json``. A run killed mid-way resumes: training from
its last complete checkpoint, the curve from the first point without an ``eval.json``.

The x axis is the paper's: the number of generations (student rollouts) so far, ``step x prompts per step x
rollouts per prompt`` (``per_device_train_batch_size x gradient_accumulation_steps x num_generations`` of the run's
config; one training process). :func:`aggregate` reads only the result files and writes

  * ``figure8_curve.csv``: every point (teacher, seed, step, generations, accuracy, Wilson 95% interval, n);
  * ``figure8.csv`` / ``figure8.md``: per teacher kind, the final accuracy, the best accuracy on the curve and the
    drop from it to the end (instability), mean and 95% t-interval over seeds;
  * ``figure8_teacher.png`` / ``.pdf`` (:mod:`figures.teacher_weights`).

The paper prints no numbers for Figure 8 (curves only: EMA best and stable, the frozen base stable but lower, the
student unstable), so none are drawn beside ours.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from experiments import grid as G
from experiments import reporting as R
from experiments import section

EXPERIMENT = "figure8"
METHODS = ["base", "sdft"]
TASKS = {"smoke": ["embedded_tool"], "mini": ["embedded_tool"], "paper": ["tooluse"]}
TEACHERS = ("ema", "base", "live")
TEACHER_TITLES = {"ema": "EMA(θ) (the paper's)", "base": "θ₀ (frozen base)", "live": "θ (current student)"}
EVERY = {"smoke": 1, "mini": 8, "paper": 25}  # optimizer steps between evaluated checkpoints
CURVE = "curve"


# ------------------------------------------------------------------------------------------------ grid
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--teachers", default=",".join(TEACHERS),
                        help=f"teacher kinds to run, a comma-separated subset of {','.join(TEACHERS)} (default: all)")
    parser.add_argument("--every", type=int,
                        help=f"optimizer steps between evaluated checkpoints (default per preset: {EVERY})")
    parser.add_argument("--keep-checkpoints", action="store_true",
                        help="keep each run's checkpoints once evaluated (default: delete them; model/ stays)")


def chosen_teachers(text: str) -> list[str]:
    kinds = [k for k in text.split(",") if k]
    unknown = sorted(set(kinds) - set(TEACHERS))
    if unknown or not kinds:
        raise SystemExit(f"error: --teachers {text!r}: expected a comma-separated subset of {','.join(TEACHERS)}")
    return kinds


def teacher_run_id(kind: str, run_name: str) -> str:
    """``ema__seed0``: the run folder of one teacher kind."""
    return f"{kind}__{run_name}"


def adjust_grid(args, specs: list[G.RunSpec]) -> list[G.RunSpec]:
    """One SDFT run per teacher kind, each saving a checkpoint every ``--every`` steps and keeping them all."""
    kinds = chosen_teachers(args.teachers)
    every = args.every or EVERY[args.preset]
    if every < 1:
        raise SystemExit(f"error: --every must be at least 1, got {every}")
    if any("teacher_model_kind" in s.overrides for s in specs):
        raise SystemExit("error: set the teacher kinds with --teachers, not teacher_model_kind=...")
    out = []
    for spec in specs:
        if spec.method != "sdft":
            out.append(spec)
            continue
        run_dir = Path(spec.run_dir)
        for kind in kinds:
            overrides = {**spec.overrides, "teacher_model_kind": kind, "save_steps": every, "save_total_limit": None,
                         "keep_checkpoints": True, "logging_steps": 1}
            eval_args = [*spec.eval_args, *(["--keep-checkpoints"] if args.keep_checkpoints else [])]
            out.append(G.RunSpec(spec.experiment, spec.task, spec.method, spec.seed, spec.preset,
                                 str(run_dir.parent / teacher_run_id(kind, run_dir.name)), spec.recipe, overrides,
                                 dict(spec.sweep_point), eval_args, variant=f"teacher: {kind}"))
    return out


def describe(args, specs: list[G.RunSpec]) -> list[str]:
    every = args.every or EVERY[args.preset]
    return [f"teachers: {', '.join(chosen_teachers(args.teachers))}; a curve point every {every} optimizer steps "
            f"(test split), checkpoints {'kept' if args.keep_checkpoints else 'deleted once evaluated'}"]


# ------------------------------------------------------------------------------------------------ one run
def execute(spec: G.RunSpec) -> None:
    """The base model: its test accuracy. An SDFT run: train, evaluate every kept checkpoint into the curve, delete
    the checkpoints (unless ``--keep-checkpoints``, carried in ``eval_args``), then the run's own ``eval.json``."""
    from eval import evaluate
    from experiments.evaluation import evaluate_run
    from experiments.learning_curve import checkpoints
    from sdft.run_io import read_json_or_none
    from sdft.train import run_training

    keep = "--keep-checkpoints" in spec.eval_args
    eval_args = [a for a in spec.eval_args if a != "--keep-checkpoints"]
    if spec.method != "sdft":
        spec = G.RunSpec(**{**spec.__dict__, "eval_args": eval_args})
        section.execute(spec, prior=False)
        return
    cfg = spec.config()
    run_dir = Path(spec.run_dir)
    run_training(cfg)
    final = (read_json_or_none(run_dir / "manifest.json") or {}).get("global_step")
    if not isinstance(final, int):
        raise RuntimeError(f"{run_dir / 'manifest.json'}: no global_step of the completed run")
    for step, folder in checkpoints(run_dir):
        out = run_dir / CURVE / f"step{step}"
        if step < final and not (out / "eval.json").exists():
            evaluate(str(folder), task=spec.task, split="test", preset=spec.preset, seed=spec.seed,
                     template=cfg.teacher_template, data_dir=cfg.data_dir, output_dir=out)
    if not keep and (run_dir / "checkpoints").is_dir():
        shutil.rmtree(run_dir / "checkpoints")  # evaluated; model/ is the final point
    evaluate_run(spec, cfg, str(run_dir / "model"), with_validation=bool(spec.sweep_point), extra_args=eval_args,
                 prior=False)


# ------------------------------------------------------------------------------------------------ results
def generations_per_step(config: dict[str, Any], where: str | Path = "config") -> int:
    """Student rollouts per optimizer step of one training process: prompts per step x rollouts per prompt."""
    try:
        return int(config["per_device_train_batch_size"]) * int(config["gradient_accumulation_steps"]) * \
            int(config.get("num_generations") or 1)
    except KeyError as err:
        raise SystemExit(f"{where}: no field {err.args[0]!r}") from None


def _point(eval_json: Path, method: str) -> dict[str, Any]:
    """Accuracy, item count and Wilson 95% interval of one evaluation (the headline score of its variant)."""
    from eval.files import read_json
    from eval.stats import proportion_ci

    value, metric = R.primary_score(read_json(eval_json).get("evaluations", {}).get(R.eval_variant(method)))
    if value is None:
        raise SystemExit(f"{eval_json}: no percentage score of the {R.eval_variant(method)} evaluation")
    score = next(s for s in read_json(eval_json)["evaluations"][R.eval_variant(method)]["scores"]
                 if s["metric"] == metric)
    n = int(score["n"])
    ci = proportion_ci(round(value * n / 100), n)
    return {"metric": metric, "value": value, "n": n, "ci_low": 100 * ci["ci_low"], "ci_high": 100 * ci["ci_high"]}


def collect_curve(results_dir: str | Path) -> pd.DataFrame:
    """Every point of every curve: the base model at step 0 (for each teacher kind of its task and seed), each
    evaluated checkpoint, and each run's final model."""
    import yaml

    from eval.files import read_json

    results_dir = Path(results_dir)
    runs = R.collect_runs(results_dir)
    if runs.empty:
        raise SystemExit(f"no eval.json under {results_dir}: nothing to aggregate")
    base = {(r.task, r.seed): Path(r.run_dir) / "eval.json" for r in runs.itertuples() if r.method == "base"}
    rows = []
    for run in runs[runs["method"] == "sdft"].itertuples():
        run_dir = Path(run.run_dir)
        config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
        kind = config.get("teacher_model_kind")
        if kind is None:
            raise SystemExit(f"{run_dir / 'config.yaml'}: no field 'teacher_model_kind'")
        per_step = generations_per_step(config, run_dir / "config.yaml")
        final = read_json(run_dir / "manifest.json").get("global_step")
        if not isinstance(final, int):
            raise SystemExit(f"{run_dir / 'manifest.json'}: no integer field 'global_step'")
        points = [(0, base[(run.task, run.seed)], "base")] if (run.task, run.seed) in base else []
        for path in sorted((run_dir / CURVE).glob("step*/eval.json"), key=lambda p: int(p.parent.name[4:])):
            points.append((int(path.parent.name[4:]), path, "sdft"))
        points.append((final, run_dir / "eval.json", "sdft"))
        for step, path, method in points:
            rows.append({"task": run.task, "teacher": kind, "seed": run.seed, "run_id": run.run_id, "step": step,
                         "generations": step * per_step, "final": step == final, **_point(path, method)})
    return pd.DataFrame(rows)


def curve_summary(curve: pd.DataFrame) -> pd.DataFrame:
    """Per run (task, teacher, seed, run_id): the final accuracy, the best accuracy on its curve (step 0 included)
    and the drop from that best to the end (``best - final`` >= 0)."""
    rows = []
    for (task, teacher, seed, run_id), points in curve.groupby(["task", "teacher", "seed", "run_id"], sort=False):
        final = float(points.loc[points["final"], "value"].iloc[-1])
        best = float(points["value"].max())
        rows.append({"task": task, "method": teacher, "seed": seed, "run_id": run_id, "final": final, "best": best,
                     "drop": best - final, "val": None})
    return pd.DataFrame(rows)


def to_markdown(table: pd.DataFrame, curve: pd.DataFrame) -> str:
    lines = ["# Figure 8 (A.3): teacher weights -- EMA vs frozen base vs current student", "",
             "Test accuracy in % (greedy); mean ± 95% t-interval over seeds. *Best*: the highest point of the run's "
             "curve (step 0 = the base model included); *drop*: best − final (how much the run lost after its peak). "
             "Paper (no numbers printed): EMA best and stable; frozen base stable but lower; the student unstable.",
             ""]
    for task, sub in table.groupby("task", sort=False):
        lines += [f"## {R.task_title(task)} (ours: `{task}`)", "",
                  "| teacher | final | best on the curve | drop | seeds | points per run |", "|---|---|---|---|---|---|"]
        for r in sub.itertuples():
            points = curve[(curve["task"] == task) & (curve["teacher"] == r.method)].groupby("run_id").size()
            lines.append(f"| {TEACHER_TITLES.get(r.method, r.method)} | {R.fmt(r.final, r.final_ci)} | "
                         f"{R.fmt(r.best, r.best_ci)} | {R.fmt(r.drop, r.drop_ci)} | {int(r.n_seeds)} | "
                         f"{'/'.join(map(str, sorted(set(points))))} |")
        lines.append("")
    return "\n".join(lines)


def aggregate(results_dir: str | Path) -> pd.DataFrame:
    """figure8_curve.csv, figure8.csv / .md and figure8_teacher.png / .pdf, from the result files only."""
    from figures.teacher_weights import plot_teacher_weights
    from sdft.run_io import write_text_atomic

    results_dir = Path(results_dir)
    curve = collect_curve(results_dir)
    if curve.empty:
        raise SystemExit(f"no SDFT run under {results_dir}: nothing to aggregate")
    curve.to_csv(results_dir / "figure8_curve.csv", index=False)
    per_run = curve_summary(curve)
    table = R.summarize(R.select_best(per_run), ["final", "best", "drop"])
    order = {k: i for i, k in enumerate(TEACHERS)}
    table = table.sort_values(["task", "method"], key=lambda c: c.map(order) if c.name == "method" else c,
                              kind="stable").reset_index(drop=True)
    table.rename(columns={"method": "teacher", **{f"{m}_ci": f"{m}_ci95" for m in ("final", "best", "drop")}}).to_csv(
        results_dir / "figure8.csv", index=False)
    write_text_atomic(results_dir / "figure8.md", to_markdown(table, curve))
    plot_teacher_weights(results_dir)
    return table


def main(argv: list[str] | None = None) -> None:
    section.main(argv, experiment=EXPERIMENT, doc=__doc__, tasks=TASKS, methods=METHODS, aggregate=aggregate,
                 outputs=["figure8.md", "figure8.csv", "figure8_curve.csv", "figure8_teacher.png (and .pdf)"],
                 add_arguments=add_arguments, adjust_grid=adjust_grid, describe=describe, execute_fn=execute)


if __name__ == "__main__":
    main()
