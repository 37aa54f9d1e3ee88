"""Figure 4: prior-task average vs new-task accuracy, one panel per task, one point per method."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

METHOD_STYLE = {
    "base": dict(color="#7f7f7f", marker="o", label="Base"),
    "sft": dict(color="#d62728", marker="s", label="SFT"),
    "reinvoke": dict(color="#ff7f0e", marker="D", label="SFT + re-invoke"),
    "dft": dict(color="#9467bd", marker="^", label="DFT"),
    "sdft": dict(color="#1f77b4", marker="*", label="SDFT (ours)"),
}


def plot_pareto(table: pd.DataFrame, out_base: str | Path, paper: pd.DataFrame | None = None,
                task_titles: dict[str, str] | None = None, subtitle: str | None = None) -> list[Path]:
    """Draw the Pareto plot and save ``out_base`` + ``.png`` / ``.pdf``.

    ``table`` has one row per (task, method) with columns ``new_task``, ``prior_avg`` and optionally
    ``new_task_ci`` / ``prior_avg_ci`` (95% half-widths). ``paper`` (same columns) is drawn as hollow markers.
    """
    tasks = list(dict.fromkeys(table["task"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        rows = table[table["task"] == task]
        for _, row in rows.iterrows():
            style = METHOD_STYLE.get(row["method"], dict(color="black", marker="x", label=row["method"]))
            ax.errorbar(row["new_task"], row["prior_avg"], xerr=row.get("new_task_ci") or None,
                        yerr=row.get("prior_avg_ci") or None, fmt=style["marker"], color=style["color"],
                        markersize=11 if style["marker"] == "*" else 7, capsize=3, label=style["label"])
        if paper is not None:
            for _, row in paper[paper["task"] == task].iterrows():
                style = METHOD_STYLE.get(row["method"], dict(color="black", marker="x"))
                ax.scatter(row["new_task"], row["prior_avg"], marker=style["marker"], facecolors="none",
                           edgecolors=style["color"], s=60, alpha=0.6)
        ax.set_title((task_titles or {}).get(task, task))
        ax.set_xlabel("new-task accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("prior-task average (%)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if paper is not None:
        handles.append(plt.Line2D([], [], marker="o", linestyle="", markerfacecolor="none", markeredgecolor="k"))
        labels.append("paper (Qwen2.5-7B)")
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False, bbox_to_anchor=(0.5, -0.02))
    if subtitle:
        fig.suptitle(subtitle, fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    out_base = Path(out_base)
    out_base.parent.mkdir(parents=True, exist_ok=True)
    paths = [out_base.with_suffix(".png"), out_base.with_suffix(".pdf")]
    for p in paths:
        fig.savefig(p, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return paths
