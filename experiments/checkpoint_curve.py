"""Accuracy curves of grid runs from their checkpoints, shared by Figure 8 (teacher weights) and Figure 6 (on- vs
off-policy): evaluate each kept checkpoint after training, then read the points back from the result files.

A run's points: the base model at step 0 (the grid's ``base`` run of the same task and seed), every checkpoint,
evaluated greedily on the test split into ``<run>/curve/step<s>/eval.json``, and the final model, the run's own
``eval.json`` at the run's last step (``manifest.json``'s ``global_step``). The x axis is the number of generations:
``step x per_device_train_batch_size x gradient_accumulation_steps x num_generations`` of the run's config (one
training process) -- the rollouts an on-policy run has sampled, the cached teacher samples an offline run has
trained on (one per training row).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd

from eval.stats import proportion_ci
from experiments import grid as G
from experiments import reporting as R
from experiments import reproductions as RP
from experiments import section
from experiments.evaluation import evaluate_model, evaluate_run
from experiments.learning_curve import checkpoints
from sdft.run_io import read_json, read_json_or_none, read_yaml, write_text_atomic

CURVE = "curve"


def curve_overrides(every: int) -> dict[str, Any]:
    """Config values that make a run keep a checkpoint every ``every`` optimizer steps (and log every step)."""
    if every < 1:
        raise SystemExit(f"error: --every must be at least 1, got {every}")
    return {"save_steps": every, "save_total_limit": None, "keep_checkpoints": True, "logging_steps": 1}


def is_curve_point(step: int, every: int, final: int) -> bool:
    """Whether a kept checkpoint is a point of the curve: a multiple of the interval before the last step (the
    last is the run's own ``eval.json``). A checkpoint off the interval is where an interrupted run stopped and
    resumed (``sdft.interrupts``), not a point."""
    return step < final and step % every == 0


def execute_with_curve(spec: G.RunSpec) -> None:
    """An untrained method: its test accuracy (no prior suite). A trained one: train, evaluate every checkpoint
    of the curve's interval before the last step (:func:`is_curve_point`) into the curve (a point with an
    ``eval.json`` is not evaluated again), delete the checkpoints unless the spec keeps them
    (``RunSpec.keep_evaluated_checkpoints``), then the run's own ``eval.json``."""
    from sdft.train import run_training

    if not G.trains(spec.method):
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
        if is_curve_point(step, cfg.save_steps, final) and not (out / "eval.json").exists():
            evaluate_model(str(folder), spec.task, out, split="test", preset=spec.preset, seed=spec.seed,
                           template=getattr(cfg, "teacher_template", None), data_dir=cfg.data_dir)
    if not spec.keep_evaluated_checkpoints and (run_dir / "checkpoints").is_dir():
        shutil.rmtree(run_dir / "checkpoints")  # evaluated; model/ is the final point
    evaluate_run(spec, cfg, str(run_dir / "model"), with_validation=bool(spec.sweep_point), prior=False)


def generations_per_step(config: dict[str, Any], where: str | Path = "config") -> int:
    """Generations per optimizer step of one training process: prompts per step x samples per prompt."""
    try:
        return int(config["per_device_train_batch_size"]) * int(config["gradient_accumulation_steps"]) * \
            int(config.get("num_generations") or 1)
    except KeyError as err:
        raise SystemExit(f"{where}: no field {err.args[0]!r}") from None


def point(eval_json: Path, method: str) -> dict[str, Any]:
    """Accuracy, item count and Wilson 95% interval of one evaluation (the headline score of the method's
    variant)."""
    variant = R.eval_variant(method)
    result = read_json(eval_json)
    evaluation = result.get("evaluations", {}).get(variant)
    value, metric = R.primary_score(evaluation)
    if value is None:
        raise SystemExit(f"{eval_json}: no percentage score of the {variant} evaluation")
    n = int(next(s for s in evaluation["scores"] if s["metric"] == metric)["n"])
    ci = proportion_ci(round(value * n / 100), n)
    collapsed = R.checkpoint_facts(result, Path(eval_json).parent, variant, value)["collapsed"]
    return {"metric": metric, "value": value, "n": n, "ci_low": 100 * ci["ci_low"], "ci_high": 100 * ci["ci_high"],
            "collapsed": collapsed}


def collect_curves(results_dir: str | Path, label: Callable[[Any, dict], str], label_column: str) -> pd.DataFrame:
    """Every point of every trained run's curve, one row each: task, ``label_column`` (``label(run, config)``, e.g.
    the teacher kind or the method), seed, run_id, step, generations, final, metric, value, n, ci_low, ci_high."""
    results_dir = Path(results_dir)
    runs = R.collect_runs(results_dir)
    if runs.empty:
        raise SystemExit(f"no eval.json under {results_dir}: nothing to aggregate")
    base = {(r.task, r.seed): Path(r.run_dir) / "eval.json" for r in runs.itertuples() if r.method == "base"}
    rows = []
    for run in runs[runs["method"] != "base"].itertuples():
        run_dir = Path(run.run_dir)
        config_path = run_dir / "config.yaml"
        if not config_path.exists():
            raise SystemExit(f"{config_path}: missing (every trained run records its config)")
        config = read_yaml(config_path) or {}
        per_step = generations_per_step(config, config_path)
        final = read_json(run_dir / "manifest.json").get("global_step")
        if not isinstance(final, int):
            raise SystemExit(f"{run_dir / 'manifest.json'}: no integer field 'global_step'")
        points = [(0, base[(run.task, run.seed)], "base")] if (run.task, run.seed) in base else []
        for path in sorted((run_dir / CURVE).glob("step*/eval.json"), key=lambda p: int(p.parent.name[4:])):
            points.append((int(path.parent.name[4:]), path, run.method))
        # the final model: the run's eval.json, or under the checkpoint protocol, when it reports an earlier
        # checkpoint, final/eval.json (experiments.evaluation.FINAL_DIR)
        final_eval = run_dir / "final" / "eval.json"
        points.append((final, final_eval if final_eval.exists() else run_dir / "eval.json", run.method))
        name = label(run, config)
        for step, path, method in points:
            rows.append({"task": run.task, label_column: name, "seed": run.seed, "run_id": run.run_id, "step": step,
                         "generations": step * per_step, "final": step == final, **point(path, method)})
    return pd.DataFrame(rows)


def curve_summary(curve: pd.DataFrame, label_column: str) -> pd.DataFrame:
    """Per run (task, label, seed, run_id): the final accuracy, the best accuracy on its curve (step 0 included) and
    the drop from that best to the end (``best - final`` >= 0). The label is returned as ``method`` (for
    ``experiments.reporting.summarize``)."""
    rows = []
    for (task, name, seed, run_id), points in curve.groupby(["task", label_column, "seed", "run_id"], sort=False):
        final = float(points.loc[points["final"], "value"].iloc[-1])
        best = float(points["value"].max())
        collapsed = points.loc[points["final"], "collapsed"].iloc[-1] if "collapsed" in points else None
        rows.append({"task": task, "method": name, "seed": seed, "run_id": run_id, "final": final, "best": best,
                     "drop": best - final, "val": None, "collapsed": collapsed})
    return pd.DataFrame(rows)


def curve_table(curve: pd.DataFrame, label_column: str, order: list[str]) -> pd.DataFrame:
    """Per task and label (returned as ``method``, in ``order``): final, best and drop, mean and 95% t-interval over
    seeds (:func:`curve_summary` then :func:`experiments.reporting.summarize`)."""
    table = R.summarize(R.select_best(curve_summary(curve, label_column)), ["final", "best", "drop"])
    rank = {name: i for i, name in enumerate(order)}
    return table.sort_values(["task", "method"], key=lambda c: c.map(rank) if c.name == "method" else c,
                             kind="stable").reset_index(drop=True)


def curve_markdown(title: str, paper: str, table: pd.DataFrame, curve: pd.DataFrame, label_column: str,
                   titles: Callable[[str], str], reproductions: Sequence[RP.Level] = ()) -> str:
    """The markdown table of :func:`curve_table`: one section per task, one row per label (``titles(label)``), with
    the number of seeds and of curve points per run; ``paper`` says what the paper shows. ``reproductions``:
    independent reproductions' scores (their ``method`` a label, their ``column`` ``final``, ``best`` or ``drop``),
    one italic row each after ours on the task they are shown as, their sources in a line under the table."""
    lines = [title, "", "Test accuracy in % (greedy); mean ± 95% t-interval over seeds. *Best*: the highest point of "
             "the run's curve (step 0 = the base model included); *drop*: best − final (how much the run lost after "
             f"its peak). Paper: {paper}", ""]
    for task, sub in table.groupby("task", sort=False):
        lines += [f"## {R.task_title(task)} (ours: `{task}`)", "",
                  f"| {label_column} | final | best on the curve | drop | seeds | points per run |",
                  "|---|---|---|---|---|---|"]
        for r in sub.itertuples():
            points = curve[(curve["task"] == task) & (curve[label_column] == r.method)].groupby("run_id").size()
            lines.append(f"| {titles(r.method)} | {R.fmt(r.final, r.final_ci)} | {R.fmt(r.best, r.best_ci)} | "
                         f"{R.fmt(r.drop, r.drop_ci)} | {R.seeds_cell(r._asdict())} | "
                         f"{'/'.join(map(str, sorted(set(points))))} |")
        repro = [r for r in reproductions if r.task == R.shown_as(task)]
        for (_, source, label), group in RP.grouped(repro).items():
            values = {r.column: r.value for r in group}
            cells = [f"*{values[c]}*" if c in values else "" for c in ("final", "best", "drop")]
            lines.append(f"| *repro ({source.label}): {titles(label)}* | " + " | ".join(cells) + " | | |")
        lines.append("")
        if repro:
            lines += [RP.legend_line(repro), ""]
    return "\n".join(lines)


def aggregate_curves(results_dir: Path, experiment: str, curve: pd.DataFrame, label_column: str,
                     order: list[str], title: str, paper: str, titles: Callable[[str], str],
                     reproductions: Sequence[RP.Level] = ()) -> pd.DataFrame:
    """:func:`curve_table` of ``curve`` (every point of the experiment's runs) written as ``<experiment>_curve.csv``,
    ``<experiment>.csv`` (its label column named ``label_column``) and ``<experiment>.md`` (with ``reproductions``,
    :func:`curve_markdown`; the CSV files hold ours only); returns the table."""
    if curve.empty:
        raise SystemExit(f"no trained run under {results_dir}: nothing to aggregate")
    table = curve_table(curve, label_column, order)
    curve.to_csv(results_dir / f"{experiment}_curve.csv", index=False)
    table.rename(columns={"method": label_column, **{f"{m}_ci": f"{m}_ci95" for m in ("final", "best", "drop")}}
                 ).to_csv(results_dir / f"{experiment}.csv", index=False)
    write_text_atomic(results_dir / f"{experiment}.md",
                      curve_markdown(title, paper, table, curve, label_column, titles, reproductions))
    return table
