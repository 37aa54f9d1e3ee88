"""Evaluation: task scorers, LLM judge, generation, pass@k, KL to base, prior-capability suite (lm-eval)."""

import sdft as _sdft  # noqa: E402,F401  (chooses the OpenMP wait policy before torch is imported; see sdft/__init__.py)
