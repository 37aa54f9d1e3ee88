"""The task registry: one :class:`Task` per task name, read by data loading, scoring, configs and tables.

A task is registered once, where it is defined (``data_prep/tasks.py`` for the tasks of this repository); a
task of your own is one module that builds its records and one call::

    from data_prep.registry import Task, register_task
    from eval.scorers import score_short_answer

    register_task(Task(name="my_qa", load=my_loader, score=score_short_answer, metric="normalized_containment",
                       title="My QA"))

after which ``python -m sdft.train --task my_qa``, ``eval.evaluate`` and the experiment tables know it, once the
module is imported: from your own script, or, for a module outside the package, with ``--include path/to/it.py``
(``sdft.train``, ``eval.run``, the section scripts), the config key ``include`` or ``$SDFT_INCLUDE``
(:mod:`sdft.plugins`; ``examples/my_plugin.py`` is a complete task and method).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from sdft.registry import Registry

Loader = Callable[..., list[dict]]  # (split, seed=0, n=None, data_dir=None[, skip_invalid=False][, report=None])
Scorer = Callable[[str, Any], float]  # (response, reference) -> 1.0 or 0.0
JUDGE_KINDS = ("medical", "knowledge")  # the judge prompts of eval.judge


@dataclass(frozen=True)
class Task:
    """Everything the rest of the repository needs to know about a task."""

    name: str
    load: Loader
    metric: str
    """Name of the headline metric in eval.json (e.g. ``tool_call_match``, ``judge_accuracy``)."""
    title: str
    """Display title in tables and figures."""
    score: Scorer | None = None
    """Rule-based scorer; ``None`` for tasks scored by the LLM judge."""
    judge: str | None = None
    """The judge prompt (one of ``JUDGE_KINDS``) for judge-scored tasks."""
    format_check: Callable[[str], bool] | None = None
    """Whether a response has the task's answer format, right or wrong (a tool call whose arguments parse; an
    answer letter in its tags). The evaluation reports the share of such responses as ``format_rate``
    beside the headline metric, so a model that learned the format but not the content shows it; ``None``: the
    task has no format to check (free-text answers)."""
    local_judge: Callable[[], Any] | None = None
    """For a judge-scored task that can be judged without a model: a zero-argument factory of an object with the
    LLM judge's ``judge_records(records, responses, task=None, progress=None) -> eval.judge.JudgeResult`` and
    ``settings() -> dict`` (e.g. ``eval.fact_judge.FactJudge``). The evaluation uses it when no judge model is
    named (``judge_model`` of ``eval.evaluate``, ``--judge-model`` of ``eval.run``), else the LLM judge of that
    model; ``None``: the LLM judge always."""
    paper_task: str | None = None
    """The paper's task this one stands in for (the embedded tasks); ``None`` for the paper's own tasks."""
    split_rule: str = ""
    """How train / val / test are made, in one sentence (shown by ``python -m data_prep.prepare --list``)."""
    preset_values: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Config values this task sets inside a preset, in a preset file's shape: ``{"paper": {"common": {...},
    "methods": {"sdft": {...}}}}``. ``common`` values apply to the methods whose configs have those fields, a
    method's block to that method; both sit above the preset and below recipes and the command line."""

    def __post_init__(self):
        if (self.score is None) == (self.judge is None):
            raise ValueError(f"task {self.name!r}: give exactly one of a rule-based scorer or a judge kind")
        if self.judge is not None and self.judge not in JUDGE_KINDS:
            raise ValueError(f"task {self.name!r}: judge must be one of {JUDGE_KINDS}, got {self.judge!r}")
        if self.local_judge is not None and (self.judge is None or not callable(self.local_judge)):
            raise ValueError(f"task {self.name!r}: local_judge must be a zero-argument factory, and only for a "
                             "judge-scored task")

    @property
    def shown_as(self) -> str:
        """The task a table row belongs to: the paper's task for a stand-in, else this one."""
        return self.paper_task or self.name


def _load_builtin_tasks() -> None:
    import data_prep.tasks  # noqa: F401  (registers this repository's tasks)


TASKS = Registry("task", _load_builtin_tasks)
register_task = TASKS.register
get_task = TASKS.lookup
task_names = TASKS.names
