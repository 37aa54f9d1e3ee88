"""Evaluation: task scorers, LLM judge, generation, pass@k, KL to base, prior-capability suite (lm-eval).

``eval.evaluate(model, task, ...)`` evaluates a run directory or a model and returns the content of ``eval.json``.
"""

# isort: off
import sdft as _sdft  # noqa: F401  (chooses the OpenMP wait policy before torch is imported; see sdft/__init__.py)
from eval.evaluation import evaluate

# isort: on

__all__ = ["evaluate"]
