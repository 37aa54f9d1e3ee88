"""Figure 7: SDFT's strict accuracy on knowledge acquisition by what its teacher sees (answer, article, both)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from figures.save import save_figure  # noqa: E402

LABELS = {"answer": "answer only", "text": "article only", "text+answer": "article + answer"}


def plot_teacher_context(table: pd.DataFrame, out_base: str | Path, paper: Mapping[str, float] | None = None,
                         order: Sequence[str] = tuple(LABELS), subtitle: str | None = None) -> list[Path]:
    """One bar per teacher context (``table``: ``teacher_context``, ``strict``, ``strict_ci`` -- the 95% half-width
    over seeds, NaN for one seed -- and ``n_seeds``), the paper's values as black ticks; saves ``.png`` and ``.pdf``.
    Contexts absent from ``table`` are left out (their paper value too)."""
    rows = table.set_index("teacher_context")
    shown = [c for c in order if c in rows.index]
    fig, ax = plt.subplots(figsize=(4.8, 3.6))
    x = range(len(shown))
    means = [float(rows.loc[c, "strict"]) for c in shown]
    errors = [0.0 if pd.isna(rows.loc[c, "strict_ci"]) else float(rows.loc[c, "strict_ci"]) for c in shown]
    ax.bar(x, means, yerr=errors, capsize=4, color="#1f77b4", alpha=0.85, label="ours (mean, 95% CI over seeds)")
    for i, c in enumerate(shown):
        ax.annotate(f"{means[i]:.1f}\n(n={int(rows.loc[c, 'n_seeds'])})", (i, means[i]), ha="center", va="bottom",
                    fontsize=8, xytext=(0, 3), textcoords="offset points")
    if paper:
        marks = [(i, paper[c]) for i, c in enumerate(shown) if c in paper]
        ax.scatter([i for i, _ in marks], [v for _, v in marks], marker="_", s=600, color="black", zorder=3,
                   label="paper (Qwen2.5-7B-Instruct)")
    ax.set_xticks(list(x), [LABELS.get(c, c) for c in shown])
    ax.set_ylim(0, 105)
    ax.set_ylabel("strict accuracy (%)")
    ax.set_xlabel("teacher context")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    if subtitle:
        ax.set_title(subtitle, fontsize=8)
    fig.tight_layout()
    return save_figure(fig, out_base)
