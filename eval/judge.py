"""LLM judge for the open-ended tasks (medical, knowledge), with the paper's two prompts (Appendix B.3).

Any OpenAI-compatible chat-completions endpoint: ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY`` (never written
anywhere), model name configurable (default ``gpt-5-mini``, the paper's judge). Requests go through
:class:`sdft.llm.CachedChatClient`: a persistent SQLite cache keyed by (model, full request), bounded
concurrency, exponential backoff on 429 / 5xx.

Temperature 0 where the model allows it. The gpt-5 / o-series reasoning models reject any temperature
other than the default, so for those names no temperature is sent; for any other model, an HTTP 400 whose
message names ``temperature`` makes the client drop the parameter and retry (see ``sdft.llm``).

Verdict parsing (:func:`parse_verdict`): both prompts end with ``Output ONLY one of: "CORRECT" or "INCORRECT"``
(knowledge: also ``"PARTIALLY_CORRECT"``), so a verdict is read only from a reply in that format; nothing is
guessed from prose. A *label* below is a piece of text that, once cleaned, is one of CORRECT, INCORRECT or
PARTIALLY_CORRECT; cleaning strips surrounding whitespace, quotes (``" ' “ ” ‘ ’``), markdown emphasis and code
wrappers (``*``, ``_``, backticks, code fences) and one trailing period, ignores case, and reads
``PARTIALLY CORRECT`` / ``PARTIALLY-CORRECT`` as ``PARTIALLY_CORRECT``.

1. The whole reply is a label -> that label (``CORRECT``, `` incorrect.``, ``**INCORRECT**``, ``"Partially correct"``).
2. Otherwise the reply's *verdict lines* are read: lines that are a label, or ``Verdict: <label>`` /
   ``Final verdict: <label>`` (e.g. a label alone on the last line after some reasoning). The verdict is their
   label when (a) there is at least one, (b) they all give the same label, and (c) the other lines neither name
   a different label nor negate one (``not``, ``no``, ``never``, ``nor`` or ``n't`` right before a label,
   optionally with ``fully`` / ``entirely`` / ``completely`` / ``quite`` / ``totally`` between).
3. Anything else is ``UNPARSEABLE``: an empty reply, prose (``The response is NOT CORRECT.``), negations
   (``not incorrect``), hedges (``I cannot say whether it is correct``, ``probably correct``), two different
   labels, and a label the task does not allow (``PARTIALLY_CORRECT`` for medical).

Labels are whole words: ``correctly`` is not ``CORRECT``, ``INCORRECT`` does not contain it. Unparseable verdicts
are never guessed: they are counted (``n_unparseable``), count as not correct in every accuracy, and
:meth:`LLMJudge.judge` prints how many there were with the first few raw replies.

Time: each request waits at most ``timeout`` seconds per attempt and ``deadline`` seconds in all (defaults
:data:`DEFAULT_JUDGE_TIMEOUT_S`, :data:`DEFAULT_JUDGE_DEADLINE_S`; ``--judge-timeout`` / ``--judge-deadline``
of ``python -m eval.run``); past the deadline :class:`sdft.llm.DeadlineExceeded` names the endpoint (redacted)
and how many requests completed. The recorded endpoint (``judge_base_url``) is :func:`sdft.llm.redact_url` of it.

Prompts: the text of Appendix B.3 with the paper's line breaks; the PDF renders the apostrophe in
"model's" typographically, we send the ASCII apostrophe (the blocks are verbatim code in the paper).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, Sequence

from data_prep.task import Task
from data_prep.verdicts import LABELS, UNPARSEABLE, JudgeResult, summarize
from sdft.llm import CachedChatClient

DEFAULT_JUDGE_MODEL = "gpt-5-mini"

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
_LABEL_RE = re.compile(r"\b(PARTIALLY_CORRECT|INCORRECT|CORRECT)\b")
_ALL_LABELS = ("CORRECT", "PARTIALLY_CORRECT", "INCORRECT")
_WRAPPERS = " \t\r\n*_`\"'“”‘’"
_VERDICT_PREFIX = re.compile(r"^[*_\s]*(?:FINAL\s+)?VERDICT[*_\s]*:(.*)$")
_NEGATED_LABEL = re.compile(r"(?:\b(?:NOT|NO|NEVER|NOR)|N['’]T)[\s*_`\"'“”‘’]+"
                            r"(?:(?:FULLY|ENTIRELY|COMPLETELY|QUITE|TOTALLY|WHOLLY)[\s*_`\"'“”‘’]+)?"
                            r"(?:PARTIALLY_CORRECT|INCORRECT|CORRECT)\b")
DEFAULT_JUDGE_TIMEOUT_S = 60.0
DEFAULT_JUDGE_DEADLINE_S = 180.0


def _normalize(text: str) -> str:
    return re.sub(r"PARTIALLY[\s\-]+CORRECT", "PARTIALLY_CORRECT", text.upper())


def _as_label(text: str) -> str | None:
    """The label ``text`` is once cleaned (wrappers, one trailing period), else None; ``text`` is normalized."""
    s = text.strip(_WRAPPERS)
    if s.endswith("."):
        s = s[:-1].strip(_WRAPPERS)
    return s if s in _ALL_LABELS else None


def _verdict_line(line: str) -> str | None:
    """The label of a verdict line (a label, or ``Verdict: <label>``), else None; ``line`` is normalized."""
    m = _VERDICT_PREFIX.match(line)
    return _as_label(m.group(1) if m else line)


def parse_verdict(text: str, kind: str) -> str:
    """The judge's label in ``text``, or ``UNPARSEABLE``: the rule of the module docstring."""
    up = _normalize(text or "")
    label = _as_label(up)
    if label is None:
        lines = [line for line in up.splitlines() if line.strip()]
        found = {i: _verdict_line(line) for i, line in enumerate(lines)}
        labels = {v for v in found.values() if v is not None}
        if len(labels) != 1:
            return UNPARSEABLE
        (label,) = labels
        prose = "\n".join(line for i, line in enumerate(lines) if found[i] is None)
        if set(_LABEL_RE.findall(prose)) - {label} or _NEGATED_LABEL.search(prose):
            return UNPARSEABLE
    return label if label in LABELS[kind] else UNPARSEABLE


def unparseable_report(verdicts: Sequence[str], raw: Sequence[str], shown: int = 3, width: int = 120) -> str | None:
    """One warning line when some verdicts are unparseable: how many, and the first ``shown`` raw replies
    (each cut to ``width`` characters); None when there are none."""
    bad = [r for v, r in zip(verdicts, raw) if v == UNPARSEABLE]
    if not bad:
        return None
    cut = [r if len(r) <= width else r[:width] + "..." for r in bad[:shown]]
    return (f"[judge] warning: {len(bad)} of {len(verdicts)} verdicts unparseable (counted as not correct); "
            f"first raw replies: " + "; ".join(repr(c) for c in cut))


def build_prompt(kind: str, question: str, reference_answer: str, model_response: str) -> str:
    return PROMPTS[kind].format(question=question, reference_answer=reference_answer, model_response=model_response)


def is_reasoning_model(model: str) -> bool:
    """Models that accept only the default temperature (gpt-5 family, o-series)."""
    name = model.split("/")[-1].lower()
    return name.startswith(("gpt-5", "o1", "o3", "o4"))


class LLMJudge:
    """``timeout``: seconds one attempt waits for the endpoint's reply; ``deadline``: seconds one verdict may take,
    all attempts and back-off waits together (then :class:`sdft.llm.DeadlineExceeded`)."""

    def __init__(self, model: str = DEFAULT_JUDGE_MODEL, base_url: str | None = None, api_key: str | None = None,
                 cache_path: str | Path | None = None, max_concurrency: int = 8, max_retries: int = 6,
                 initial_backoff: float = 1.0, client: CachedChatClient | None = None,
                 timeout: float | None = None, deadline: float | None = None):
        self.model = model
        self.temperature = None if is_reasoning_model(model) else 0.0
        self.client = client or CachedChatClient(
            model=model, base_url=base_url, api_key=api_key, cache_path=cache_path, max_concurrency=max_concurrency,
            max_retries=max_retries, initial_backoff=initial_backoff, temperature=self.temperature,
            timeout=timeout or DEFAULT_JUDGE_TIMEOUT_S, deadline=deadline or DEFAULT_JUDGE_DEADLINE_S,
        )

    def settings(self) -> dict[str, Any]:
        """What ran (for eval.json): the endpoint without credentials or query string, never the key."""
        return {"judge_model": self.model, "judge_base_url": self.client.base_url, "judge_temperature": self.temperature,
                "judge_timeout_s": self.client.timeout, "judge_deadline_s": self.client.deadline}

    def judge(self, kind: str, questions: Sequence[str], references: Sequence[str], responses: Sequence[str],
              progress: str | None = None) -> JudgeResult:
        """Verdicts of ``responses``; prints a warning line (:func:`unparseable_report`) when some are unparseable."""
        if not len(questions) == len(references) == len(responses):
            raise ValueError("questions, references and responses must have the same length")
        convs = [[{"role": "user", "content": build_prompt(kind, q, str(r), m)}]
                 for q, r, m in zip(questions, references, responses)]
        replies = self.client.complete_many(convs, n=1, temperature=self.temperature, progress=progress)
        raw = [r[0] if r else "" for r in replies]
        verdicts = [parse_verdict(t, kind) for t in raw]
        warning = unparseable_report(verdicts, raw)
        if warning:
            print(warning, file=sys.stderr, flush=True)
        summary = summarize(verdicts, kind)
        summary.update(self.settings())
        return JudgeResult(verdicts=verdicts, raw=raw, summary=summary)

    def judge_records(self, records: Sequence[dict], responses: Sequence[str], task: Task,
                      progress: str | None = None) -> JudgeResult:
        """Judge responses to ``task``'s records with its judge prompt (``Task.judge``): question =
        ``meta["question"]`` or the last user turn."""
        if task.judge is None:
            raise ValueError(f"task {task.name!r} has a rule-based scorer, not a judge prompt")
        kind = task.judge
        questions = [r.get("meta", {}).get("question") or r["prompt"][-1]["content"] for r in records]
        references = [r["reference"] if isinstance(r["reference"], str) else json.dumps(r["reference"])
                      for r in records]
        return self.judge(kind, questions, references, responses, progress=progress)


def judge_for(task: Task, judge_model: str | None = None, timeout: float | None = None,
              deadline: float | None = None):
    """The judge of a judge-scored task when none is given: the task's ``local_judge`` (``Task.local_judge``)
    unless a ``judge_model`` is named, else an :class:`LLMJudge` of ``judge_model`` (default
    :data:`DEFAULT_JUDGE_MODEL`) with the given time limits. So an offline task stays offline by default and the LLM
    judge is one option away."""
    if task.judge is None:
        raise KeyError(f"task {task.name!r} has a rule-based scorer, not a judge")
    if judge_model is None and task.local_judge is not None:
        return task.local_judge()
    return LLMJudge(model=judge_model or DEFAULT_JUDGE_MODEL, timeout=timeout, deadline=deadline)
