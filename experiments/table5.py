"""Table 5 and Figure 4: skill learning -- new-task accuracy vs prior capabilities, per task and method.

    bash experiments/run_table5.sh [--preset smoke|mini|paper] [--seeds N] [--tasks a,b] [--methods a,b]
                                   [--launcher local|slurm] [--dry-run] [--sweep] [--force]
                                   [--allow-code-execution] [key=value ...]

For each task (Science Q&A, Tool Use, Medical) and method (Base, SFT, SFT+re-invoke, DFT, SDFT): train, evaluate
new-task accuracy and the prior-capability suite, then write ``results/table5/table5.md`` / ``.csv`` (mean and 95%
CI over seeds, the paper's numbers beside ours) and ``figure4_pareto.png`` / ``.pdf``.

Presets: ``mini`` (default) runs the embedded tasks and the embedded prior suite on SmolLM2-135M on a CPU;
``smoke`` the same on a tiny random model in a few minutes; ``paper`` Qwen2.5-7B-Instruct on the real tasks and
the six lm-eval benchmarks, with the recipes of ``experiments/recipes/`` (``--sweep`` expands Table 3's grid and
keeps, per task, method and seed, the configuration with the best validation score).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from experiments import grid as G
from sdft.config import parse_overrides

EXPERIMENT = "table5"
METHODS = ["base", "sft", "reinvoke", "dft", "sdft"]
TASKS = {
    "smoke": ["embedded_science", "embedded_tool", "embedded_medical"],
    "mini": ["embedded_science", "embedded_tool", "embedded_medical"],
    "paper": ["science", "tooluse", "medical"],
}
# The real task each embedded stand-in plays in the table.
PAPER_TASK_OF = {"embedded_science": "science", "embedded_tool": "tooluse", "embedded_medical": "medical"}
TASK_TITLES = {"science": "Science Q&A", "tooluse": "Tool Use", "medical": "Medical"}
METHOD_TITLES = {"base": "Base", "sft": "SFT", "reinvoke": "SFT + re-invoke", "dft": "DFT", "sdft": "SDFT (ours)"}
PRIOR = ["hellaswag", "humaneval", "ifeval", "mmlu", "truthfulqa", "winogrande"]
RECIPES = Path(__file__).resolve().parent / "recipes" / "qwen2.5-7b-instruct"

# Paper, Table 5 (Qwen2.5-7B-Instruct): new task, then HellaSwag, HumanEval, IFEval, MMLU, TruthfulQA, Winogrande.
_BASE_PRIOR = [62.0, 65.8, 74.3, 71.7, 47.9, 71.1, 65.5]
PAPER_TABLE5 = {  # new task, the six benchmarks, the paper's printed average
    "science": {"base": [32.1, *_BASE_PRIOR], "sft": [66.2, 55.0, 54.8, 35.3, 64.6, 36.8, 73.7, 53.4],
                "reinvoke": [66.0, 61.6, 63.4, 52.9, 68.7, 45.2, 70.0, 60.2],
                "dft": [54.8, 57.6, 67.0, 60.4, 69.4, 38.8, 68.2, 60.2],
                "sdft": [70.2, 60.9, 68.9, 66.8, 70.7, 46.5, 73.1, 64.5]},
    "tooluse": {"base": [42.9, *_BASE_PRIOR], "sft": [63.2, 57.3, 50.0, 49.8, 70.2, 37.5, 73.1, 56.0],
                "reinvoke": [63.1, 61.7, 68.9, 59.1, 71.5, 49.1, 71.6, 63.7],
                "dft": [64.2, 59.7, 61.4, 60.2, 71.6, 40.2, 71.5, 60.8],
                "sdft": [70.6, 61.6, 68.3, 71.9, 71.5, 47.3, 71.7, 65.4]},
    "medical": {"base": [30.1, *_BASE_PRIOR], "sft": [35.5, 59.5, 62.1, 56.6, 70.5, 39.8, 72.9, 60.2],
                "reinvoke": [35.6, 61.5, 63.1, 67.6, 70.0, 42.3, 71.4, 62.6],
                "dft": [36.2, 61.9, 64.6, 74.6, 71.6, 40.1, 71.3, 64.0],
                "sdft": [40.2, 61.4, 67.7, 72.3, 71.5, 47.3, 71.9, 65.4]},
}


def paper_frame() -> pd.DataFrame:
    rows = []
    for task, methods in PAPER_TABLE5.items():
        for method, values in methods.items():
            row = {"task": task, "method": method, "new_task": values[0], **dict(zip(PRIOR, values[1:7])),
                   "prior_avg": values[7]}
            rows.append(row)
    return pd.DataFrame(rows)


def recipe_for(task: str, method: str) -> str | None:
    path = RECIPES / f"{method}_{task}.yaml"
    return str(path) if path.exists() else None


def build_grid(args) -> list[G.RunSpec]:
    tasks = args.tasks.split(",") if args.tasks else TASKS[args.preset]
    methods = args.methods.split(",") if args.methods else METHODS
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"unknown methods {unknown}; Table 5 compares {METHODS}")
    seeds = list(range(args.seeds if args.seeds is not None else (3 if args.preset == "paper" else 1)))
    return G.expand(EXPERIMENT, args.preset, tasks, methods, seeds, args.results_dir,
                    recipe_for=recipe_for if args.preset == "paper" else None, sweep=args.sweep,
                    overrides=parse_overrides(args.overrides),
                    eval_args=["--allow-code-execution"] if args.allow_code_execution else [])


def execute(spec: G.RunSpec) -> None:
    """Train (unless Base) and evaluate one run; writes eval.json into its directory."""
    from experiments.evaluation import evaluate_run
    from sdft.train import run_training

    cfg = spec.config()
    if spec.method == G.BASE:
        Path(spec.run_dir).mkdir(parents=True, exist_ok=True)
        cfg.save(Path(spec.run_dir) / "config.yaml")
        model = cfg.model
    else:
        run_training(cfg)
        model = str(Path(spec.run_dir) / "model")
    evaluate_run(spec, cfg, model, with_validation=bool(spec.sweep_point), extra_args=spec.eval_args)


RUN_COLUMNS = {"task", "method", "run_id", "seed", "model", "divergence", "teacher_template", "new_task",
               "new_task_metric", "val", "run_dir", "prior_avg", "prior_suite", "prior_metrics"}


def prior_columns(runs: pd.DataFrame) -> list[str]:
    """The prior benchmarks that ran: the paper's six in the paper's order, else the stand-ins' names."""
    names = [c for c in runs.columns if c not in RUN_COLUMNS]
    return [c for c in PRIOR if c in names] + sorted(c for c in names if c not in PRIOR)


def aggregate(results_dir: str | Path) -> pd.DataFrame:
    """Collect every eval.json under ``results_dir`` into table5.md / .csv and figure4_pareto.png / .pdf."""
    from experiments.evaluation import collect_runs, select_best, summarize
    from figures.pareto import plot_pareto

    results_dir = Path(results_dir)
    runs = collect_runs(results_dir)
    if runs.empty:
        raise SystemExit(f"no eval.json under {results_dir}: nothing to aggregate")
    best = select_best(runs)
    prior = prior_columns(runs)
    table = summarize(best, metrics=["new_task", *prior, "prior_avg"])
    table["paper_task"] = table["task"].map(lambda t: PAPER_TASK_OF.get(t, t))
    order = {m: i for i, m in enumerate(METHODS)}
    table = table.sort_values(by=["task", "method"], key=lambda c: c.map(order) if c.name == "method" else c,
                              kind="stable").reset_index(drop=True)
    paper = paper_frame()
    write_tables(table, paper, results_dir, runs, prior)
    shown = table.assign(task=table["paper_task"])
    plot_pareto(shown, results_dir / "figure4_pareto", paper=paper, task_titles=TASK_TITLES,
                subtitle=f"ours: {_subtitle(runs)}", paper_on_same_axes=prior == PRIOR)
    return table


def _subtitle(runs: pd.DataFrame) -> str:
    models = ", ".join(sorted(set(runs["model"].dropna().astype(str))))
    suites = ", ".join(sorted(set(runs["prior_suite"].dropna().astype(str)))) if "prior_suite" in runs else "none"
    return f"{models}; prior suite: {suites}"


def _seeds(table: pd.DataFrame) -> str:
    lo, hi = int(table["n_seeds"].min()), int(table["n_seeds"].max())
    return f"{lo} seed{'s' if lo > 1 else ''}" if lo == hi else f"{lo}-{hi} seeds"


def _fmt(mean, ci) -> str:
    if pd.isna(mean):
        return "–"
    return f"{mean:.1f}" + (f" ± {ci:.1f}" if not pd.isna(ci) and ci > 0 else "")


def write_tables(table: pd.DataFrame, paper: pd.DataFrame, results_dir: Path, runs: pd.DataFrame,
                 prior: list[str]) -> None:
    cols = ["new_task", *prior, "prior_avg"]
    csv_rows = []
    for _, row in table.iterrows():
        ref = paper[(paper["task"] == row["paper_task"]) & (paper["method"] == row["method"])]
        out = {"task": row["task"], "paper_task": row["paper_task"], "method": row["method"], "n_seeds": row["n_seeds"]}
        for c in cols:
            out[c], out[f"{c}_ci95"] = row[c], row[f"{c}_ci"]
        for c in ["new_task", *PRIOR, "prior_avg"]:
            out[f"paper_{c}"] = float(ref[c].iloc[0]) if len(ref) else None
        csv_rows.append(out)
    pd.DataFrame(csv_rows).to_csv(results_dir / "table5.csv", index=False)

    same_suite = prior == PRIOR
    header = ["Method", "New task", *[p if same_suite else f"{p}*" for p in prior], "Avg."]
    divergences = sorted(set(runs.loc[runs["method"] == "sdft", "divergence"].dropna().astype(str)))
    lines = ["# Table 5: new-task accuracy vs prior capabilities", "",
             f"Ours: {_subtitle(runs)}.", f"Accuracies in %; mean ± 95% t-interval over {_seeds(table)}.",
             f"SDFT divergence in our runs: {', '.join(divergences) or '–'} (the paper's numbers: per-token forward KL, "
             "per the authors' code).", ""]
    if not same_suite:
        lines += ["\\* embedded stand-ins for the paper's six benchmarks (offline, CPU); *paper* rows give the "
                  "paper's new-task accuracy and its six-benchmark average only.", ""]
    for task in dict.fromkeys(table["task"]):
        sub = table[table["task"] == task]
        paper_task = sub["paper_task"].iloc[0]
        metric = runs.loc[runs["task"] == task, "new_task_metric"].dropna()
        lines += [f"## {TASK_TITLES.get(paper_task, paper_task)} (ours: `{task}`"
                  + (f", metric `{metric.iloc[0]}`" if len(metric) else "") + ")", "",
                  "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for _, row in sub.iterrows():
            lines.append("| " + " | ".join([METHOD_TITLES.get(row["method"], row["method"])] +
                                            [_fmt(row[c], row[f"{c}_ci"]) for c in cols]) + " |")
        for _, ref in paper[paper["task"] == paper_task].iterrows():
            middle = [f"*{ref[c]:.1f}*" for c in PRIOR] if same_suite else ["" for _ in prior]
            lines.append("| *paper: " + METHOD_TITLES.get(ref["method"], ref["method"]) + "* | " +
                         " | ".join([f"*{ref['new_task']:.1f}*", *middle, f"*{ref['prior_avg']:.1f}*"]) + " |")
        lines.append("")
    notes = runs["prior_metrics"].dropna() if "prior_metrics" in runs else []
    if len(notes):
        lines += ["Prior-capability metrics: " + str(notes.iloc[0]) + ".", ""]
    (results_dir / "table5.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=["smoke", "mini", "paper"], default="mini")
    parser.add_argument("--seeds", type=int, help="number of seeds (default: 1; 3 for paper)")
    parser.add_argument("--tasks", help="comma-separated task names (default: the preset's three tasks)")
    parser.add_argument("--methods", help=f"comma-separated subset of {','.join(METHODS)}")
    parser.add_argument("--sweep", action="store_true", help="expand the recipes' sweep grid (paper preset)")
    parser.add_argument("--launcher", choices=["local", "slurm"], default="local")
    parser.add_argument("--dry-run", action="store_true", help="print the grid (and the sbatch script) only")
    parser.add_argument("--aggregate-only", action="store_true", help="only rebuild the tables and figure")
    parser.add_argument("--results-dir", default="results/table5")
    parser.add_argument("--force", action="store_true", help="rerun runs whose eval.json exists")
    parser.add_argument("--allow-code-execution", action="store_true",
                        help="also run the code benchmark of the prior suite (HumanEval, or its embedded stand-in): "
                             "it executes model-written code on this machine")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="RunConfig overrides for every run")
    args = parser.parse_args(argv)

    results_dir = Path(args.results_dir)
    if args.aggregate_only:
        aggregate(results_dir)
        return
    specs = build_grid(args)
    aggregate_cmd = G.python_module_cmd("experiments.table5", ["--aggregate-only", "--results-dir", str(results_dir)])
    print(f"[table5] preset {args.preset}: {G.grid_summary(specs)} -> {results_dir}", flush=True)
    if args.launcher == "slurm":
        script, text = G.write_sbatch(specs, EXPERIMENT, results_dir, aggregate_cmd)
        if args.dry_run:
            print(text)
            print(f"[table5] grid size: {G.grid_summary(specs)}; script written to {script} (not submitted)")
        else:
            G.submit_sbatch(script)
        return
    if args.dry_run:
        for spec in specs:
            print(f"  {spec.label} -> {spec.run_dir}")
        return
    t0 = time.time()
    G.run_local(specs, execute, force=args.force)
    aggregate(results_dir)
    print(f"[table5] finished in {time.time() - t0:.0f}s. Outputs:\n  {results_dir / 'table5.md'}\n"
          f"  {results_dir / 'table5.csv'}\n  {results_dir / 'figure4_pareto.png'} (and .pdf)", flush=True)


if __name__ == "__main__":
    main()
