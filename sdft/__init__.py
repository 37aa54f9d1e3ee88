"""SDFT: Self-Distillation Fine-Tuning (Shenfeld et al., 2026, arXiv 2601.19897), reproduced on TRL."""

import os as _os

# OpenMP threads that spin while waiting for work steal the CPU from every other process (and from each other
# when the cores are shared), which slows CPU training and generation badly under contention. The OpenMP runtime
# reads this once, when torch is first imported, so it is set here, before any torch import of this package.
# An explicit OMP_WAIT_POLICY wins; SDFT_OMP_DEFAULT=1 leaves the runtime's default (for benchmarking it).
if _os.environ.get("SDFT_OMP_DEFAULT") != "1":
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
