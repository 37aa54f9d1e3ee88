"""Oracle RAG (Table 1): the base model with the source text of the question in its context.

An evaluation-time method: the source text (``meta["article"]``, else ``meta["source"]``) is placed before
the question in the last user turn; system messages are kept.
"""

from __future__ import annotations

from sdft.prompts import source_text

RAG_TEMPLATE = (
    "Answer the question using the following source text.\n\n"
    "[Source]\n{source}\n\n"
    "[Question]\n{question}"
)


def rag_messages(record: dict, template: str = RAG_TEMPLATE) -> list[dict[str, str]]:
    prompt = record["prompt"]
    if not prompt or prompt[-1]["role"] != "user":
        raise ValueError("a prompt must end with a user turn")
    text = template.format(source=source_text(record), question=prompt[-1]["content"])
    return [dict(m) for m in prompt[:-1]] + [{"role": "user", "content": text}]
