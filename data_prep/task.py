"""What a task is to the rest of the repository: a :class:`Task` (its records, how a response is scored, its
titles), and :func:`load_records`, the validated records of one of its splits.

The repository's own tasks are listed in ``data_prep.tasks``; every task, a plugin's too, is known by name to the
task registry (``data_prep.registry``).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

from data_prep.schema import EmptySplitError, SplitReport, validate_records
from data_prep.verdicts import LABELS

Loader = Callable[..., list[dict]]  # (split, seed=0, n=None, data_dir=None[, skip_invalid=False][, report=None])
Scorer = Callable[[str, Any], float]  # (response, reference) -> 1.0 or 0.0
JUDGE_KINDS = tuple(LABELS)  # the judge prompts of eval.judge: medical, knowledge
SPLITS = ("train", "val", "test")


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
    """The judge prompt (one of ``JUDGE_KINDS``: ``eval.judge``'s prompts) for judge-scored tasks."""
    format_check: Callable[[str], bool] | None = None
    """Whether a response has the task's answer format, right or wrong (a tool call whose arguments parse; an
    answer letter in its tags). The evaluation reports the share of such responses as ``format_rate``
    beside the headline metric, so a model that learned the format but not the content shows it; ``None``: the
    task has no format to check (free-text answers)."""
    local_judge: Callable[[], Any] | None = None
    """For a judge-scored task that can be judged without a model: a zero-argument factory of an object with the
    LLM judge's ``judge_records(records, responses, task, progress=None) -> data_prep.verdicts.JudgeResult``
    and ``settings() -> dict`` (e.g. ``data_prep.fact_judge.FactJudge``). The evaluation uses it when no judge model is
    named (``judge_model`` of ``eval.evaluate``, ``--judge-model`` of ``eval.run``), else the LLM judge of that
    model; ``None``: the LLM judge always."""
    paper_task: str | None = None
    """The paper's task this one stands in for (the embedded tasks); ``None`` for the paper's own tasks."""
    split_rule: str = ""
    """How train / val / test are made, in one sentence (shown by ``python -m data_prep.prepare --list``)."""

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


def _takes(load: Callable, name: str) -> bool:
    """Whether a loader accepts the keyword ``name`` (or any keyword)."""
    try:
        params = inspect.signature(load).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def load_records(task: Task, split: str = "train", seed: int = 0, n: int | None = None, data_dir=None, *,
                 skip_invalid: bool = False, report: SplitReport | None = None, **kwargs) -> list[dict]:
    """Records of one split of a task, validated against the schema.

    ``skip_invalid`` skips malformed raw records (and records failing the schema) instead of raising; ``report``, a
    :class:`~data_prep.schema.SplitReport`, is filled with the files read and the counts of what was skipped,
    de-duplicated and left out (what ``sdft.train`` writes to ``splits.json``). A split without records (unless
    ``n=0``) raises EmptySplitError naming the files.
    """
    name = task.name
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    report = report if report is not None else SplitReport()
    report.task, report.split = name, split
    if _takes(task.load, "skip_invalid"):
        kwargs["skip_invalid"] = skip_invalid
    elif skip_invalid:
        raise ValueError(f"task {name!r}: its loader {task.load.__name__} takes no skip_invalid")
    if _takes(task.load, "report"):
        kwargs["report"] = report
    records = task.load(split, seed=seed, n=n, data_dir=data_dir, **kwargs)
    records, invalid = validate_records(records, source=f"task {name}/{split}", skip_invalid=skip_invalid)
    report.skipped.extend(invalid.skipped)
    report.records = len(records)
    if not records and n != 0:
        read = ", ".join(report.sources) or "the task's loader"
        raise EmptySplitError(f"task {name!r}, split {split!r}: no records (read from {read}); the source is too "
                              "small or its records were all skipped, de-duplicated or left out")
    return records
