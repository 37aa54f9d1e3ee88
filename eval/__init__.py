"""Evaluation: task scorers, LLM judge, generation, pass@k, KL to base, prior-capability suite (lm-eval).

``eval.evaluate(model, task, ...)`` evaluates a run directory or a model and returns the content of ``eval.json``.
"""

import sdft as _sdft  # noqa: E402,F401  (chooses the OpenMP wait policy before torch is imported; see sdft/__init__.py)

from eval.evaluation import evaluate  # noqa: E402

__all__ = ["evaluate"]
