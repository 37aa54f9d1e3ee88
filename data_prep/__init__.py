"""Task data: every task loads into the one record schema of ``data_prep.schema``."""

from data_prep.registry import TASKS, load_task

__all__ = ["TASKS", "load_task"]
