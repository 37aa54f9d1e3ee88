"""LLM judge for the open-ended tasks (medical, knowledge), with the paper's two prompts (Appendix B.3).

Any OpenAI-compatible chat-completions endpoint: ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY`` (never written
anywhere), model name configurable (default ``gpt-5-mini``, the paper's judge). Requests go through
:class:`sdft.llm.CachedChatClient`: a persistent SQLite cache keyed by (model, full request), bounded
concurrency, exponential backoff on 429 / 5xx.

Temperature 0 where the model allows it. The gpt-5 / o-series reasoning models reject any temperature
other than the default, so for those names no temperature is sent; for any other model, an HTTP 400 whose
message names ``temperature`` makes the client drop the parameter and retry (see ``sdft.llm``).

Verdict parsing (:func:`parse_verdict`): the reply is upper-cased, ``PARTIALLY CORRECT`` / ``PARTIALLY-CORRECT``
are read as ``PARTIALLY_CORRECT``, and the whole-word labels allowed for the task are collected. Exactly one
distinct label -> that label; none, several different ones, or a label the task does not allow ->
``UNPARSEABLE``. Unparseable verdicts are never guessed: they are counted (``n_unparseable``) and count
as not correct in every accuracy.

Prompts: the text of Appendix B.3 with the paper's line breaks; the PDF renders the apostrophe in
"model's" typographically, we send the ASCII apostrophe (the blocks are verbatim code in the paper).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from sdft.llm import CachedChatClient

DEFAULT_JUDGE_MODEL = "gpt-5-mini"
UNPARSEABLE = "UNPARSEABLE"

MEDICAL_PROMPT = """You are an expert medical evaluator assessing whether a model's
response correctly answers a medical question. Your task is to
compare the model's response to the reference answer and determine
if the model's response is:
1. CORRECT: The response contains the key medical information from
the reference answer, even if phrased differently or includes
additional correct medical details.
2. INCORRECT: The response is medically wrong, misses the main
point, or provides incorrect medical information.
Focus on medical accuracy and completeness, not on writing style or
verbosity.
[Medical Question]
{question}
[Reference Answer]
{reference_answer}
[Model Response]
{model_response}
Evaluate the model's response. Output ONLY one of: "CORRECT" or
"INCORRECT"."""

KNOWLEDGE_PROMPT = """You are an expert evaluator assessing whether a model's response
correctly answers a question.
Your task is to compare the model's response to the reference answer
and determine if the model's response is:
1. CORRECT: The response contains the key information from the
reference answer, even if phrased differently or includes additional
correct details.
2. PARTIALLY_CORRECT: The response contains most of the key
information from the reference answer but misses some details.
3. INCORRECT: The response is wrong, misses the main point, or
provides incorrect information.
Focus on factual accuracy and completeness, not on writing style or
verbosity.
[Question]
{question}
[Reference Answer]
{reference_answer}
[Model Response]
{model_response}
Evaluate the model's response. Output ONLY one of:
"CORRECT", "PARTIALLY_CORRECT", or "INCORRECT"."""

PROMPTS = {"medical": MEDICAL_PROMPT, "knowledge": KNOWLEDGE_PROMPT}
LABELS = {"medical": ("CORRECT", "INCORRECT"), "knowledge": ("CORRECT", "PARTIALLY_CORRECT", "INCORRECT")}
_LABEL_RE = re.compile(r"\b(PARTIALLY_CORRECT|INCORRECT|CORRECT)\b")


def judge_kind(task: str) -> str:
    """``medical`` or ``knowledge``: the judge prompt of a task (its registration in ``data_prep.tasks``)."""
    from data_prep.registry import get_task

    kind = get_task(task).judge
    if kind is None:
        raise KeyError(f"task {task!r} has a rule-based scorer, not a judge prompt")
    return kind


def parse_verdict(text: str, kind: str) -> str:
    up = re.sub(r"PARTIALLY[\s\-]+CORRECT", "PARTIALLY_CORRECT", (text or "").upper())
    found = set(_LABEL_RE.findall(up))
    if len(found) != 1:
        return UNPARSEABLE
    (label,) = found
    return label if label in LABELS[kind] else UNPARSEABLE


def build_prompt(kind: str, question: str, reference_answer: str, model_response: str) -> str:
    return PROMPTS[kind].format(question=question, reference_answer=reference_answer, model_response=model_response)


def is_reasoning_model(model: str) -> bool:
    """Models that accept only the default temperature (gpt-5 family, o-series)."""
    name = model.split("/")[-1].lower()
    return name.startswith(("gpt-5", "o1", "o3", "o4"))


@dataclass
class JudgeResult:
    verdicts: list[str]
    raw: list[str]
    summary: dict[str, Any]


def summarize(verdicts: Sequence[str], kind: str) -> dict[str, Any]:
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


class LLMJudge:
    def __init__(self, model: str = DEFAULT_JUDGE_MODEL, base_url: str | None = None, api_key: str | None = None,
                 cache_path: str | Path | None = None, max_concurrency: int = 8, max_retries: int = 6,
                 initial_backoff: float = 1.0, client: CachedChatClient | None = None):
        self.model = model
        self.temperature = None if is_reasoning_model(model) else 0.0
        self.client = client or CachedChatClient(
            model=model, base_url=base_url, api_key=api_key, cache_path=cache_path, max_concurrency=max_concurrency,
            max_retries=max_retries, initial_backoff=initial_backoff, temperature=self.temperature,
        )

    def settings(self) -> dict[str, Any]:
        """What ran (for eval.json): never the key."""
        return {"judge_model": self.model, "judge_base_url": self.client.base_url, "judge_temperature": self.temperature}

    def judge(self, kind: str, questions: Sequence[str], references: Sequence[str], responses: Sequence[str],
              progress: str | None = None) -> JudgeResult:
        if not len(questions) == len(references) == len(responses):
            raise ValueError("questions, references and responses must have the same length")
        convs = [[{"role": "user", "content": build_prompt(kind, q, str(r), m)}]
                 for q, r, m in zip(questions, references, responses)]
        replies = self.client.complete_many(convs, n=1, temperature=self.temperature, progress=progress)
        raw = [r[0] if r else "" for r in replies]
        verdicts = [parse_verdict(t, kind) for t in raw]
        summary = summarize(verdicts, kind)
        summary.update(self.settings())
        return JudgeResult(verdicts=verdicts, raw=raw, summary=summary)

    def judge_records(self, records: Sequence[dict], responses: Sequence[str], task: str | None = None,
                      progress: str | None = None) -> JudgeResult:
        """Judge responses to schema records: question = ``meta["question"]`` or the last user turn."""
        kind = judge_kind(task or records[0]["task"])
        questions = [r.get("meta", {}).get("question") or r["prompt"][-1]["content"] for r in records]
        references = [r["reference"] if isinstance(r["reference"], str) else json.dumps(r["reference"])
                      for r in records]
        return self.judge(kind, questions, references, responses, progress=progress)
