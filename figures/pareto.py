"""Figure 4: prior-task average vs new-task accuracy, one panel per task, one point per method."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from figures.save import save_figure  # noqa: E402


def _style(method: str, styles: Mapping[str, Mapping[str, Any]]) -> dict:
    """The method's matplotlib style (``color``, ``marker``) and legend ``label`` from ``styles``; what it does not
    give: black crosses labelled with the method's name."""
    return {"color": "black", "marker": "x", "label": method, **styles.get(method, {})}


def _ci(row: pd.Series, column: str):
    value = row.get(column)
    return None if value is None or pd.isna(value) or value == 0 else value


def _panel(ax, rows: pd.DataFrame, styles: Mapping[str, Mapping[str, Any]], hollow: bool = False) -> None:
    for _, row in rows.iterrows():
        style = _style(row["method"], styles)
        size = 12 if style["marker"] == "*" else 7
        if hollow:
            ax.plot(row["new_task"], row["prior_avg"], style["marker"], markersize=size, markerfacecolor="none",
                    markeredgecolor=style["color"], label=style["label"])
        else:
            ax.errorbar(row["new_task"], row["prior_avg"], xerr=_ci(row, "new_task_ci"), yerr=_ci(row, "prior_avg_ci"),
                        fmt=style["marker"], color=style["color"], markersize=size, capsize=3, label=style["label"])
    ax.grid(alpha=0.3)
    ax.set_xlabel("new-task accuracy (%)")


def plot_pareto(table: pd.DataFrame, out_base: str | Path, paper: pd.DataFrame | None = None,
                task_titles: Mapping[str, str] | None = None, subtitle: str | None = None,
                paper_on_same_axes: bool = True, method_styles: Mapping[str, Mapping[str, Any]] | None = None,
                ) -> list[Path]:
    """Draw the Pareto plot; save ``out_base`` + ``.png`` and ``.pdf``; return the paths.

    ``table`` has one row per (task, method) with ``new_task`` and ``prior_avg`` (and optional ``*_ci`` 95%
    half-widths). ``paper`` rows (same columns) are drawn as hollow markers: on the same axes when the numbers
    are comparable (same benchmarks), else in a second row of panels. ``task_titles``: task -> panel title;
    ``method_styles``: method -> its ``color``, ``marker`` and legend ``label`` (``experiments.reporting
    .method_style``: the method registry's).
    """
    titles = task_titles or {}
    styles = method_styles or {}
    tasks = list(dict.fromkeys(table["task"]))
    separate = paper is not None and not paper_on_same_axes
    nrows = 2 if separate else 1
    fig, axes = plt.subplots(nrows, len(tasks), figsize=(4.2 * len(tasks), 3.6 * nrows), squeeze=False)
    for j, task in enumerate(tasks):
        ax = axes[0][j]
        _panel(ax, table[table["task"] == task], styles)
        if paper is not None and not separate:
            _panel(ax, paper[paper["task"] == task], styles, hollow=True)
        ax.set_title(titles.get(task, task) + (" (ours)" if separate else ""))
        if separate:
            ref = axes[1][j]
            _panel(ref, paper[paper["task"] == task], styles, hollow=True)
            ref.set_title(f"{titles.get(task, task)} (paper, Qwen2.5-7B-Instruct)", fontsize=9)
    for row in axes:
        row[0].set_ylabel("prior-task average (%)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if paper is not None and not separate:
        handles.append(plt.Line2D([], [], marker="o", linestyle="", markerfacecolor="none", markeredgecolor="k"))
        labels.append("hollow: paper (Qwen2.5-7B-Instruct)")
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
    if subtitle:
        fig.suptitle(subtitle, fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return save_figure(fig, out_base)
