"""The ``file:`` source of general prompts (the offline mirror of the hub prompt set)."""

import json

import pytest

from data_prep.general_prompts import load_general_prompts


def test_file_source_reads_chat_rows_and_is_seeded(tmp_path):
    rows = [{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": f"hello {i}"},
                          {"role": "assistant", "content": "hi"}]} for i in range(10)]
    rows += [{"prompt": "plain text prompt"}, {"messages": [{"role": "assistant", "content": "no user"}]}]
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    every = load_general_prompts(f"file:{path}")
    assert len(every) == 11  # the row without a user turn is skipped (and logged)
    assert every[0] == [{"role": "system", "content": "s"}, {"role": "user", "content": "hello 0"}]
    assert every[-1] == [{"role": "user", "content": "plain text prompt"}]
    a, b = load_general_prompts(f"file:{path}", n=4, seed=1), load_general_prompts(f"file:{path}", n=4, seed=1)
    assert a == b and len(a) == 4 and a != load_general_prompts(f"file:{path}", n=4, seed=2)


def test_file_source_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_general_prompts(f"file:{tmp_path / 'absent.jsonl'}")
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps([{"messages": []}]))
    with pytest.raises(ValueError, match="no usable user prompts"):
        load_general_prompts(f"file:{empty}")
    with pytest.raises(ValueError, match="file:<path>"):
        load_general_prompts("ftp:x")
