"""Saving a figure the way every figure of this repository is saved: PNG and PDF side by side."""

from __future__ import annotations

from pathlib import Path


def save_figure(fig, out_base: str | Path, dpi: int = 150) -> list[Path]:
    """Write ``out_base`` + ``.png`` and ``.pdf`` (creating the folder), close the figure, return the two paths."""
    import matplotlib.pyplot as plt

    out_base = Path(out_base)
    out_base.parent.mkdir(parents=True, exist_ok=True)
    paths = [out_base.with_suffix(".png"), out_base.with_suffix(".pdf")]
    for path in paths:
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return paths
