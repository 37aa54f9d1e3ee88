"""Figure 2 (right), Section 3.2: accuracy of the base model, its demonstration-conditioned teacher and the SFT
model, and the KL of the teacher and of the SFT model to the base, from ``icl_check.csv``
(``experiments.icl_check``). The paper's values, where it prints them, are drawn as black ticks."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from figures.save import save_figure  # noqa: E402

COLORS = {"student": "#7f7f7f", "teacher": "#2ca02c", "sft": "#1f77b4"}
LABELS = {"student": "base\n(no demo)", "teacher": "teacher\n(base + demo)", "sft": "SFT"}


def plot_icl(results_dir: str | Path, out_base: str | Path | None = None, *, roles: Sequence[str],
             paper_values: Mapping[str, Mapping[str, float]]) -> list[Path]:
    """Per task two panels: accuracy (%) per model with Wilson 95% error bars, and KL to the base model in nats per
    sequence (bars; nats per token written on them) for the teacher and the SFT model. Several seeds: their mean,
    each seed a dot. ``roles``: the models' order (of ``student``, ``teacher``, ``sft``); ``paper_values``: task -> the
    paper's values (accuracy per role, ``kl_teacher``, ``kl_sft``), a task without any left out. Reads only
    ``icl_check.csv``; writes ``figure2_icl.png`` / ``.pdf`` in ``results_dir`` (or at ``out_base``)."""
    results_dir = Path(results_dir)
    table = pd.read_csv(results_dir / "icl_check.csv")
    tasks = list(dict.fromkeys(table["task"]))
    fig, axes = plt.subplots(len(tasks), 2, figsize=(8.5, 3.6 * len(tasks)), squeeze=False)
    for (acc_ax, kl_ax), task in zip(axes, tasks):
        sub = table[table["task"] == task]
        paper = paper_values.get(task, {})
        shown = [r for r in roles if r in set(sub["role"])]
        for i, role in enumerate(shown):
            rows = sub[sub["role"] == role]
            mean = rows["accuracy"].mean()
            low, high = rows["ci_low"].mean(), rows["ci_high"].mean()
            acc_ax.bar(i, mean, yerr=[[max(mean - low, 0)], [max(high - mean, 0)]], capsize=4, color=COLORS[role],
                       alpha=0.85)
            acc_ax.annotate(f"{mean:.1f}", (i, high), ha="center", va="bottom", fontsize=8, xytext=(0, 3),
                            textcoords="offset points")
            if len(rows) > 1:
                acc_ax.scatter([i] * len(rows), rows["accuracy"], color="black", s=8, zorder=3)
            if role in paper:
                acc_ax.scatter([i], [paper[role]], marker="_", s=600, color="black", zorder=4)
        acc_ax.set_xticks(range(len(shown)), [LABELS[r] for r in shown], fontsize=8)
        acc_ax.set_ylim(0, 125)  # room for the legend above 100%
        acc_ax.set_ylabel("accuracy (%)")
        acc_ax.set_title(f"{task}: accuracy (Wilson 95% CI)", fontsize=9)
        acc_ax.grid(axis="y", alpha=0.3)
        if any(r in paper for r in shown):
            acc_ax.scatter([], [], marker="_", s=200, color="black", label="paper (Qwen2.5-7B-Instruct, ToolAlpaca)")
            acc_ax.legend(fontsize=7, loc="upper left")
        kl_roles = [r for r in ("teacher", "sft") if r in set(sub["role"])]
        for i, role in enumerate(kl_roles):
            rows = sub[sub["role"] == role]
            seq, tok = rows["kl_seq"].mean(), rows["kl_per_token"].mean()
            # the interval over samples, where the run recorded it (one seed: that run's; several: their mean)
            low, high = (rows[c].mean() if c in rows else float("nan") for c in ("kl_seq_ci_low", "kl_seq_ci_high"))
            bounded = pd.notna(low) and pd.notna(high)
            kl_ax.bar(i, seq, color=COLORS[role], alpha=0.85, capsize=4,
                      yerr=[[max(seq - low, 0)], [max(high - seq, 0)]] if bounded else None)
            kl_ax.annotate(f"{seq:.3g} nats\n({tok:.3g} / token)", (i, high if bounded else seq), ha="center",
                           va="bottom", fontsize=8, xytext=(0, 3), textcoords="offset points")
            if f"kl_{role}" in paper:
                kl_ax.scatter([i], [paper[f"kl_{role}"]], marker="_", s=600, color="black", zorder=4)
        kl_ax.set_xticks(range(len(kl_roles)), [LABELS[r] for r in kl_roles], fontsize=8)
        kl_ax.set_ylabel("KL(π ‖ π_base), nats per sequence")
        kl_ax.set_title(f"{task}: distance to the base model", fontsize=9)
        kl_ax.grid(axis="y", alpha=0.3)
        kl_top = sub["kl_seq_ci_high"] if "kl_seq_ci_high" in sub else sub["kl_seq"]
        kl_ax.set_ylim(0, max([1e-9, *sub["kl_seq"].dropna(), *kl_top.dropna(),
                               *[v for k, v in paper.items() if k.startswith("kl")]]) * 1.3)
        if paper:
            kl_ax.scatter([], [], marker="_", s=200, color="black", label="paper (Qwen2.5-7B-Instruct, ToolAlpaca)")
            kl_ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return save_figure(fig, out_base or results_dir / "figure2_icl")
