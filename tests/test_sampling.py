"""The rollout sampler's decode loop (sdft.sampling), checked against exact probabilities and full forwards."""

import pytest
import torch
from transformers import GenerationConfig

from sdft.sampling import plain_sampling, sample_categorical, sample_with_logprobs


def test_inverse_cdf_draws_follow_the_probabilities_and_never_pick_zeros():
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.2, 0.3], [0.1, 0.1, 0.1, 0.1, 0.6]])
    n = 20000
    gen = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_categorical(probs * 3.0, gen) for _ in range(n)])  # unnormalised rows are fine
    for row in range(2):
        freq = torch.bincount(draws[:, row], minlength=5).double() / n
        sigma = (probs[row].double() * (1 - probs[row].double()) / n).sqrt()
        assert ((freq - probs[row].double()).abs() <= 5 * sigma + 1e-12).all(), (row, freq)
    assert not torch.isin(draws[:, 0], torch.tensor([0, 2])).any()


@pytest.fixture(scope="module")
def tiny_lm():
    from sdft.models import build_tiny_model, build_tiny_tokenizer

    return build_tiny_model(build_tiny_tokenizer(), seed=1).eval()


def _left_pad(rows, pad_id):
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def _reference_logps(model, prompt, completion, temperature, banned=(), banned_steps=0):
    """log-probabilities of ``completion`` after ``prompt`` from one forward of the unpadded row, no cache."""
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt) - 1: -1].float() / temperature
    logits[:banned_steps, list(banned)] = float("-inf")
    return torch.log_softmax(logits, -1).gather(1, torch.tensor(completion)[:, None]).squeeze(1)


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_decode_loop_log_probs_equal_a_full_forward_of_each_unpadded_row(tiny_lm, temperature):
    """Left padding, positions, the KV cache and the temperature are right when the kept log-probability of every
    drawn token equals the one an uncached forward of that row alone (no padding) assigns to it; each row ends at
    its first EOS (kept), is padded after it with log-probability 0, and the loop stops once every row has ended."""
    prompts = [[5, 17, 40, 41, 9], [7, 300], [11, 12, 13, 14, 15, 16, 17, 18]]
    eos = list(range(100, 116))  # 1/32 of the near-uniform random model's mass: P(a row runs 300 steps) ~ 7e-5
    ids, mask = _left_pad(prompts, pad_id=0)
    torch.manual_seed(3)
    completions, logps = sample_with_logprobs(tiny_lm, ids, mask, max_new_tokens=300, eos_token_ids=eos,
                                              pad_token_id=0, temperature=temperature)
    assert completions.shape == logps.shape
    ended_at = []
    for prompt, row, lp in zip(prompts, completions.tolist(), logps):
        n = next((i + 1 for i, t in enumerate(row) if t in eos), len(row))
        ended_at.append(n)
        torch.testing.assert_close(lp[:n], _reference_logps(tiny_lm, prompt, row[:n], temperature), atol=1e-4, rtol=0)
        assert row[n:] == [0] * (len(row) - n) and (lp[n:] == 0).all()
    assert max(ended_at) == completions.size(1) < 300  # stopped when the last row ended, not at max_new_tokens
    assert len(set(ended_at)) > 1  # the rows really ended at different steps (the padding path ran)


def test_min_new_tokens_bans_eos_and_the_log_probs_are_those_of_the_banned_distribution(tiny_lm):
    prompts = [[5, 17, 40], [7, 300, 301, 302]]
    eos = list(range(100, 260))
    ids, mask = _left_pad(prompts, pad_id=0)
    torch.manual_seed(4)
    completions, logps = sample_with_logprobs(tiny_lm, ids, mask, max_new_tokens=12, eos_token_ids=eos,
                                              pad_token_id=0, min_new_tokens=6)
    for prompt, row, lp in zip(prompts, completions.tolist(), logps):
        assert not set(row[:6]) & set(eos)
        n = next((i + 1 for i, t in enumerate(row) if t in eos), len(row))
        ref = _reference_logps(tiny_lm, prompt, row[:n], 1.0, banned=eos, banned_steps=6)
        torch.testing.assert_close(lp[:n], ref, atol=1e-4, rtol=0)


def test_plain_sampling_accepts_temperature_only_and_sends_everything_else_to_generate():
    base = dict(max_new_tokens=8, do_sample=True, temperature=0.7, top_k=0, top_p=1.0, repetition_penalty=1.0,
                pad_token_id=0, eos_token_id=[1, 2], min_new_tokens=3, disable_compile=True)
    assert plain_sampling(GenerationConfig(**base))
    for change in (dict(top_k=50), dict(top_p=0.9), dict(min_p=0.1), dict(repetition_penalty=1.2),
                   dict(no_repeat_ngram_size=2), dict(bad_words_ids=[[3]]), dict(do_sample=False),
                   dict(max_new_tokens=None, max_length=20)):
        assert not plain_sampling(GenerationConfig(**{**base, **change})), change
