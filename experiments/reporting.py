"""Reporting shared by every paper-section script: a results tree -> runs -> best sweep points -> mean ± CI tables.

    runs = collect_runs(results_dir)                    # one row per run directory with an eval.json
    table = summarize_runs(runs, ["new_task", ..., "prior_avg"], method_order)
    write_tables(table, paper_frame(PAPER, columns), runs, results_dir / "table5", title=..., columns=...,
                 reproductions=reproductions.TABLE5)   # independent reproductions' numbers beside the paper's

A run directory is ``<results>/<task>/<method>/<run_id>/`` with ``config.yaml`` and ``eval.json`` (and
``val/eval.json`` for a sweep point). Task titles come from the task registry (the title of the paper task a
stand-in plays), method titles from the method registry.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from data_prep.registry import get_task
from eval.stats import mean_ci
from experiments import reproductions as RP
from sdft.registry import get_method
from sdft.run_io import read_json, read_yaml

RUN_COLUMNS = {"task", "method", "run_id", "seed", "model", "divergence", "teacher_template", "teacher_context",
               "new_task", "new_task_metric", "val", "run_dir", "prior_avg", "prior_suite", "prior_metrics",
               "new_task_final", "chosen_step", "final_step", "collapsed", "mode_answer_share"}


# ------------------------------------------------------------------------------------------------ titles
def _registered(get, name: str, attribute: str, default):
    """``get(name).<attribute>``, or ``default`` for a name no registry holds (a results tree written by other code)."""
    try:
        return getattr(get(name), attribute)
    except KeyError:
        return default


def shown_as(task: str) -> str:
    """The task a table row belongs to: the paper's task an embedded stand-in plays, else the task itself."""
    return _registered(get_task, task, "shown_as", task)


def task_title(task: str) -> str:
    """Display title of the task a row is shown as (``embedded_tool`` -> the title of ``tooluse``)."""
    return _registered(get_task, shown_as(task), "title", task)


def _distils(method: str) -> bool:
    """Whether a method trains on a divergence (an unregistered name: whether its config names one)."""
    return _registered(get_method, method, "distils", True)


def method_title(method: str) -> str:
    return _registered(get_method, method, "title", method)


def method_style(method: str) -> dict[str, Any]:
    """The method's figure style (``color``, ``marker``) and legend ``label`` (its title); ``{}`` for a name no
    registry holds (the figures' default style then)."""
    try:
        spec = get_method(method)
    except KeyError:
        return {}
    return {**spec.style, "label": spec.title}


def eval_variant(method: str) -> str:
    """The evaluation a method's scores come from (``student``; ``rag`` for Oracle RAG)."""
    return _registered(get_method, method, "eval_variant", "student")


# ------------------------------------------------------------------------------------------------ collect
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


def checkpoint_facts(result: dict, run_dir: Path, variant: str, new_task: float | None) -> dict[str, Any]:
    """The checkpoint protocol's columns of one run (``experiments.evaluation``'s ``checkpoint`` block):
    ``chosen_step`` / ``final_step`` (None without the protocol: the final model is the reported one),
    ``new_task_final`` (the final model's score; the reported one's when they are the same model), and ``collapsed``
    / ``mode_answer_share`` of the reported checkpoint's test answers (``sdft.health.answer_collapse``; from the
    predictions file for runs evaluated before eval.json recorded it)."""
    from sdft.health import answer_collapse

    block = result.get("checkpoint") or {}
    final_test = block.get("final_test")
    new_task_final = new_task
    if isinstance(final_test, dict):
        new_task_final = primary_score(final_test.get(variant))[0]
    evaluation = result.get("evaluations", {}).get(variant) or {}
    answers = evaluation.get("answers")
    if answers is None:
        name = (evaluation.get("settings") or {}).get("predictions")
        path = run_dir / name if name else None
        if path is not None and path.exists():
            import json

            answers = answer_collapse([json.loads(line)["response"] for line in path.read_text().splitlines()
                                       if line.strip()])
    return {"chosen_step": block.get("chosen_step"), "final_step": block.get("final_step"),
            "new_task_final": new_task_final, "collapsed": (answers or {}).get("collapsed"),
            "mode_answer_share": (answers or {}).get("mode_share")}


def seed_of(run_name: str, config: Mapping[str, Any]) -> int | None:
    """A run's seed: its config's, else the number the run folder's name ends with (``seed2``, ``lr1e-4_seed2``,
    ``ema__seed2``: every grid names its runs so), for result folders copied without their ``config.yaml``; None
    when neither says."""
    if config.get("seed") is not None:
        return config["seed"]
    match = re.search(r"(?:^|_)seed(\d+)$", run_name)
    return int(match.group(1)) if match else None


def collect_runs(results_dir: str | Path) -> pd.DataFrame:
    """One row per run directory holding an eval.json (the test split): new-task score, validation score, the
    prior benchmarks (one column each), their average and the run's config (seed, model, divergence, ...; a run
    without config.yaml has its seed from its folder's name, :func:`seed_of`, and no other config column).
    An eval.json that is not valid JSON raises :class:`sdft.run_io.InvalidJSONFile` naming it."""
    rows = []
    for eval_path in sorted(Path(results_dir).glob("*/*/*/eval.json")):
        run_dir = eval_path.parent
        result = read_json(eval_path)
        cfg = read_yaml(run_dir / "config.yaml") if (run_dir / "config.yaml").exists() else {}
        cfg = cfg or {}
        task, method = run_dir.parts[-3], run_dir.parts[-2]
        variant = eval_variant(method)
        new_task, metric = primary_score(result.get("evaluations", {}).get(variant))
        val_path = run_dir / "val" / "eval.json"
        val = primary_score(read_json(val_path).get("evaluations", {}).get(variant))[0] \
            if val_path.exists() else None
        row: dict[str, Any] = {
            "task": task, "method": method, "run_id": run_dir.name, "seed": seed_of(run_dir.name, cfg),
            "model": cfg.get("model"), "divergence": cfg.get("divergence") if _distils(method) else None,
            "teacher_template": cfg.get("teacher_template"),
            "teacher_context": cfg.get("teacher_context") if _distils(method) else None,
            "new_task": new_task, "new_task_metric": metric,
            "val": val, "run_dir": str(run_dir), **checkpoint_facts(result, run_dir, variant, new_task),
        }
        for suite, prior in result.get("prior", {}).items():
            values, notes = _prior_columns(prior)
            row.update(values)
            row["prior_avg"] = prior.get("average")
            row["prior_suite"] = suite
            row["prior_metrics"] = notes
        rows.append(row)
    return pd.DataFrame(rows)


def final_model_columns(runs: pd.DataFrame) -> list[tuple[str, str]]:
    """``[("new_task_final", "Final model")]`` when some run reports a checkpoint chosen on validation (the paper's
    protocol, ``sdft.selection``): the final model's new-task score, shown beside the reported one; else ``[]``."""
    chosen = runs["chosen_step"] if "chosen_step" in runs else pd.Series(dtype=float)
    return [("new_task_final", "Final model")] if chosen.notna().any() else []


def prior_columns(runs: pd.DataFrame, paper_order: Sequence[str] = ()) -> list[str]:
    """The prior benchmarks that ran: those of ``paper_order`` in its order, then the others (stand-ins) by name."""
    names = [c for c in runs.columns if c not in RUN_COLUMNS]
    return [c for c in paper_order if c in names] + sorted(c for c in names if c not in paper_order)


# ------------------------------------------------------------------------------------------------ select, summarize
def select_best(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (task, method, teacher context, seed): the sweep point with the best validation score (the only run when
    no sweep). The teacher context (Figure 7's variants of SDFT) is a variable of the experiment, not of the sweep."""
    picked = []
    keys = ["task", "method", "teacher_context", "seed"] if "teacher_context" in runs else ["task", "method", "seed"]
    for _, group in runs.groupby(keys, sort=False, dropna=False):
        if len(group) > 1 and group["val"].notna().any():
            picked.append(group.loc[group["val"].idxmax()])
        else:
            picked.append(group.iloc[0])
    return pd.DataFrame(picked).reset_index(drop=True)


def summarize(best: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Mean and 95% t-interval half-width (``<metric>_ci``) over seeds for each (task, method) and metric, with the
    number of seeds (``n_seeds``)."""
    rows = []
    for (task, method), group in best.groupby(["task", "method"], sort=False):
        row: dict[str, Any] = {"task": task, "method": method, "n_seeds": len(group),
                               "n_collapsed": int(group["collapsed"].fillna(False).astype(bool).sum())
                               if "collapsed" in group else 0,
                               "chosen_steps": ", ".join(f"{int(c)}/{int(f)}" for c, f in
                                                         zip(group["chosen_step"], group["final_step"])
                                                         if pd.notna(c) and pd.notna(f))
                               if "chosen_step" in group else ""}
        for m in metrics:
            vals = [float(v) for v in group[m].dropna()] if m in group else []
            if vals:
                ci = mean_ci(vals)
                row[m], row[f"{m}_ci"] = ci["mean"], ci.get("half_width", float("nan"))
            else:
                row[m], row[f"{m}_ci"] = float("nan"), float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def summarize_runs(runs: pd.DataFrame, metrics: list[str], methods: Sequence[str] = ()) -> pd.DataFrame:
    """:func:`select_best` then :func:`summarize`; adds ``paper_task`` (the task each row is shown as) and sorts
    by task, then by ``methods`` order (other methods after them)."""
    table = summarize(select_best(runs), metrics)
    table["paper_task"] = table["task"].map(shown_as)
    order = {m: i for i, m in enumerate(methods)}
    return table.sort_values(by=["task", "method"], key=lambda c: c.map(lambda m: order.get(m, len(order)))
                             if c.name == "method" else c, kind="stable").reset_index(drop=True)


# ------------------------------------------------------------------------------------------------ the paper's numbers
def paper_frame(numbers: Mapping[str, Mapping[str, Sequence[float]]], columns: Sequence[str]) -> pd.DataFrame:
    """The paper's numbers as rows (task, method, one column per name of ``columns``, in the order printed)."""
    return pd.DataFrame([{"task": task, "method": method, **dict(zip(columns, values))}
                         for task, methods in numbers.items() for method, values in methods.items()])


# ------------------------------------------------------------------------------------------------ text
def run_summary(runs: pd.DataFrame) -> str:
    """The models and prior suites of a results tree, in one line."""
    models = ", ".join(sorted(set(runs["model"].dropna().astype(str))))
    suites = ", ".join(sorted(set(runs["prior_suite"].dropna().astype(str)))) if "prior_suite" in runs else "none"
    return f"{models}; prior suite: {suites}"


def seeds_text(table: pd.DataFrame) -> str:
    lo, hi = int(table["n_seeds"].min()), int(table["n_seeds"].max())
    return f"{lo} seed{'s' if lo > 1 else ''}" if lo == hi else f"{lo}-{hi} seeds"


def divergences(runs: pd.DataFrame, method: str) -> str:
    """The divergences ``method``'s runs trained with, comma-separated (``–`` when none is recorded)."""
    values = sorted(set(runs.loc[runs["method"] == method, "divergence"].dropna().astype(str)))
    return ", ".join(values) or "–"


COLLAPSED_SHARE_TEXT = "half"  # sdft.health.COLLAPSED_ANSWER_SHARE, in words


def seeds_cell(row) -> str:
    """The Seeds cell of a table row: the number of seeds, and how many of them collapsed."""
    n = int(row["n_seeds"])
    k = int(row.get("n_collapsed", 0) or 0)
    return f"{n} ({k} collapsed)" if k else str(n)


def fmt(mean, ci) -> str:
    """``mean ± ci`` with one decimal; the interval is left out when undefined (one seed) or zero."""
    if pd.isna(mean):
        return "–"
    return f"{mean:.1f}" + (f" ± {ci:.1f}" if not pd.isna(ci) and ci > 0 else "")


# ------------------------------------------------------------------------------------------------ tables
def write_tables(table: pd.DataFrame, paper: pd.DataFrame, runs: pd.DataFrame, out_base: str | Path, *, title: str,
                 columns: Sequence[tuple[str, str]], paper_shown: Sequence[str] | None = None,
                 notes: Sequence[str] = (), reproductions: Sequence[Any] = ()) -> list[Path]:
    """Write ``out_base`` + ``.csv`` and ``.md``: ours (mean ± 95% CI over seeds) with the paper's numbers beside.

    ``table``: from :func:`summarize_runs`; ``paper``: from :func:`paper_frame` (its tasks are paper tasks);
    ``columns``: (metric, header) of the measured columns, in order. The CSV has one row per (task, method):
    ``n_seeds``, each metric with ``<metric>_ci95``, and ``paper_<column>`` for every column of ``paper``. The
    markdown has one section per task: our rows (with their number of seeds), then the paper's rows in italics,
    whose cells are shown for the metrics of ``paper_shown`` (default: every metric the paper has). ``notes``: paragraphs under the heading.

    ``reproductions``: independent reproductions' numbers (:mod:`experiments.reproductions`, ``Level`` and
    ``Change`` rows; their tasks are paper tasks). In the markdown, after the paper's rows of a task, one italic row
    ``*repro (<source>): <Method>*`` per source and method, cells only where it has a number (and the metric is
    shown, as for the paper's); under the task's table, one labelled line per change of that task; at the end, the
    changes whose task is not stated and the sources' models and settings. In the CSV, one column
    ``repro_<source key>_<column>`` per source and column, on the row of the (paper task, method) it belongs to, like
    ``paper_<column>``; changes are in the markdown only. Without reproductions, the output is as before.
    """
    out_base = Path(out_base)
    cols = [c for c, _ in columns]
    paper_cols = [c for c in paper.columns if c not in ("task", "method")]
    shown = set(paper_cols if paper_shown is None else paper_shown) & set(paper_cols)
    paper_tasks = set(table["paper_task"])
    repro_levels = [r for r in RP.levels(reproductions) if r.task in paper_tasks]
    printed = [*(r for r in repro_levels if r.column in shown and r.column in cols),
               *(r for r in RP.changes(reproductions) if r.task is None or r.task in paper_tasks)]
    repro_cols: dict[str, dict[tuple[str, str], float]] = {}  # repro_<key>_<column> -> {(paper task, method): value}
    for r in repro_levels:
        repro_cols.setdefault(f"repro_{r.source.key}_{r.column}", {})[(r.task, r.method)] = r.number
    csv_rows = []
    for _, row in table.iterrows():
        ref = paper[(paper["task"] == row["paper_task"]) & (paper["method"] == row["method"])]
        out = {"task": row["task"], "paper_task": row["paper_task"], "method": row["method"], "n_seeds": row["n_seeds"],
               "n_collapsed": row.get("n_collapsed", 0), "chosen_steps": row.get("chosen_steps", "")}
        for c in cols:
            out[c], out[f"{c}_ci95"] = row[c], row[f"{c}_ci"]
        for c in paper_cols:
            out[f"paper_{c}"] = float(ref[c].iloc[0]) if len(ref) else None
        for c in repro_cols:
            out[c] = repro_cols[c].get((row["paper_task"], row["method"]))
        csv_rows.append(out)
    csv_path, md_path = out_base.with_suffix(".csv"), out_base.with_suffix(".md")
    pd.DataFrame(csv_rows).to_csv(csv_path, index=False)

    header = ["Method", *[h for _, h in columns], "Seeds"]
    lines = [f"# {title}", "", f"Ours: {run_summary(runs)}.",
             f"Accuracies in %; mean ± 95% t-interval over {seeds_text(table)}."]
    for note in notes:
        lines += [note, ""]
    if not notes:
        lines.append("")
    for task in dict.fromkeys(table["task"]):
        sub = table[table["task"] == task]
        paper_task = sub["paper_task"].iloc[0]
        metric = runs.loc[runs["task"] == task, "new_task_metric"].dropna()
        lines += [f"## {task_title(task)} (ours: `{task}`" + (f", metric `{metric.iloc[0]}`" if len(metric) else "")
                  + ")", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for _, row in sub.iterrows():
            lines.append("| " + " | ".join([method_title(row["method"])] +
                                            [fmt(row[c], row[f"{c}_ci"]) for c in cols] +
                                            [seeds_cell(row)]) + " |")
        for _, ref in paper[paper["task"] == paper_task].iterrows():
            cells = [f"*{ref[c]:.1f}*" if c in shown else "" for c in cols] + [""]
            lines.append(f"| *paper: {method_title(ref['method'])}* | " + " | ".join(cells) + " |")
        lines += _repro_rows(printed, paper_task, cols)
        lines.append("")
        task_changes = RP.change_lines(reproductions, paper_task, method_title)
        if task_changes:
            lines += [*task_changes, ""]
    if "n_collapsed" in table and table["n_collapsed"].fillna(0).gt(0).any():
        lines += [f"*k collapsed*: k of the seeds' reported checkpoints give one answer to at least "
                  f"{COLLAPSED_SHARE_TEXT} of the test items (sdft.health.answer_collapse).", ""]
    chosen = table[table["chosen_steps"].fillna("") != ""] if "chosen_steps" in table else table.iloc[:0]
    if len(chosen):
        lines += ["Checkpoints reported (the paper's protocol: best validation score; step / last step, per seed): "
                  + "; ".join(f"{task_title(r['task'])} {method_title(r['method'])} {r['chosen_steps']}"
                              for _, r in chosen.iterrows()) + ".", ""]
    notes_col = runs["prior_metrics"].dropna() if "prior_metrics" in runs else []
    if len(notes_col):
        lines += ["Prior-capability metrics: " + str(notes_col.iloc[0]) + ".", ""]
    if printed:
        untasked = RP.change_lines(reproductions, None, method_title)
        if untasked:
            lines += ["Changes reported by independent reproductions, no task named:", "", *untasked, ""]
        lines += [RP.legend_line(printed), ""]
    md_path.write_text("\n".join(lines))
    return [md_path, csv_path]


def _repro_rows(rows: Sequence[Any], paper_task: str, cols: Sequence[str]) -> list[str]:
    """The markdown rows of the reproductions' scores (``Level`` rows of ``rows``) of ``paper_task``: one per source
    and method, a cell for each column of ``cols`` the source has a number for, as the spec prints it."""
    lines = []
    for (task, source, method), group in RP.grouped(RP.levels(rows)).items():
        if task != paper_task:
            continue
        values = {r.column: r.value for r in group}
        cells = [f"*{values[c]}*" if c in values else "" for c in cols] + [""]
        lines.append(f"| *repro ({source.label}): {RP.row_title(method_title(method))}* | " + " | ".join(cells) + " |")
    return lines
