"""The task registry: one :class:`~data_prep.task.Task` per task name, read by data loading, scoring, configs and
tables.

The repository's own tasks are listed in ``data_prep/tasks.py``; a task of your own is one module that builds its
records and one call::

    from data_prep.registry import Task, register_task
    from data_prep.scorers import score_short_answer

    register_task(Task(name="my_qa", load=my_loader, score=score_short_answer, metric="normalized_containment",
                       title="My QA"))

after which ``python -m sdft.train --task my_qa``, ``eval.evaluate`` and the experiment tables know it, once the
module is imported: from your own script, or, for a module outside the package, with ``--include path/to/it.py``
(``sdft.train``, ``eval.run``, the section scripts), the config key ``include`` or ``$SDFT_INCLUDE``
(:mod:`sdft.plugins`; ``examples/my_plugin.py`` is a complete task and method).
"""

from __future__ import annotations

from data_prep.schema import SplitReport
from data_prep.task import Task, load_records
from data_prep.tasks import BUILTIN_TASKS
from sdft.plugins import Registry

TASKS = Registry("task", BUILTIN_TASKS)
register_task = TASKS.register
get_task = TASKS.lookup
task_names = TASKS.names


def load_task(name: str, split: str = "train", seed: int = 0, n: int | None = None, data_dir=None, *,
              skip_invalid: bool = False, report: SplitReport | None = None, **kwargs) -> list[dict]:
    """Records of one split of the task registered as ``name``, validated against the schema
    (:func:`data_prep.task.load_records`, which takes the :class:`Task` itself)."""
    return load_records(get_task(name), split, seed=seed, n=n, data_dir=data_dir, skip_invalid=skip_invalid,
                        report=report, **kwargs)


__all__ = ["TASKS", "Task", "get_task", "load_task", "register_task", "task_names"]
