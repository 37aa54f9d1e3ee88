"""The labels a judge gives a response to a judge-scored task, and their summary: what the LLM judge
(``eval.judge``) and the offline fact judge (``data_prep.fact_judge``) both return."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

UNPARSEABLE = "UNPARSEABLE"
LABELS = {"medical": ("CORRECT", "INCORRECT"), "knowledge": ("CORRECT", "PARTIALLY_CORRECT", "INCORRECT")}
"""The labels of each judge prompt (``Task.judge``), best first."""


@dataclass
class JudgeResult:
    """One verdict (a label of ``LABELS`` or ``UNPARSEABLE``) and one raw reply per response, and their
    :func:`summarize` with the judge's settings."""

    verdicts: list[str]
    raw: list[str]
    summary: dict[str, Any]


def summarize(verdicts: Sequence[str], kind: str) -> dict[str, Any]:
    """The count of each label of the judge prompt ``kind`` and its accuracies (fractions): ``accuracy`` for
    medical, ``strict_accuracy`` (``CORRECT``) and ``lenient_accuracy`` (or ``PARTIALLY_CORRECT``) for knowledge."""
    n = len(verdicts)
    counts = Counter(verdicts)
    out: dict[str, Any] = {"n": n, "counts": {k: counts.get(k, 0) for k in (*LABELS[kind], UNPARSEABLE)},
                           "n_unparseable": counts.get(UNPARSEABLE, 0)}
    if n == 0:
        return out
    if kind == "medical":
        out["accuracy"] = counts["CORRECT"] / n
    else:
        out["strict_accuracy"] = counts["CORRECT"] / n
        out["lenient_accuracy"] = (counts["CORRECT"] + counts["PARTIALLY_CORRECT"]) / n
    return out
