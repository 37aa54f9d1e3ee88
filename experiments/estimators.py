"""Appendix A.1: SDFT's KL gradient estimators, the teacher's top K and several rollouts per prompt, on Tool Use.

    bash experiments/run_estimators.sh [--preset smoke|mini|paper] [--seeds N] [--rows a,b] [--tasks T]
                                       [--launcher local|slurm] [--dry-run] [--sweep] [--force] [key=value ...]

One SDFT run per *row* (and seed); a row fixes four config keys, recorded in every run's ``config.yaml``:

  ============== =============== ============ ================== ===============
  row            estimator       divergence   distillation_topk  num_generations
  ============== =============== ============ ================== ===============
  analytic       analytic        forward      0                  1
  analytic_rev   analytic        reverse      0                  1
  token          token           reverse      0                  1
  rao_blackwell  rao_blackwell   reverse      0                  1
  topk20         analytic        forward      20                 1
  rollouts4      analytic        forward      0                  4
  ============== =============== ============ ================== ===============

``analytic`` is the main setting of the paper's numbers (the forward per-token KL of the authors' code). Appendix A.1
writes its three estimators for the reverse KL, and the token-level one exists for it only
(``SelfDistillationConfig`` refuses ``estimator=token`` with another divergence), so the estimator comparison is
``analytic_rev`` / ``token`` / ``rao_blackwell``, all on the reverse KL; ``topk20`` and ``rollouts4`` change one
thing of ``analytic`` each.

Per run: test accuracy (``eval.json``, greedy) and, from the trainer's per-step log ``metrics.jsonl`` (one line per
optimizer step; every row sets ``logging_steps=1``), the mean and the sample variance of the gradient norm (the
norm before clipping, as transformers logs it; :func:`grad_norm_stats`) and the mean logged per-token divergence
(``sdft/distillation_loss``: how close the student stays to its teacher). Per row: mean and 95% t-interval over
seeds. Writes ``estimators.md`` / ``.csv`` (one line per task and row), ``estimators_runs.csv`` (one per run),
``estimators_gradnorm.csv`` (one per run and step) and ``estimators.png`` / ``.pdf`` (:mod:`figures.estimators`).
The paper prints no numbers for A.1 (analytic best and most stable; token-level higher variance, weaker KL control;
Rao-Blackwellized no measurable gain; more rollouts negligible gain): none are drawn beside ours.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd

from experiments import grid as G
from experiments import reporting as R
from experiments import section
from sdft.run_io import read_metrics, read_yaml, write_text_atomic

EXPERIMENT = "estimators"
METHODS = ["sdft"]
ROW_KEYS = ("estimator", "divergence", "distillation_topk", "num_generations")
ROWS: dict[str, dict[str, Any]] = {
    "analytic": {"estimator": "analytic", "divergence": "forward", "distillation_topk": 0, "num_generations": 1},
    "analytic_rev": {"estimator": "analytic", "divergence": "reverse", "distillation_topk": 0, "num_generations": 1},
    "token": {"estimator": "token", "divergence": "reverse", "distillation_topk": 0, "num_generations": 1},
    "rao_blackwell": {"estimator": "rao_blackwell", "divergence": "reverse", "distillation_topk": 0,
                      "num_generations": 1},
    "topk20": {"estimator": "analytic", "divergence": "forward", "distillation_topk": 20, "num_generations": 1},
    "rollouts4": {"estimator": "analytic", "divergence": "forward", "distillation_topk": 0, "num_generations": 4},
}
ROW_TITLES = {"analytic": "analytic (forward KL)", "analytic_rev": "analytic (reverse KL)",
              "token": "token-level (reverse KL)", "rao_blackwell": "Rao-Blackwellized (reverse KL)",
              "topk20": "analytic, teacher top-20", "rollouts4": "analytic, 4 rollouts / prompt"}
DIVERGENCE_METRIC = "sdft/distillation_loss"  # the mean per-token divergence over the loss tokens, logged per step


# ------------------------------------------------------------------------------------------------ statistics
def grad_norm_stats(log_rows: Iterable[Mapping[str, Any]], key: str = "grad_norm") -> dict[str, Any]:
    """Mean and sample variance (n - 1 in the denominator) of ``key`` over a run's per-step training log.

    ``log_rows``: the lines of ``metrics.jsonl`` (``sdft.run_io.read_metrics``). Lines without ``key`` (the
    end-of-training summary) are ignored; a step logged twice (a run resumed from a checkpoint repeats the steps after
    it) counts once, with its last value; a non-finite value (``"nan"``/``"inf"``, as the log writes them) is counted
    in ``n_nonfinite`` and left out of the mean and variance. ``var`` is NaN below two finite values, ``mean`` NaN
    without any."""
    by_step: dict[int, float] = {}
    for row in log_rows:
        if key in row and row[key] is not None:
            by_step[int(row["step"])] = float(row[key])
    values = [by_step[s] for s in sorted(by_step)]
    finite = [v for v in values if math.isfinite(v)]
    n = len(finite)
    mean = sum(finite) / n if n else math.nan
    var = sum((v - mean) ** 2 for v in finite) / (n - 1) if n > 1 else math.nan
    return {"n_steps": n, "n_nonfinite": len(values) - n, "mean": mean, "var": var}


def per_step(log_rows: Iterable[Mapping[str, Any]], key: str) -> dict[int, float]:
    """``{step: value}`` of ``key`` in a per-step log (the last value of a step logged twice)."""
    out: dict[int, float] = {}
    for row in log_rows:
        if key in row and row[key] is not None:
            out[int(row["step"])] = float(row[key])
    return dict(sorted(out.items()))


def row_of(config: Mapping[str, Any], where: str | Path = "config") -> str:
    """The row of :data:`ROWS` whose four values a run's config records; ``ValueError`` naming ``where`` and the
    recorded values when none does."""
    recorded = {k: config.get(k) for k in ROW_KEYS}
    for name, values in ROWS.items():
        if all(recorded[k] == v for k, v in values.items()):
            return name
    raise ValueError(f"{where}: {recorded} is no row of the estimator ablation ({', '.join(ROWS)})")


# ------------------------------------------------------------------------------------------------ grid
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", default=",".join(ROWS),
                        help=f"rows to run, a comma-separated subset of {','.join(ROWS)} (default: all)")


def chosen_rows(text: str) -> list[str]:
    return G.comma_subset(text, list(ROWS), "--rows")


def row_run_id(row: str, run_name: str) -> str:
    """``token__seed0``: the run folder of one row (``__`` parts it from the sweep point and seed)."""
    return f"{row}__{run_name}"


def adjust_grid(args, specs: list[G.RunSpec]) -> list[G.RunSpec]:
    """One SDFT run per row, its four keys (and ``logging_steps=1``: a gradient norm per step) in its overrides."""
    rows = chosen_rows(args.rows)
    given = sorted({k for s in specs for k in s.overrides if k in ROW_KEYS})
    if given:
        raise SystemExit(f"error: {given} are set by the rows (--rows), not by key=value")
    out = []
    for spec in specs:
        for row in rows:
            out.append(G.as_variant(spec, row_run_id(row, Path(spec.run_dir).name),
                                    {**ROWS[row], "logging_steps": 1}, f"row: {row}"))
    return out


def describe(args, specs: list[G.RunSpec]) -> list[str]:
    return [f"rows: {', '.join(chosen_rows(args.rows))}; each run's gradient norms from its metrics.jsonl"]


def execute(spec: G.RunSpec) -> None:
    """Train and evaluate one run (test split, no prior-capability suite: A.1 reports the new task only)."""
    section.execute(spec, prior=False)


# ------------------------------------------------------------------------------------------------ results
def collect(results_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per run: row, accuracy, gradient-norm and divergence statistics; one row per run and step)."""
    runs = R.collect_runs(results_dir)
    if runs.empty:
        raise SystemExit(f"no eval.json under {results_dir}: nothing to aggregate")
    rows, steps = [], []
    for run in runs.itertuples():
        config_path = Path(run.run_dir) / "config.yaml"
        if not config_path.exists():
            raise SystemExit(f"{config_path}: missing (every run of the estimator ablation records its config)")
        config = read_yaml(config_path) or {}
        row = row_of(config, config_path)
        log = read_metrics(run.run_dir)
        if not log:
            raise SystemExit(f"{Path(run.run_dir) / 'metrics.jsonl'}: missing or empty (the per-step training log)")
        gn = grad_norm_stats(log)
        div = grad_norm_stats(log, DIVERGENCE_METRIC)
        rows.append({"task": run.task, "row": row, "seed": run.seed, "run_id": run.run_id, "run_dir": run.run_dir,
                     "new_task": run.new_task, "new_task_metric": run.new_task_metric, "val": run.val,
                     "model": run.model, "prior_suite": None, **{k: config.get(k) for k in ROW_KEYS},
                     "n_steps": gn["n_steps"], "n_nonfinite": gn["n_nonfinite"], "grad_norm_mean": gn["mean"],
                     "grad_norm_var": gn["var"], "divergence_mean": div["mean"]})
        norms, divs = per_step(log, "grad_norm"), per_step(log, DIVERGENCE_METRIC)
        steps += [{"task": run.task, "row": row, "seed": run.seed, "run_id": run.run_id, "step": s,
                   "grad_norm": v, "divergence": divs.get(s)} for s, v in norms.items()]
    order = {r: i for i, r in enumerate(ROWS)}
    per_run = pd.DataFrame(rows).sort_values(["task", "row", "seed"], kind="stable",
                                             key=lambda c: c.map(order) if c.name == "row" else c)
    return per_run.reset_index(drop=True), pd.DataFrame(steps)


METRICS = [("new_task", "Accuracy"), ("grad_norm_mean", "grad-norm mean"), ("grad_norm_var", "grad-norm variance"),
           ("divergence_mean", "mean divergence")]


def summarize_rows(per_run: pd.DataFrame) -> pd.DataFrame:
    """Per (task, row): mean and 95% t half-width over seeds of every metric of :data:`METRICS` (the best
    validation point per seed when a sweep ran)."""
    best = R.select_best(per_run.assign(method=per_run["row"]))
    table = R.summarize(best, [m for m, _ in METRICS]).rename(columns={"method": "row"})
    order = {r: i for i, r in enumerate(ROWS)}
    return table.sort_values(["task", "row"], key=lambda c: c.map(order) if c.name == "row" else c,
                             kind="stable").reset_index(drop=True)


def _cell(mean, ci) -> str:
    """``mean ± ci`` to three significant digits (the interval left out when undefined or zero)."""
    if pd.isna(mean):
        return "–"
    return f"{mean:.3g}" + (f" ± {ci:.3g}" if not pd.isna(ci) and ci > 0 else "")


def to_markdown(table: pd.DataFrame, per_run: pd.DataFrame) -> str:
    lines = ["# Appendix A.1: KL gradient estimators, teacher top-K, rollouts per prompt", "",
             f"Ours: {', '.join(sorted(set(per_run['model'].dropna().astype(str))))}. Accuracy in % (greedy, test "
             "split); mean ± 95% t-interval over seeds. Gradient norm: before clipping, per optimizer step from "
             "`metrics.jsonl`; mean and sample variance per run, then their mean over seeds. Mean divergence: the "
             "logged per-token divergence to the teacher (`sdft/distillation_loss`), in nats, of the row's own "
             "divergence (forward or reverse KL: compare within a divergence).", "",
             "Paper (A.1, no numbers printed): the analytic estimator gives the most stable optimization and the "
             "best accuracy; token-level: higher variance, weaker KL control; Rao-Blackwellized: no measurable gain; "
             "more rollouts per prompt: negligible gain.", ""]
    for task, sub in table.groupby("task", sort=False):
        metric = per_run.loc[per_run["task"] == task, "new_task_metric"].dropna()
        lines += [f"## {R.task_title(task)} (ours: `{task}`" + (f", metric `{metric.iloc[0]}`" if len(metric) else "")
                  + ")", "", "| row | " + " | ".join(h for _, h in METRICS) + " | seeds |",
                  "|---|" + "---|" * (len(METRICS) + 1)]
        for r in sub.itertuples():
            cells = [R.fmt(getattr(r, m), getattr(r, f"{m}_ci")) if m == "new_task" else
                     _cell(getattr(r, m), getattr(r, f"{m}_ci")) for m, _ in METRICS]
            lines.append(f"| {ROW_TITLES.get(r.row, r.row)} | " + " | ".join(cells) + f" | {int(r.n_seeds)} |")
        lines.append("")
    return "\n".join(lines)


def aggregate(results_dir: str | Path) -> pd.DataFrame:
    """estimators.md / .csv, estimators_runs.csv, estimators_gradnorm.csv and estimators.png / .pdf."""
    from figures.estimators import plot_estimators

    results_dir = Path(results_dir)
    per_run, steps = collect(results_dir)
    table = summarize_rows(per_run)
    per_run.to_csv(results_dir / "estimators_runs.csv", index=False)
    steps.to_csv(results_dir / "estimators_gradnorm.csv", index=False)
    csv = table.rename(columns={f"{m}_ci": f"{m}_ci95" for m, _ in METRICS})
    csv.to_csv(results_dir / "estimators.csv", index=False)
    write_text_atomic(results_dir / "estimators.md", to_markdown(table, per_run))
    plot_estimators(results_dir, rows=list(ROWS), row_titles=ROW_TITLES)
    return table


def main(argv: list[str] | None = None) -> None:
    section.main(argv, experiment=EXPERIMENT, doc=__doc__, methods=METHODS, aggregate=aggregate,
                 outputs=["estimators.md", "estimators.csv", "estimators_runs.csv", "estimators_gradnorm.csv",
                          "estimators.png (and .pdf)"],
                 add_arguments=add_arguments, adjust_grid=adjust_grid, describe=describe, execute_fn=execute)


if __name__ == "__main__":
    main()
