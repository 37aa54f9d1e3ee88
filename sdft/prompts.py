"""Student and teacher contexts (CtxS and CtxT of Algorithm 1).

The student sees the query only. The teacher is the same network conditioned on the query and an
expert demonstration through the paper's template (Section 3):

    <Question>
    This is an example for a response to the question:
    <Demonstration>
    Now answer with a response of your own, including the thinking process:

Templates are named so every result records which one ran. ``paper`` is the verbatim template and
the default of the ``paper`` preset. ``same_format`` changes only the last sentence; SmolLM2-135M
follows the paper's wording poorly. ``strict_format`` (the ``mini`` preset's) also rewords the sentence before the
demonstration and asks for nothing after the answer: with ``same_format``, SmolLM2's teacher finishes the answer and
then repeats "This is an example for a response to the question:" and the demonstration, which SDFT teaches the
student to copy (the teacher-view table in ``experiments/results/table5_mini/`` measures the three).
``reference`` frames the privileged context as reference material rather than as an example response, so that it
reads right for every teacher context of the knowledge experiment (Figure 7): an answer, the source text, or both.
``none`` is the question alone: with an empty demonstration the teacher's context equals the student's.
It is the context of the frozen-base teacher of the SFT + re-invoke baseline (``sdft.baselines.reinvoke``);
TRL requires both placeholders in a template, so it keeps ``{demonstration}`` and is meant for empty ones.

Records follow the one schema of the repository (``data_prep.schema``): ``prompt`` is a list of chat
messages ending with the user's query; ``demonstration`` is a string.
"""

from __future__ import annotations

from typing import Any

Messages = list[dict[str, str]]

TEACHER_TEMPLATES: dict[str, str] = {
    "paper": (
        "{question}\n\n"
        "This is an example for a response to the question:\n"
        "{demonstration}\n\n"
        "Now answer with a response of your own, including the thinking process:"
    ),
    "same_format": (
        "{question}\n\n"
        "This is an example for a response to the question:\n"
        "{demonstration}\n\n"
        "Now answer with a response of your own, in exactly the same format as the example:"
    ),
    "strict_format": (
        "{question}\n\n"
        "Here is an example of a correct response:\n"
        "{demonstration}\n\n"
        "Now give your own response in exactly the same format, and nothing else:"
    ),
    "reference": (
        "{question}\n\n"
        "Reference material:\n"
        "{demonstration}\n\n"
        "Now give your own response, and nothing else:"
    ),
    "none": "{question}{demonstration}",
}

# What the teacher is conditioned on (Figure 7): the demonstration (``answer``, every task's default), the record's
# source text (``meta.article`` / ``meta.source``: the knowledge task's article), or both.
TEACHER_CONTEXTS = ("answer", "text", "text+answer")


def get_template(name_or_text: str) -> str:
    """A template by name, or a literal template holding ``{question}`` and ``{demonstration}``."""
    if name_or_text in TEACHER_TEMPLATES:
        return TEACHER_TEMPLATES[name_or_text]
    if "{question}" in name_or_text and "{demonstration}" in name_or_text:
        return name_or_text
    raise ValueError(
        f"teacher template {name_or_text!r} is neither a known name {sorted(TEACHER_TEMPLATES)} "
        "nor a text with {question} and {demonstration} placeholders"
    )


def to_trl_template(template: str) -> str:
    """The same template in the placeholders TRL's SDFTTrainer uses (``{prompt}``, ``{privileged_context}``)."""
    return get_template(template).replace("{question}", "{prompt}").replace("{demonstration}", "{privileged_context}")


def _split_query(messages: Messages) -> tuple[Messages, str]:
    if not messages or messages[-1].get("role") != "user":
        raise ValueError("a prompt must be a non-empty list of chat messages ending with a user turn")
    return list(messages[:-1]), messages[-1]["content"]


def student_messages(record: dict[str, Any]) -> Messages:
    """CtxS(x): the query exactly as the task states it, no demonstration."""
    _split_query(record["prompt"])
    return [dict(m) for m in record["prompt"]]


def source_text(record: dict[str, Any]) -> str:
    """The raw text a record's question is about: ``meta["article"]``, else ``meta["source"]``."""
    meta = record.get("meta") or {}
    text = meta.get("article") or meta.get("source")
    if not isinstance(text, str) or not text.strip():
        raise KeyError(f"record {record.get('id')!r}: this teacher context needs the source text in meta.article or "
                       "meta.source, and the record has neither")
    return text


def teacher_demonstration(record: dict[str, Any], context: str = "answer") -> str:
    """The privileged context of one record: its demonstration (``answer``), its source text (``text``), or the
    source text followed by the demonstration (``text+answer``)."""
    if context == "answer":
        return record["demonstration"]
    if context == "text":
        return source_text(record)
    if context == "text+answer":
        return f"{source_text(record)}\n\nA correct response: {record['demonstration']}"
    raise ValueError(f"teacher context {context!r} is not one of {TEACHER_CONTEXTS}")


def teacher_messages(record: dict[str, Any], template: str = "paper", demonstration: str | None = None) -> Messages:
    """CtxT(x, c): system messages kept, the last user turn replaced by the filled template."""
    head, question = _split_query(record["prompt"])
    demo = record["demonstration"] if demonstration is None else demonstration
    text = get_template(template).format(question=question, demonstration=demo)
    return [dict(m) for m in head] + [{"role": "user", "content": text}]


def render(tokenizer, messages: Messages) -> str:
    """The prompt string the model sees, through its chat template, ending with the assistant header."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
