"""Figure 6: test accuracy against the number of generations of on-policy SDFT, offline distillation from the
teacher and SFT on the teacher's samples, from ``figure6_curve.csv`` (``experiments.figure6``)."""

from __future__ import annotations

from pathlib import Path

from figures.curves import plot_curve_file

STYLE = {"sdft": {"color": "#d62728", "label": "SDFT (on-policy distillation)"},
         "offline_distill": {"color": "#1f77b4", "label": "Offline Distillation"},
         "sft_from_teacher": {"color": "#2ca02c", "label": "SFT from Teacher"}}


def plot_onpolicy(results_dir: str | Path, out_base: str | Path | None = None) -> list[Path]:
    """``figure6_onpolicy.png`` / ``.pdf`` from ``figure6_curve.csv`` of ``results_dir`` only."""
    return plot_curve_file(results_dir, "figure6", "method", STYLE, "onpolicy", "on- vs off-policy", out_base)
