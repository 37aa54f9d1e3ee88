"""The one record schema every task, method and scorer shares.

    {"id": str, "task": str, "prompt": [{"role": ..., "content": ...}, ...],
     "demonstration": str, "reference": Any, "meta": dict}

``prompt`` ends with a user turn. ``demonstration`` is the expert response used by SFT (as the
target) and by SDFT (inside the teacher's context). ``reference`` is what a scorer compares with
(an answer letter, golden tool calls, a reference answer). ``meta`` holds task-specific extras.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

REQUIRED_FIELDS = ("id", "task", "prompt", "demonstration", "reference")


class RecordError(ValueError):
    """A malformed record: the message names the source, the record and the field."""

    def __init__(self, source: str, index: int | str, field_name: str, problem: str):
        self.source, self.index, self.field, self.problem = source, index, field_name, problem
        super().__init__(f"{source}: record {index}: field {field_name!r}: {problem}")


def validate_record(record: Any, source: str, index: int | str) -> dict:
    """Check one record against the schema; return it (with ``meta`` defaulted) or raise RecordError."""
    if not isinstance(record, dict):
        raise RecordError(source, index, "<record>", f"expected an object, got {type(record).__name__}")
    for name in REQUIRED_FIELDS:
        if name not in record:
            raise RecordError(source, index, name, "missing")
    if not isinstance(record["id"], str) or not record["id"]:
        raise RecordError(source, index, "id", "must be a non-empty string")
    prompt = record["prompt"]
    if not isinstance(prompt, list) or not prompt:
        raise RecordError(source, index, "prompt", "must be a non-empty list of chat messages")
    for j, msg in enumerate(prompt):
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str) or not isinstance(msg.get("content"), str):
            raise RecordError(source, index, f"prompt[{j}]", "each message needs string 'role' and 'content'")
    if prompt[-1]["role"] != "user":
        raise RecordError(source, index, "prompt", "the last message must be the user's query")
    if not isinstance(record["demonstration"], str):
        raise RecordError(source, index, "demonstration", "must be a string")
    meta = record.get("meta", {})
    if not isinstance(meta, dict):
        raise RecordError(source, index, "meta", "must be an object")
    return {**record, "meta": meta}


@dataclass
class SkipReport:
    """What a lenient load skipped, and why: nothing disappears silently."""

    source: str
    kept: int = 0
    skipped: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        head = f"{self.source}: kept {self.kept}, skipped {len(self.skipped)}"
        return head + "".join(f"\n  - {s}" for s in self.skipped[:20]) + ("\n  ..." if len(self.skipped) > 20 else "")


def validate_records(records, source: str, skip_invalid: bool = False) -> tuple[list[dict], SkipReport]:
    """Validate a sequence of records. Strict by default; with ``skip_invalid`` bad ones are counted and reported."""
    report = SkipReport(source)
    out = []
    for i, rec in enumerate(records):
        try:
            out.append(validate_record(rec, source, i))
        except RecordError as err:
            if not skip_invalid:
                raise
            report.skipped.append(str(err))
    report.kept = len(out)
    return out, report
