import pytest

from eval.rag import rag_messages


def _rec(meta):
    return {"id": "k1", "task": "knowledge", "prompt": [{"role": "system", "content": "Be brief."},
                                                       {"role": "user", "content": "When did the quake hit?"}],
            "demonstration": "", "reference": "28 March 2025", "meta": meta}


def test_rag_prompt_has_source_and_question():
    msgs = rag_messages(_rec({"article": "The 2025 Myanmar earthquake struck on 28 March 2025."}))
    assert msgs[0] == {"role": "system", "content": "Be brief."}
    assert msgs[-1]["role"] == "user"
    body = msgs[-1]["content"]
    assert "The 2025 Myanmar earthquake struck on 28 March 2025." in body and "When did the quake hit?" in body
    assert body.index("struck on") < body.index("When did")
    assert "only source" in rag_messages(_rec({"source": "only source"}))[-1]["content"]


def test_rag_needs_source():
    with pytest.raises(KeyError, match="article"):
        rag_messages(_rec({}))
