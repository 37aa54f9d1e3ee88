"""Figure 8 (A.3): test accuracy against the number of generations, one curve per teacher kind (EMA of the
student, the frozen base model, the student itself), from ``figure8_curve.csv`` (``experiments.figure8``)."""

from __future__ import annotations

from pathlib import Path

from figures.curves import plot_curve_file

STYLE = {"ema": {"color": "#d62728", "label": "EMA(θ)"}, "base": {"color": "#1f77b4", "label": "θ₀ (frozen base)"},
         "live": {"color": "#2ca02c", "label": "θ (current student)"}}


def plot_teacher_weights(results_dir: str | Path, out_base: str | Path | None = None) -> list[Path]:
    """``figure8_teacher.png`` / ``.pdf`` from ``figure8_curve.csv`` of ``results_dir`` only."""
    return plot_curve_file(results_dir, "figure8", "teacher", STYLE, "teacher", "teacher weights", out_base)
