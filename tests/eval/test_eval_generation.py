import itertools

import pytest
import torch

from eval.generation import eos_token_ids, generate


@pytest.fixture(scope="module")
def tiny():
    from sdft.models import load_model_and_tokenizer

    return load_model_and_tokenizer("embedded:tiny-llama")


CONVS = [[{"role": "user", "content": "Hi"}],
         [{"role": "system", "content": "You call tools."}, {"role": "user", "content": "What is the weather in Paris today?"}],
         [{"role": "user", "content": "Action: get_weather"}]]


def test_batched_greedy_equals_one_by_one(tiny):
    model, tok = tiny
    batched = generate(model, tok, CONVS, max_new_tokens=10, batch_size=3)
    single = [generate(model, tok, [c], max_new_tokens=10, batch_size=1) for c in CONVS]
    assert batched.token_ids == [s.token_ids[0] for s in single]
    assert batched.texts == [s.texts[0] for s in single]
    eos = set(eos_token_ids(model, tok))
    for ids, count, done in zip(batched.token_ids, batched.n_tokens, batched.finished):
        assert count[0] == len(ids[0]) <= 10
        assert done[0] == (ids[0][-1] in eos if ids[0] else False)
        assert not eos & set(ids[0][:-1])  # nothing kept after an end token
    assert batched.settings["decoding"] == "greedy" and batched.settings["backend"] == "hf"


def test_sampling_n_and_seed(tiny):
    model, tok = tiny
    a = generate(model, tok, CONVS, greedy=False, n=4, max_new_tokens=8, seed=1)
    b = generate(model, tok, CONVS, greedy=False, n=4, max_new_tokens=8, seed=1)
    assert [len(t) for t in a.texts] == [4, 4, 4]
    assert a.token_ids == b.token_ids  # same seed, same samples
    distinct = {tuple(s) for per in a.token_ids for s in per}
    assert len(distinct) > 3  # temperature 1 on a random model: samples differ
    assert a.mean_tokens() == pytest.approx(sum(sum(c) for c in a.n_tokens) / 12)
    with pytest.raises(ValueError):
        generate(model, tok, CONVS, greedy=True, n=2)


def _hf_greedy(model, input_ids, attention, max_new_tokens, eos):
    """HF generate's greedy rows, each cut after its first EOS: the reference of sdft.sampling.greedy_decode."""
    from sdft.sequences import lengths_to_first_eos

    out = model.generate(input_ids=input_ids, attention_mask=attention, max_new_tokens=max_new_tokens,
                         eos_token_id=eos, pad_token_id=0, do_sample=False, temperature=None, top_p=None,
                         top_k=None)[:, input_ids.size(1):]
    lengths, _ = lengths_to_first_eos(out, eos)
    return [row[:n] for row, n in zip(out.tolist(), lengths)]


def test_greedy_decode_gives_generates_tokens_with_rows_ending_at_different_steps(tiny, varied_copy):
    """Rows leave the batch as they end; every row's tokens are still generate's, at every batch size."""
    from sdft.sampling import greedy_decode
    from sdft.sequences import pad_sequences

    model, tok = tiny
    model = varied_copy(model, seed=0)
    torch.manual_seed(0)
    prompts = [torch.randint(3, model.config.vocab_size, (n,)).tolist() for n in (3, 9, 5, 12, 7, 4)]
    input_ids, attention = pad_sequences(prompts, 0, side="left")
    free = _hf_greedy(model, input_ids, attention, 12, [10 ** 6])  # no row ends: every row runs 12 tokens
    # end tokens that end the rows at different steps, at least one row running to the limit (a greedy row is its
    # free row cut at its first end token)
    def lengths_with(ends):
        return {next((k + 1 for k, t in enumerate(row) if t in ends), 12) for row in free}

    candidates = sorted({t for row in free for t in row})
    eos = next(sorted(pair) for pair in itertools.combinations(candidates, 2)
               if len(lengths_with(set(pair))) >= 3 and 12 in lengths_with(set(pair)))
    reference = _hf_greedy(model, input_ids, attention, 12, eos)
    lengths = sorted({len(r) for r in reference})
    assert len(lengths) >= 3 and lengths[0] < 12 and lengths[-1] == 12, lengths  # the case this test is about
    assert greedy_decode(model, input_ids, attention, max_new_tokens=12, eos_token_ids=eos) == reference
    for size in (1, 4):  # other batch compositions: each row alike
        rows = []
        for start in range(0, len(prompts), size):
            ids, mask = pad_sequences(prompts[start:start + size], 0, side="left")
            rows += greedy_decode(model, ids, mask, max_new_tokens=12, eos_token_ids=eos)
        assert rows == reference
    assert greedy_decode(model, input_ids, attention, max_new_tokens=1, eos_token_ids=eos) == [r[:1] for r in free]


def test_evaluation_decodes_greedily_with_generate_when_a_logits_processor_is_on(tiny, monkeypatch):
    """A model whose generation config turns a processor on (a repetition penalty) is decoded by generate, whose
    tokens then differ; with the default config the fast path runs and gives generate's tokens."""
    import copy

    import sdft.sampling

    model, tok = tiny
    calls = []
    real = sdft.sampling.greedy_decode
    monkeypatch.setattr("eval.generation.greedy_decode", lambda *a, **k: calls.append(1) or real(*a, **k))
    fast = generate(model, tok, CONVS, max_new_tokens=10, batch_size=3)
    assert calls and sdft.sampling.plain_greedy(model.generation_config)
    penalized = copy.deepcopy(model)
    penalized.generation_config.repetition_penalty = 5.0
    assert not sdft.sampling.plain_greedy(penalized.generation_config)
    calls.clear()
    slow = generate(penalized, tok, CONVS, max_new_tokens=10, batch_size=3)
    assert not calls and slow.token_ids != fast.token_ids
