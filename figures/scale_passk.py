"""Figure 5: SDFT vs SFT by model size (left panel) and pass@k by number of samples (right panel), one file each."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from figures.save import save_figure  # noqa: E402

COLORS = {"base": "#7f7f7f", "sft": "#ff7f0e", "sdft": "#1f77b4"}
TITLES = {"base": "Base", "sft": "SFT", "sdft": "SDFT"}


def _err(value) -> float:
    return 0.0 if pd.isna(value) else float(value)


def plot_scale(table: pd.DataFrame, out_base: str | Path, paper_deltas: Mapping[str, float] | None = None,
               labels: Mapping[str, str] | None = None, subtitle: str | None = None) -> list[Path]:
    """SFT and SDFT accuracy per model, side by side (``table``: one row per model in plotting order with
    ``model``, ``sft``, ``sft_ci``, ``sdft``, ``sdft_ci``, ``delta``, ``delta_ci``, ``n_seeds``; CIs are 95%
    half-widths, NaN for one seed). Our SDFT − SFT difference is written above each pair; for the models the paper
    measured, its printed difference (``paper_deltas``) under ours. Saves ``.png`` and ``.pdf``."""
    labels = labels or {}
    fig, ax = plt.subplots(figsize=(1.9 * max(2, len(table)) + 1.2, 3.8))
    width = 0.36
    tops = []
    for i, row in enumerate(table.itertuples()):
        for offset, method in ((-width / 2, "sft"), (width / 2, "sdft")):
            mean = getattr(row, method)
            if pd.isna(mean):
                continue
            ax.bar(i + offset, mean, width, yerr=_err(getattr(row, f"{method}_ci")), capsize=3, color=COLORS[method],
                   label=TITLES[method] if i == 0 else None)
        top = max(v + _err(c) for v, c in ((row.sft, row.sft_ci), (row.sdft, row.sdft_ci)) if not pd.isna(v)) \
            if not (pd.isna(row.sft) and pd.isna(row.sdft)) else 0.0
        text = "" if pd.isna(row.delta) else f"{row.delta:+.1f}" + (f" ± {row.delta_ci:.1f}"
                                                                    if _err(row.delta_ci) > 0 else "")
        paper = (paper_deltas or {}).get(row.model)
        if paper is not None:
            text += f"\n(paper {paper:+.1f})"
        ax.annotate(text, (i, top), ha="center", va="bottom", fontsize=8, xytext=(0, 3), textcoords="offset points")
        tops.append(top)
    ax.set_xticks(range(len(table)), [f"{labels.get(m, m)}\n(n={int(n)} seed{'s' if n > 1 else ''})"
                                      for m, n in zip(table["model"], table["n_seeds"])], fontsize=8)
    ax.set_ylim(0, min(110, max(tops + [1.0]) * 1.25 + 5))
    ax.set_ylabel("new-task accuracy (%)")
    ax.set_xlabel("model")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title("SDFT − SFT by model size" + (f"\n{subtitle}" if subtitle else ""), fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out_base)


def plot_passk(table: pd.DataFrame, out_base: str | Path, methods: Sequence[str] = ("base", "sft", "sdft"),
               subtitle: str | None = None) -> list[Path]:
    """pass@k against k (log2 axis), one line per method with its 95% band over seeds (``table``: ``method``,
    ``k``, ``mean``, ``ci95``). The paper draws this panel as curves only, with no numbers: none are drawn here."""
    fig, ax = plt.subplots(figsize=(4.8, 3.6))
    shown = [m for m in methods if m in set(table["method"])] + sorted(set(table["method"]) - set(methods))
    for method in shown:
        rows = table[table["method"] == method].sort_values("k")
        ks, means = rows["k"].astype(float), rows["mean"].astype(float)
        half = rows["ci95"].astype(float).fillna(0.0)
        ax.plot(ks, means, marker="o", markersize=3, color=COLORS.get(method), label=TITLES.get(method, method))
        ax.fill_between(ks, means - half, means + half, color=COLORS.get(method), alpha=0.2, linewidth=0)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("number of samples k")
    ax.set_ylabel("pass@k (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("pass@k (temperature 1.0, top-p 0.95)" + (f"\n{subtitle}" if subtitle else ""), fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out_base)
