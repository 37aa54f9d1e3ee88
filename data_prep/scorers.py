"""Task scorers: pure functions ``(response, reference) -> float in {0, 1}``, and the format checks
``(response) -> bool`` of the tasks that have an answer format. A task names its own (``Task.score``,
``Task.format_check``: ``data_prep.tasks``).

Tool use (``tooluse``, ``embedded_tool``)
    The response is parsed for ReAct steps ``Action: <name>`` followed by ``Action Input: <JSON>``
    (ToolAlpaca's format). The golden reference is a list of calls. Two spellings are accepted:
    ours ``[{"name": str, "arguments": dict}]`` and the authors' eval files
    ``[{"Action": str, "Action_Input": "<JSON string>"}]``. A response is correct when the multiset of
    predicted calls equals the multiset of golden calls: function names compared exactly, arguments
    compared as parsed JSON values (dict equality, so key order does not matter; 1 and 1.0 are equal,
    "1" and 1 are not). The order of the
    calls themselves does not matter either (``ordered=True`` makes it matter). An ``Action Input``
    that is not valid JSON never matches (its raw text is kept for debugging).

Science (``science``, ``embedded_science``)
    The letter (A-D) inside the last ``<answer>...</answer>`` of the response, compared with the
    reference letter. Fallbacks, in order, when no well-formed tag pair exists:
      1. an unterminated last ``<answer>`` (generation cut at the stop token): its first letter token;
      2. none -- no other fallback: a response without an ``<answer>`` tag scores 0. The prompt asks
         for the tags, and crediting a bare letter elsewhere in the text would reward formatting failures.
    Inside the tag the content is stripped; ``B``, ``(B)``, ``B.``, ``B: text`` all read as B.

Medical and knowledge (``medical``, ``knowledge``): the LLM judge (``eval.judge``); not scored here.

Embedded knowledge (``embedded_knowledge``): the knowledge judge's labels, offline from its key facts
(``data_prep.fact_judge``); not scored here.

Embedded QA (``embedded_medical``): :func:`score_short_answer` -- the reference is a string answer; correct
when the normalized reference equals the normalized response or appears in it as a whole-word phrase
(normalization: lower case, accents removed, punctuation -> space, articles a/an/the dropped, whitespace
collapsed).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from typing import Any

# --------------------------------------------------------------------------------------------------
# Tool calls
# --------------------------------------------------------------------------------------------------

_ACTION_RE = re.compile(r"^[ \t]*Action[ \t]*:[ \t]*(?P<name>[^\n]*?)[ \t]*$", re.MULTILINE)
_INPUT_RE = re.compile(r"^[ \t]*Action[ \t]+Input[ \t]*:[ \t]*", re.MULTILINE)
_STOP_RE = re.compile(r"^[ \t]*(Observation|Thought|Final Answer|Action)[ \t]*:", re.MULTILINE)


def _first_json_value(text: str) -> tuple[Any, bool]:
    """Decode the JSON value at the start of ``text`` (after spaces, optional code fence). (value, ok)."""
    text = text.lstrip()
    if text.startswith("```"):
        text = re.sub(r"^```[a-zA-Z]*[ \t]*\n?", "", text)
    try:
        value, _ = json.JSONDecoder().raw_decode(text)
        return value, True
    except json.JSONDecodeError:
        return None, False


def parse_tool_calls(response: str) -> list[dict[str, Any]]:
    """Every ``Action:`` / ``Action Input:`` pair of a ReAct-style response, in order.

    Returns ``[{"name": str, "arguments": <parsed JSON or None>, "raw": str, "valid": bool}]``. An
    ``Action:`` with no ``Action Input:`` before the next ``Action:`` gets ``arguments=None``, ``valid=False``.
    """
    calls = []
    actions = list(_ACTION_RE.finditer(response))
    for i, m in enumerate(actions):
        end = actions[i + 1].start() if i + 1 < len(actions) else len(response)
        segment = response[m.end():end]
        im = _INPUT_RE.search(segment)
        name = m.group("name").strip().strip("`").strip()
        if im is None:
            calls.append({"name": name, "arguments": None, "raw": "", "valid": False})
            continue
        rest = segment[im.end():]
        stop = _STOP_RE.search(rest)
        raw = (rest[: stop.start()] if stop else rest).strip()
        value, ok = _first_json_value(rest)
        calls.append({"name": name, "arguments": value, "raw": raw, "valid": ok})
    return calls


def normalize_golden_calls(reference: Any) -> list[dict[str, Any]]:
    """Golden calls as ``[{"name", "arguments"}]`` from our spelling or the authors' (Action / Action_Input)."""
    if isinstance(reference, dict):
        reference = [reference]
    out = []
    for call in reference:
        if "name" in call:
            name, args = call["name"], call.get("arguments", {})
        elif "Action" in call:
            name, args = call["Action"], call.get("Action_Input", "{}")
        else:
            raise ValueError(f"a golden call needs 'name'/'arguments' or 'Action'/'Action_Input': {call!r}")
        if isinstance(args, str):
            args = json.loads(args) if args.strip() else {}
        out.append({"name": str(name).strip(), "arguments": args})
    return out


def _normalize_numbers(value: Any) -> Any:
    """JSON numbers compare by value: 1.0 and 1 are the same number (booleans stay booleans)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _normalize_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalize_numbers(v) for v in value]
    return value


def _canonical(value: Any) -> str:
    return json.dumps(_normalize_numbers(value), sort_keys=True, ensure_ascii=False)


def has_tool_call_format(response: str) -> bool:
    """Whether the response is a well-formed call, whatever its content: at least one ``Action:`` line, and every
    call's ``Action Input`` valid JSON (what :func:`score_tool_call` needs before it compares anything)."""
    calls = parse_tool_calls(response)
    return bool(calls) and all(c["valid"] for c in calls)


def score_tool_call(response: str, reference: Any, ordered: bool = False) -> float:
    """1.0 when the response's calls equal the golden calls (see module doc), else 0.0."""
    golden = normalize_golden_calls(reference)
    predicted = parse_tool_calls(response)
    if not predicted or any(not c["valid"] for c in predicted):
        return 0.0
    pred_keys = [(c["name"], _canonical(c["arguments"])) for c in predicted]
    gold_keys = [(c["name"], _canonical(c["arguments"])) for c in golden]
    if ordered:
        return float(pred_keys == gold_keys)
    return float(Counter(pred_keys) == Counter(gold_keys))


# --------------------------------------------------------------------------------------------------
# Multiple choice letter
# --------------------------------------------------------------------------------------------------

_ANSWER_TAG_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_OPEN_TAG_RE = re.compile(r"<answer>(.*)$", re.DOTALL | re.IGNORECASE)
_LETTER_RE = re.compile(r"^\W*([A-Za-z])(?![A-Za-z])")


def extract_answer_letter(response: str, letters: str = "ABCD") -> str | None:
    """The answer letter of a response (module doc: last closed tag; else an unterminated last tag; else None)."""
    closed = _ANSWER_TAG_RE.findall(response)
    if closed:
        content = closed[-1]
    else:
        m = _OPEN_TAG_RE.search(response.rsplit("</answer>", 1)[-1])
        if m is None:
            return None
        content = m.group(1)
    m = _LETTER_RE.match(content.strip())
    if m is None:
        return None
    letter = m.group(1).upper()
    return letter if letter in letters else None


def has_answer_letter(response: str) -> bool:
    """Whether an answer letter can be read from the response (:func:`extract_answer_letter`), right or wrong."""
    return extract_answer_letter(response) is not None


def score_letter(response: str, reference: Any) -> float:
    ref = str(reference).strip().upper()
    return float(extract_answer_letter(response) == ref)


# --------------------------------------------------------------------------------------------------
# Short free-text answers (embedded QA)
# --------------------------------------------------------------------------------------------------


def normalize_text(text: str) -> str:
    """Lower case, accents stripped, punctuation to spaces, articles dropped, whitespace collapsed."""
    text = unicodedata.normalize("NFKD", str(text))
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    text = re.sub(r"[^\w\s]", " ", text)
    words = [w for w in text.split() if w not in ("a", "an", "the")]
    return " ".join(words)


def score_short_answer(response: str, reference: Any) -> float:
    """1.0 when the normalized reference string equals the normalized response or occurs in it as whole words.

    ``reference`` is a string (or a list of acceptable strings). Meant for canonical short answers
    (a number, a name, a term): "The capital is Paris." matches "paris"; "Parisian" does not.
    """
    refs = reference if isinstance(reference, (list, tuple)) else [reference]
    resp = f" {normalize_text(response)} "
    for ref in refs:
        norm = normalize_text(ref)
        if norm and f" {norm} " in resp:
            return 1.0
    return 0.0
