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

from sdft.errors import UserError

REQUIRED_FIELDS = ("id", "task", "prompt", "demonstration", "reference")


class RecordError(UserError, ValueError):
    """A malformed record: the message names the source, the record and the field."""

    def __init__(self, source: str, index: int | str, field_name: str, problem: str):
        self.source, self.index, self.field, self.problem = source, index, field_name, problem
        super().__init__(f"{source}: record {index}: field {field_name!r}: {problem}")


class DataFileError(UserError, ValueError):
    """A raw file that cannot be read as records at all (not UTF-8, empty); the message starts with its path."""

    def __init__(self, path, problem: str):
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}")


class EmptySplitError(UserError, ValueError):
    """A split with no records; the message names the task, the split and the files it was read from."""


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
    locations: list[tuple[str, str]] = field(default_factory=list)
    """``(file, location)`` of each kept record, in order (``data_prep.sources.dedupe`` names them in errors)."""

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


@dataclass
class SplitReport:
    """What one load of a split read, removed and kept. A loader fills the one it is given
    (``load_task(..., report=SplitReport())``); ``to_dict()`` is what ``splits.json`` and ``manifest.json`` hold.

    The counts other than ``records`` are of the whole source the split was cut from (duplicates are removed before
    splitting), so the train, val and test reports of one task show the same duplicates.
    """

    task: str = ""
    split: str = ""
    sources: list[str] = field(default_factory=list)
    """The files (or hub datasets) read."""
    skipped: list[str] = field(default_factory=list)
    """Malformed records skipped with ``skip_invalid``: one message each, naming file, record and field."""
    duplicate_rows: int = 0
    """Records identical to an earlier one (same id, prompt, demonstration and reference): removed."""
    duplicate_questions: int = 0
    """Records asking a question an earlier record asks (the task's question key, see data_prep/README.md): removed."""
    duplicate_examples: list[str] = field(default_factory=list)
    left_out: dict[str, int] = field(default_factory=dict)
    """Valid records a task leaves out on purpose, by reason (e.g. ``unscorable_golden_calls``)."""
    records: int = 0
    """Records in the split, after validation and subsampling."""

    def add_source(self, source) -> None:
        if str(source) not in self.sources:
            self.sources.append(str(source))

    def absorb(self, skips: SkipReport) -> None:
        """Take the source and the skipped records of one converted file."""
        self.add_source(skips.source)
        self.skipped.extend(skips.skipped)

    def leave_out(self, reason: str, count: int) -> None:
        if count:
            self.left_out[reason] = self.left_out.get(reason, 0) + count

    def to_dict(self) -> dict:
        return {"task": self.task, "split": self.split, "sources": list(self.sources), "records": self.records,
                "skipped": len(self.skipped), "skipped_examples": self.skipped[:20],
                "duplicate_rows": self.duplicate_rows, "duplicate_questions": self.duplicate_questions,
                "duplicate_examples": self.duplicate_examples[:20], "left_out": dict(sorted(self.left_out.items()))}

    def __str__(self) -> str:
        return (f"{self.task}/{self.split}: {self.records} records; skipped {len(self.skipped)} malformed, removed "
                f"{self.duplicate_rows} duplicate rows and {self.duplicate_questions} duplicate questions"
                + "".join(f", left out {n} ({why})" for why, n in sorted(self.left_out.items())))
