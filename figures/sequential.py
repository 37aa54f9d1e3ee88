"""Figure 3's drawing: normalized accuracy per task against the global optimizer step, one panel per method, the
training phases shaded and named. Input: :func:`experiments.figure3.normalize`'s table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from figures.save import save_figure


def phase_spans(curves: pd.DataFrame) -> list[tuple[str, float, float]]:
    """(task trained on, first global step, last global step) of every phase of one method's curves, in order: a
    phase starts where the previous one ended (the first at step 0)."""
    ends = curves[curves["phase"] > 0].groupby("phase", sort=True).agg(
        task=("phase_task", "first"), end=("global_step", "max"))
    starts = [0.0, *ends["end"].astype(float)][:-1]
    return [(task, start, float(end)) for (task, end), start in zip(ends[["task", "end"]].itertuples(index=False),
                                                                     starts)]


def plot_sequential(curves: pd.DataFrame, out_base: str | Path, subtitle: str = "") -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(curves["method"]))
    trained = curves[curves["phase"] > 0].sort_values("phase")["phase_task"]
    tasks = list(dict.fromkeys([*trained, *curves["task"]]))  # the training order
    colors = {t: plt.get_cmap("tab10")(i) for i, t in enumerate(tasks)}
    fig, axes = plt.subplots(1, len(methods), figsize=(5.2 * len(methods), 3.8), squeeze=False, sharey=True)
    for ax, method in zip(axes[0], methods):
        rows = curves[curves["method"] == method]
        for i, (task, start, end) in enumerate(phase_spans(rows)):
            ax.axvspan(start, end, color="0.93" if i % 2 == 0 else "white", zorder=0)
            ax.text((start + end) / 2, 1.02, task, ha="center", va="bottom", fontsize=8,
                    transform=ax.get_xaxis_transform())
        for task in tasks:
            line = rows[rows["task"] == task].sort_values("global_step")
            ax.plot(line["global_step"], line["normalized"], marker="o", ms=3, color=colors[task], label=task)
        ax.set_title(method.upper(), pad=16)
        ax.set_xlabel("optimizer step (all phases)")
        ax.axhline(0, color="gray", lw=0.6, ls="--")
    axes[0][0].set_ylabel("normalized accuracy (0 = base, 1 = best)")
    axes[0][-1].legend(fontsize=8, loc="lower right")
    if subtitle:
        fig.suptitle(subtitle, fontsize=8, y=1.04)
    fig.tight_layout()
    return save_figure(fig, out_base)
