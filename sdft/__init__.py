"""SDFT: Self-Distillation Fine-Tuning (Shenfeld et al., 2026, arXiv 2601.19897), reproduced on TRL."""

import os as _os

# OpenMP's wait policy is read once, when torch is first imported, so it can only be chosen here, before any torch
# import of this package. The runtime's default (threads spin a while before sleeping) is the fast one on a machine
# of one's own: on 2 idle cores, OMP_WAIT_POLICY=PASSIVE made bf16 decoding 1.7x slower (51 vs 31 ms per token) and
# an SDFT step 1.2x slower (experiments/results/bench_cost_cpu.md). On cores shared with other busy processes,
# spinning threads steal their CPU and PASSIVE was 2x faster (a smoke evaluation: 15.4 vs 6.9 s): set
# SDFT_OMP_PASSIVE=1 there. An explicit OMP_WAIT_POLICY always wins.
if _os.environ.get("SDFT_OMP_PASSIVE") == "1":
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
