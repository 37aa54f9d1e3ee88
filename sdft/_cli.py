"""Console-script entry points (see [project.scripts] in pyproject.toml).

A console script calls ``sys.exit(func())``, which prints a non-None, non-int return value and exits 1;
these wrappers drop the values that the ``main`` functions return for callers in Python.
"""

from __future__ import annotations


def train(argv: list[str] | None = None) -> None:
    """``sdft-train``: the same as ``python -m sdft.train``."""
    from sdft.train import main

    main(argv)


def prepare(argv: list[str] | None = None) -> None:
    """``sdft-prepare``: the same as ``python -m data_prep.prepare``."""
    from data_prep.prepare import main

    main(argv)
