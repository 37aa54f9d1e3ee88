"""Evaluation: task scorers, LLM judge, generation, pass@k, KL to base, prior-capability suite (lm-eval)."""
