"""Figure 8 (A.3): test accuracy against the number of generations, one curve per teacher kind (EMA of the
student, the frozen base model, the student itself), from ``figure8_curve.csv`` (``experiments.figure8``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from figures.curves import plot_curves

STYLE = {"ema": {"color": "#d62728", "label": "EMA(θ)"}, "base": {"color": "#1f77b4", "label": "θ₀ (frozen base)"},
         "live": {"color": "#2ca02c", "label": "θ (current student)"}}


def plot_teacher_weights(results_dir: str | Path, out_base: str | Path | None = None) -> list[Path]:
    """Reads only ``figure8_curve.csv`` of ``results_dir``; writes ``figure8_teacher.png`` / ``.pdf`` there (or at
    ``out_base``)."""
    results_dir = Path(results_dir)
    curve = pd.read_csv(results_dir / "figure8_curve.csv")
    return plot_curves(curve, "teacher", STYLE, out_base or results_dir / "figure8_teacher", "teacher weights")
