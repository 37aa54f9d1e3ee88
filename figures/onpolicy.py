"""Figure 6: test accuracy against the number of generations of on-policy SDFT, offline distillation from the
teacher and SFT on the teacher's samples, from ``figure6_curve.csv`` (``experiments.figure6``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from figures.curves import plot_curves

STYLE = {"sdft": {"color": "#d62728", "label": "SDFT (on-policy distillation)"},
         "offline_distill": {"color": "#1f77b4", "label": "Offline Distillation"},
         "sft_from_teacher": {"color": "#2ca02c", "label": "SFT from Teacher"}}


def plot_onpolicy(results_dir: str | Path, out_base: str | Path | None = None) -> list[Path]:
    """Reads only ``figure6_curve.csv`` of ``results_dir``; writes ``figure6_onpolicy.png`` / ``.pdf`` there (or at
    ``out_base``)."""
    results_dir = Path(results_dir)
    curve = pd.read_csv(results_dir / "figure6_curve.csv")
    return plot_curves(curve, "method", STYLE, out_base or results_dir / "figure6_onpolicy", "on- vs off-policy")
