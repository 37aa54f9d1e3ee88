"""Appendix A.1's figure: accuracy and gradient norm per estimator row, from ``estimators.csv`` and
``estimators_gradnorm.csv`` (written by ``experiments.estimators``)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from figures.save import save_figure  # noqa: E402


def plot_estimators(results_dir: str | Path, out_base: str | Path | None = None, *, rows: Sequence[str],
                    row_titles: Mapping[str, str]) -> list[Path]:
    """Per task: accuracy bars per row (95% t-interval over seeds) and the gradient norm against the optimizer step
    (mean over seeds, one line per row). ``rows``: the row names in the order that gives each its colour;
    ``row_titles``: name -> label (a row without one is labelled by its name). Reads only the two CSV files of
    ``results_dir``; writes ``estimators.png`` / ``.pdf`` there (or at ``out_base``)."""
    results_dir = Path(results_dir)
    table = pd.read_csv(results_dir / "estimators.csv")
    steps = pd.read_csv(results_dir / "estimators_gradnorm.csv")
    tasks = list(dict.fromkeys(table["task"]))
    fig, axes = plt.subplots(len(tasks), 2, figsize=(11, 3.8 * len(tasks)), squeeze=False)
    colors = {r: plt.cm.tab10(i) for i, r in enumerate(rows)}
    for (bars, curves), task in zip(axes, tasks):
        sub = table[table["task"] == task]
        x = range(len(sub))
        errors = [0.0 if pd.isna(v) else float(v) for v in sub["new_task_ci95"]]
        bars.bar(x, sub["new_task"], yerr=errors, capsize=4, color=[colors.get(r, "gray") for r in sub["row"]])
        for i, (v, n) in enumerate(zip(sub["new_task"], sub["n_seeds"])):
            bars.annotate(f"{v:.1f}\n(n={int(n)})", (i, v), ha="center", va="bottom", fontsize=7, xytext=(0, 3),
                          textcoords="offset points")
        bars.set_xticks(list(x), [row_titles.get(r, r) for r in sub["row"]], rotation=25, ha="right", fontsize=7)
        bars.set_ylim(0, 105)
        bars.set_ylabel("test accuracy (%)")
        bars.set_title(f"{task}: accuracy (mean, 95% CI over seeds)", fontsize=9)
        bars.grid(axis="y", alpha=0.3)
        for row, rows in steps[steps["task"] == task].groupby("row", sort=False):
            mean = rows.groupby("step", as_index=False)["grad_norm"].mean()
            curves.plot(mean["step"], mean["grad_norm"], marker=".", color=colors.get(row, "gray"),
                        label=row_titles.get(row, row))
        curves.set_xlabel("optimizer step")
        curves.set_ylabel("gradient norm (before clipping)")
        curves.set_title(f"{task}: gradient norm (mean over seeds)", fontsize=9)
        curves.grid(alpha=0.3)
        curves.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, out_base or results_dir / "estimators")
