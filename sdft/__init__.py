"""SDFT: Self-Distillation Fine-Tuning (Shenfeld et al., 2026, arXiv 2601.19897), reproduced on TRL."""

import os as _os

# OpenMP's wait policy is read once, when torch is first imported, so it can only be chosen here, before any torch
# import of this package. The runtime's default (threads spin a while before sleeping) is the faster one on cores of
# one's own; on cores shared with other busy processes, spinning threads steal their CPU and PASSIVE is faster: set
# SDFT_OMP_PASSIVE=1 there (experiments/results/bench_cost_cpu.md measures both). An explicit OMP_WAIT_POLICY wins.
if _os.environ.get("SDFT_OMP_PASSIVE") == "1":
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
