"""SDFT: Self-Distillation Fine-Tuning (Shenfeld et al., 2026, arXiv 2601.19897), reproduced on TRL."""

__version__ = "0.1.0"
