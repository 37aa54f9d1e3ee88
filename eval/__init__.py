"""Evaluation: generation, scoring by the task's scorer or the LLM judge, pass@k, KL to base, prior-capability suite
(lm-eval).

``eval.evaluate(model, task, cfg)`` evaluates a run directory or a model on a task (``data_prep.task.Task``) with the
options of ``cfg`` (``eval.config.EvalConfig``) and returns the content of ``eval.json``.
"""

from eval.evaluation import evaluate

__all__ = ["evaluate"]
