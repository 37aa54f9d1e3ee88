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
