"""Figure 8 (A.3): test accuracy against the number of generations, one curve per teacher kind (EMA of the
student, the frozen base model, the student itself), from ``figure8_curve.csv`` (``experiments.figure8``)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from figures.save import save_figure  # noqa: E402

STYLE = {"ema": {"color": "#d62728", "label": "EMA(θ)"}, "base": {"color": "#1f77b4", "label": "θ₀ (frozen base)"},
         "live": {"color": "#2ca02c", "label": "θ (current student)"}}


def plot_teacher_weights(results_dir: str | Path, out_base: str | Path | None = None) -> list[Path]:
    """One panel per task: accuracy (%) against generations, the mean over seeds as a line, each seed's points
    faint; with one seed, the points' Wilson 95% intervals shaded. Reads only ``figure8_curve.csv``; writes
    ``figure8_teacher.png`` / ``.pdf`` in ``results_dir`` (or at ``out_base``)."""
    results_dir = Path(results_dir)
    curve = pd.read_csv(results_dir / "figure8_curve.csv")
    tasks = list(dict.fromkeys(curve["task"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.2 * len(tasks), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for kind, rows in curve[curve["task"] == task].groupby("teacher", sort=False):
            style = STYLE.get(kind, {"color": "gray", "label": kind})
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
        ax.set_title(f"{task}: teacher weights", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, out_base or results_dir / "figure8_teacher")
