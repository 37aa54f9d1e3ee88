"""Glue between the experiment grid and ``eval``: evaluate a run, collect eval.json files, select, summarize.

Per run directory (``results/<experiment>/<task>/<method>/<run_id>/``):
  * ``eval.json`` -- the test split (student prompt, greedy) and the prior-capability suite,
  * ``val/eval.json`` -- the validation split, when the run is one point of a sweep (for model selection).
The prior suite of a base model is computed once per (model, suite, limit) and reused for every task
(``<results>/_prior_cache/``): it does not depend on the task.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from experiments.grid import BASE, RunSpec


def prior_suite_for(preset: str) -> str:
    return "paper" if preset == "paper" else "embedded"


def _results_root(spec: RunSpec) -> Path:
    return Path(spec.run_dir).parents[2]


def evaluate_run(spec: RunSpec, cfg, model: str, with_validation: bool = False,
                 extra_args: list[str] | None = None) -> Path:
    """Write ``eval.json`` for one run: test-split accuracy and the prior suite (and ``val/`` for sweeps).

    ``extra_args``: ``python -m eval.run`` options for every evaluation of the run (``RunSpec.eval_args``, e.g.
    ``["--allow-code-execution"]``); they win over the grid's values, as on a command line.
    """
    from eval import evaluate
    from eval.run import options_from_argv

    run_dir = Path(spec.run_dir)
    suite = prior_suite_for(spec.preset)
    common = {"task": spec.task, "preset": spec.preset, "seed": spec.seed,
              "template": getattr(cfg, "teacher_template", None), "data_dir": getattr(cfg, "data_dir", None)}
    extra = options_from_argv(list(extra_args or []))

    def run(split: str, output_dir: Path, prior_suite: str) -> dict:
        return evaluate(model, **{**common, "split": split, "output_dir": output_dir, "prior_suite": prior_suite,
                                  **extra})

    if with_validation:
        run("val", run_dir / "val", "none")
    cache = None
    if spec.method == BASE:
        key = hashlib.sha256(json.dumps([model, suite, spec.preset, spec.seed, extra_args or []]).encode()).hexdigest()[:16]
        cache = _results_root(spec) / "_prior_cache" / f"{key}.json"
    if cache is not None and cache.exists():
        result = run("test", run_dir, "none")
        _merge_prior(run_dir / "eval.json", result, json.loads(cache.read_text()), suite)
    else:
        run("test", run_dir, suite)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(run_dir / "eval.json", cache)
    return run_dir / "eval.json"


def _merge_prior(eval_path: Path, result: dict, cached: dict, suite: str) -> None:
    from eval.evaluation import flatten_scores, write_eval_json

    result.setdefault("prior", {})[suite] = {**cached["prior"][suite], "reused_from_cache": True}
    result["scores"] = flatten_scores(result)
    write_eval_json(eval_path, result)


# --------------------------------------------------------------------------------------------------------
def primary_score(evaluation: dict | None) -> tuple[float | None, str | None]:
    """The task's headline accuracy: the first percentage score of the student evaluation."""
    if not evaluation:
        return None, None
    for s in evaluation.get("scores", []):
        if s.get("unit") == "percent" and "value" in s:
            return float(s["value"]), s["metric"]
    return None, None


def _prior_columns(prior: dict) -> tuple[dict[str, float], str]:
    values, notes = {}, []
    for name, b in prior.get("benchmarks", {}).items():
        values[name] = float(b["value"])
        stand_in = b.get("stand_in_for")
        notes.append(f"{name}: {b['metric']}" + (f" (stand-in for {', '.join(stand_in)})" if stand_in else ""))
    return values, "; ".join(notes)


def collect_runs(results_dir: str | Path) -> pd.DataFrame:
    """One row per run directory holding an eval.json (the test split)."""
    rows = []
    for eval_path in sorted(Path(results_dir).glob("*/*/*/eval.json")):
        run_dir = eval_path.parent
        result = json.loads(eval_path.read_text())
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").exists() else {}
        task, method = run_dir.parts[-3], run_dir.parts[-2]
        new_task, metric = primary_score(result.get("evaluations", {}).get("student"))
        val_path = run_dir / "val" / "eval.json"
        val = primary_score(json.loads(val_path.read_text()).get("evaluations", {}).get("student"))[0] \
            if val_path.exists() else None
        row: dict[str, Any] = {
            "task": task, "method": method, "run_id": run_dir.name, "seed": cfg.get("seed"),
            "model": cfg.get("model"), "divergence": cfg.get("divergence") if method != BASE else None,
            "teacher_template": cfg.get("teacher_template"), "new_task": new_task, "new_task_metric": metric,
            "val": val, "run_dir": str(run_dir),
        }
        for suite, prior in result.get("prior", {}).items():
            values, notes = _prior_columns(prior)
            row.update(values)
            row["prior_avg"] = prior.get("average")
            row["prior_suite"] = suite
            row["prior_metrics"] = notes
        rows.append(row)
    return pd.DataFrame(rows)


def select_best(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (task, method, seed): the sweep point with the best validation score (the only run when no sweep)."""
    picked = []
    for _, group in runs.groupby(["task", "method", "seed"], sort=False, dropna=False):
        if len(group) > 1 and group["val"].notna().any():
            picked.append(group.loc[group["val"].idxmax()])
        else:
            picked.append(group.iloc[0])
    return pd.DataFrame(picked).reset_index(drop=True)


def summarize(best: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Mean and 95% t-interval half-width over seeds for each (task, method) and metric."""
    from eval.stats import mean_ci

    rows = []
    for (task, method), group in best.groupby(["task", "method"], sort=False):
        row: dict[str, Any] = {"task": task, "method": method, "n_seeds": len(group)}
        for m in metrics:
            vals = [float(v) for v in group[m].dropna()] if m in group else []
            if vals:
                ci = mean_ci(vals)
                row[m], row[f"{m}_ci"] = ci["mean"], ci.get("half_width", float("nan"))
            else:
                row[m], row[f"{m}_ci"] = float("nan"), float("nan")
        rows.append(row)
    return pd.DataFrame(rows)
