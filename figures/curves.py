"""Accuracy against the number of generations, one line per label (a teacher kind, a method), from a curve CSV of
``experiments.checkpoint_curve`` (columns task, <label>, seed, generations, value, ci_low, ci_high): Figures 6 and 8."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from figures.save import save_figure  # noqa: E402


def plot_curves(curve: pd.DataFrame, label_column: str, styles: Mapping[str, Mapping[str, str]],
                out_base: str | Path, title: str) -> list[Path]:
    """One panel per task: the mean over seeds of each label as a line, each seed's points faint; with one seed,
    the points' Wilson 95% intervals shaded. ``styles``: ``{label: {"color", "label"}}`` (other labels gray)."""
    tasks = list(dict.fromkeys(curve["task"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.2 * len(tasks), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for name, rows in curve[curve["task"] == task].groupby(label_column, sort=False):
            style = styles.get(name, {"color": "gray", "label": name})
            seeds = rows["seed"].nunique()
            mean = rows.groupby("generations", as_index=False)["value"].mean()
            ax.plot(mean["generations"], mean["value"], marker="o", markersize=3, color=style["color"],
                    label=style["label"] + (f" (mean of {seeds} seeds)" if seeds > 1 else ""))
            if seeds > 1:
                ax.scatter(rows["generations"], rows["value"], color=style["color"], alpha=0.3, s=10)
            else:
                rows = rows.sort_values("generations")
                ax.fill_between(rows["generations"], rows["ci_low"], rows["ci_high"], color=style["color"],
                                alpha=0.12)
        ax.set_xlabel("Number of Generations")
        ax.set_ylabel("Accuracy (%)")
        ax.set_title(f"{task}: {title}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, out_base)


def plot_curve_file(results_dir: str | Path, experiment: str, label_column: str,
                    styles: Mapping[str, Mapping[str, str]], name: str, title: str,
                    out_base: str | Path | None = None) -> list[Path]:
    """Reads only ``<experiment>_curve.csv`` of ``results_dir`` (:mod:`experiments.checkpoint_curve`); writes
    ``<experiment>_<name>.png`` / ``.pdf`` there (or at ``out_base``)."""
    results_dir = Path(results_dir)
    curve = pd.read_csv(results_dir / f"{experiment}_curve.csv")
    return plot_curves(curve, label_column, styles, out_base or results_dir / f"{experiment}_{name}", title)
