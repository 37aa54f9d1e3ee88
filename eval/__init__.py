"""Evaluation: generation, scoring by the task's scorer or the LLM judge, pass@k, KL to base, prior-capability suite
(lm-eval).

``eval.evaluate(model, task, ...)`` evaluates a run directory or a model and returns the content of ``eval.json``.
"""

from eval.evaluation import evaluate

__all__ = ["evaluate"]
