"""Plotting functions that turn result tables into the paper's figures."""

import sdft as _sdft  # noqa: E402,F401  (chooses the OpenMP wait policy before torch is imported; see sdft/__init__.py)
