"""SDFT: Self-Distillation Fine-Tuning (Shenfeld et al., 2026, arXiv 2601.19897), reproduced on TRL.

``SDFT_OMP_PASSIVE=1`` chooses OpenMP's PASSIVE wait policy (``OMP_WAIT_POLICY=PASSIVE``; an explicit
``OMP_WAIT_POLICY`` wins). The runtime's default (threads spin a while before sleeping) is the faster one on cores of
one's own; on cores shared with other busy processes, spinning threads steal their CPU and PASSIVE is faster
(experiments/results/bench_cost_cpu.md measures both). OpenMP reads the policy once, when torch is first imported,
so the variable is read here, when this package is imported: it acts in every process that imports ``sdft`` before
torch, which the command lines of this repository (``python -m sdft.train``, ``eval.run``, the section scripts of
``experiments/``) do. A script of your own that imports torch first: set ``OMP_WAIT_POLICY=PASSIVE`` itself. The
other packages (``data_prep``, ``eval``, ``experiments``, ``figures``) import nothing for this effect.
"""

import os as _os

if _os.environ.get("SDFT_OMP_PASSIVE") == "1":
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
