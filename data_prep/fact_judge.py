"""An offline judge that gives the knowledge judge's labels from the facts a record names, without a model.

The LLM judge (``eval.judge``, the paper's knowledge prompt) reads a response against a reference answer and says
``CORRECT``, ``PARTIALLY_CORRECT`` or ``INCORRECT``. Where a record lists the facts its answer must contain, the
same labels follow from a rule, so the embedded knowledge task can be scored offline, deterministically and for
free. The rule, per response:

* A fact is *present* when its text, normalized with :func:`data_prep.scorers.normalize_text` (lower case, accents
  stripped, punctuation to spaces, articles dropped), occurs in the normalized response as whole words: ``Sela``
  is present in "It lies on the SELA." but not in "Selastra"; ``1523`` is not present in "15230" or "1523rd".
* ``CORRECT``: every value of ``meta.key_facts`` is present and no value of ``meta.wrong_values`` is.
* ``PARTIALLY_CORRECT``: at least one key fact is present (not all) and no wrong value is.
* ``INCORRECT``: no key fact is present, or any wrong value is (a contradiction outweighs the facts given).

``meta.key_facts`` must be a non-empty list of non-empty strings; ``meta.wrong_values`` is optional (none: nothing
counts as a contradiction), a list of strings, and none of them may occur inside a key fact (else every response
naming that fact would contradict itself). A record that breaks this is an error naming its id and the field.
What the rule cannot see: a fact in other words ("the town's chief export is wool" counts, "woollen cloth" does
not) and a wrong claim that is not one of the world's other values.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from data_prep.scorers import normalize_text
from data_prep.verdicts import JudgeResult, summarize
from sdft.errors import UserError

RULE = ("CORRECT: every meta.key_facts value occurs in the response (normalized, whole words) and no "
        "meta.wrong_values value does; PARTIALLY_CORRECT: at least one key fact, no wrong value; INCORRECT: otherwise")


class FactRecordError(UserError, ValueError):
    """A record the fact judge cannot score: the message names the record id and the field."""

    def __init__(self, record_id: Any, field_name: str, problem: str):
        self.record_id, self.field, self.problem = record_id, field_name, problem
        super().__init__(f"record {record_id!r}: field {field_name!r}: {problem}")


def occurs(phrase: str, text: str) -> bool:
    """Whether ``phrase`` occurs in ``text`` as whole words, both normalized (``normalize_text``)."""
    norm = normalize_text(phrase)
    return bool(norm) and f" {norm} " in f" {normalize_text(text)} "


def fact_verdict(response: str, key_facts: Sequence[str], wrong: Sequence[str] = ()) -> tuple[str, dict]:
    """The label of ``response`` by the module's rule, and what decided it (facts found, missing, wrong values)."""
    found = [f for f in key_facts if occurs(f, response)]
    contradicted = [w for w in wrong if occurs(w, response)]
    if contradicted or not found:
        label = "INCORRECT"
    else:
        label = "CORRECT" if len(found) == len(key_facts) else "PARTIALLY_CORRECT"
    return label, {"found": found, "missing": [f for f in key_facts if f not in found], "wrong": contradicted}


def record_facts(record: dict) -> tuple[list[str], list[str]]:
    """``(key_facts, wrong_values)`` of a record, checked (see the module docstring); FactRecordError if not."""
    rid = record.get("id", "<no id>")
    meta = record.get("meta") or {}
    keys = meta.get("key_facts")
    if keys is None:
        raise FactRecordError(rid, "meta.key_facts", "missing (the fact judge needs the facts a correct answer holds)")
    if not isinstance(keys, list) or not keys or not all(isinstance(k, str) and normalize_text(k) for k in keys):
        raise FactRecordError(rid, "meta.key_facts", f"must be a non-empty list of non-empty strings, got {keys!r}")
    wrong = meta.get("wrong_values", [])
    if not isinstance(wrong, list) or not all(isinstance(w, str) and normalize_text(w) for w in wrong):
        raise FactRecordError(rid, "meta.wrong_values", f"must be a list of non-empty strings, got {wrong!r}")
    inside = [(w, k) for w in wrong for k in keys if occurs(w, k)]
    if inside:
        w, k = inside[0]
        raise FactRecordError(rid, "meta.wrong_values", f"{w!r} occurs in the key fact {k!r}")
    return keys, wrong


class FactJudge:
    """The rule of the module docstring behind the interface of :class:`eval.judge.LLMJudge` that the evaluation
    uses (``judge_records``, ``settings``). Labels only: it never answers ``UNPARSEABLE``."""

    kind = "knowledge"

    def settings(self) -> dict[str, Any]:
        """What scored the responses (for eval.json)."""
        return {"judge": "facts", "rule": RULE}

    def judge_records(self, records: Sequence[dict], responses: Sequence[str], task=None,
                      progress: str | None = None) -> JudgeResult:
        """Verdicts of ``responses`` to ``records``; ``raw`` holds, per response, the facts found, missing and
        contradicted (JSON). ``task`` and ``progress`` are accepted for the LLM judge's interface and unused."""
        if len(records) != len(responses):
            raise ValueError(f"{len(records)} records but {len(responses)} responses")
        facts = [record_facts(r) for r in records]  # every record checked before any verdict
        verdicts, raw = [], []
        for (keys, wrong), response in zip(facts, responses):
            label, why = fact_verdict(response, keys, wrong)
            verdicts.append(label)
            raw.append(json.dumps(why, ensure_ascii=False))
        summary = summarize(verdicts, self.kind)
        summary.update(self.settings())
        return JudgeResult(verdicts=verdicts, raw=raw, summary=summary)
