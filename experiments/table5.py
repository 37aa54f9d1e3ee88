"""Table 5 and Figure 4: skill learning -- new-task accuracy vs prior capabilities, per task and method.

    bash experiments/run_table5.sh [--preset smoke|mini|paper] [--seeds N] [--tasks a,b] [--methods a,b]
                                   [--launcher local|slurm] [--dry-run] [--sweep] [--force]
                                   [--allow-code-execution] [key=value ...]

For each task (Science Q&A, Tool Use, Medical) and method (Base, SFT, SFT+re-invoke, DFT, SDFT): train, evaluate
new-task accuracy and the prior-capability suite, then write ``results/table5/table5.md`` / ``.csv`` (mean and 95%
CI over seeds, the paper's numbers beside ours, then independent reproductions' numbers from
:mod:`experiments.reproductions`) and ``figure4_pareto.png`` / ``.pdf``.

Presets: ``mini`` (default) runs the embedded tasks and the embedded prior suite on SmolLM2-135M on a CPU;
``smoke`` the same on a tiny random model in a few minutes; ``paper`` Qwen2.5-7B-Instruct on the real tasks and
the six lm-eval benchmarks, with the recipes of ``experiments/recipes/`` (``--sweep`` expands Table 3's grid and
keeps, per task, method and seed, the configuration with the best validation score).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from experiments import reporting as R
from experiments import reproductions as RP
from experiments import section

EXPERIMENT = "table5"
METHODS = ["base", "sft", "reinvoke", "dft", "sdft"]
PRIOR = ["hellaswag", "humaneval", "ifeval", "mmlu", "truthfulqa", "winogrande"]

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


def aggregate(results_dir: str | Path) -> pd.DataFrame:
    """Collect every eval.json under ``results_dir`` into table5.md / .csv and figure4_pareto.png / .pdf."""
    from figures.pareto import plot_pareto

    results_dir = Path(results_dir)
    runs = R.collect_runs(results_dir)
    if runs.empty:
        raise SystemExit(f"no eval.json under {results_dir}: nothing to aggregate")
    prior = R.prior_columns(runs, PRIOR)
    same_suite = prior == PRIOR
    final = R.final_model_columns(runs)
    table = R.summarize_runs(runs, ["new_task", *[c for c, _ in final], *prior, "prior_avg"], METHODS)
    paper = R.paper_frame(PAPER_TABLE5, ["new_task", *PRIOR, "prior_avg"])
    notes = [f"SDFT divergence in our runs: {R.divergences(runs, 'sdft')} (the paper's numbers: per-token forward KL, "
             "per the authors' code)."]
    if not same_suite:
        notes.append("\\* embedded stand-ins for the paper's six benchmarks (offline, CPU); *paper* rows give the "
                     "paper's new-task accuracy and its six-benchmark average only.")
    R.write_tables(table, paper, runs, results_dir / "table5", title="Table 5: new-task accuracy vs prior capabilities",
                   columns=[("new_task", "New task"), *final, *[(p, p if same_suite else f"{p}*") for p in prior],
                            ("prior_avg", "Avg.")],
                   paper_shown=None if same_suite else ["new_task", "prior_avg"], notes=notes,
                   reproductions=RP.TABLE5)
    shown = table.assign(task=table["paper_task"])
    plot_pareto(shown, results_dir / "figure4_pareto", paper=paper,
                task_titles={t: R.task_title(t) for t in shown["task"]},
                subtitle=f"ours: {R.run_summary(runs)}", paper_on_same_axes=same_suite,
                method_styles={m: R.method_style(m) for m in dict.fromkeys([*shown["method"], *paper["method"]])})
    return table


def main(argv: list[str] | None = None) -> None:
    section.main(argv, experiment=EXPERIMENT, doc=__doc__, methods=METHODS, aggregate=aggregate,
                 outputs=["table5.md", "table5.csv", "figure4_pareto.png (and .pdf)"])


execute = section.execute  # the run step of one grid element (experiments.run_one)

if __name__ == "__main__":
    main()
