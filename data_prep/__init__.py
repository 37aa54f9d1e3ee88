"""Task data: every task loads into the one record schema of ``data_prep.schema``."""

from data_prep.tasks import TASKS, load_task

__all__ = ["TASKS", "load_task"]

import sdft as _sdft  # noqa: E402,F401  (chooses the OpenMP wait policy before torch is imported; see sdft/__init__.py)
