"""The rollout samplers -- sdft.sampling's decode loop and HF generate with sdft.speedups' recorder -- checked
against exact probabilities, HF's own warpers and full forwards."""

import pytest
import torch
from transformers import (
    GenerationConfig,
    GenerationMixin,
    LlamaConfig,
    PreTrainedModel,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from transformers.modeling_outputs import CausalLMOutputWithPast

from sdft.sampling import (
    plain_sampling,
    sample_categorical,
    sample_with_logprobs,
    sampling_log_probs,
    split_warpers,
    truncates,
)
from sdft.speedups import generate_with_logprobs


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


def test_plain_sampling_accepts_temperature_top_k_top_p_and_sends_everything_else_to_generate():
    base = dict(max_new_tokens=8, do_sample=True, temperature=0.7, top_k=0, top_p=1.0, repetition_penalty=1.0,
                pad_token_id=0, eos_token_id=[1, 2], min_new_tokens=3, disable_compile=True)
    assert plain_sampling(GenerationConfig(**base))
    assert plain_sampling(GenerationConfig(**{**base, "top_k": 50, "top_p": 0.9}))
    for change in (dict(min_p=0.1), dict(typical_p=0.9), dict(repetition_penalty=1.2),
                   dict(no_repeat_ngram_size=2), dict(bad_words_ids=[[3]]), dict(do_sample=False),
                   dict(max_new_tokens=None, max_length=20)):
        assert not plain_sampling(GenerationConfig(**{**base, **change})), change
    assert not truncates(GenerationConfig(**base))
    for change in (dict(top_k=50), dict(top_p=0.9), dict(min_p=0.1)):
        assert truncates(GenerationConfig(**{**base, **change})), change


# ------------------------------------------------------------------ top-k / top-p
class BigramLM(PreTrainedModel, GenerationMixin):
    """A language model whose next-token logits are a fixed row of ``table`` [V, V], picked by the last token: the
    distribution of every step is known exactly, whatever the cache, padding or position."""

    config_class = LlamaConfig

    def __init__(self, table: torch.Tensor):
        super().__init__(LlamaConfig(vocab_size=table.size(0), hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                                     num_attention_heads=1, num_key_value_heads=1))
        self.table = torch.nn.Parameter(table.clone(), requires_grad=False)

    def forward(self, input_ids=None, past_key_values=None, **kwargs):
        return CausalLMOutputWithPast(logits=self.table[input_ids], past_key_values=past_key_values)


# Row 0 (the prompt's token): probabilities 0.4, 0.25, 0.15, 0.1, 0.05, 0.03, 0.015, 0.005 in a shuffled order, so
# that top-p 0.75 keeps 3 tokens (mass 0.8, far from a boundary) and top-k 3 the same 3; row 1: ties (two tokens at
# the top, three tied at the third logit) to check HF's tie rules; the other rows are random.
_PROBS = torch.tensor([0.05, 0.4, 0.015, 0.1, 0.25, 0.005, 0.15, 0.03])
EOS = 7


def _table() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    table = torch.randn(8, 8, generator=g) * 1.5
    table[0] = _PROBS.log() + 3.0  # logits, not log-probabilities: any shift
    table[1] = torch.tensor([2.0, 2.0, 0.5, 1.0, 1.0, 1.0, -1.0, 0.0])
    return table


# (temperature, top_k, top_p): each warper alone, both, with a temperature, and the ties of row 1 at top-k 3
WARPS = [(1.0, 3, 1.0), (1.0, 0, 0.75), (0.7, 4, 0.9), (1.3, 5, 0.6), (0.8, 0, 0.95)]


def _hf_distribution(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """The distribution HF samples from, computed with transformers' own warpers, in generate's order."""
    scores = logits.clone().float()
    for warper in ([TemperatureLogitsWarper(temperature)] if temperature != 1.0 else []) \
            + ([TopKLogitsWarper(top_k)] if top_k else []) + ([TopPLogitsWarper(top_p)] if top_p < 1.0 else []):
        scores = warper(None, scores)
    return scores.softmax(-1)


def test_truncated_log_probs_equal_hf_warpers_including_ties():
    """sampling_log_probs is HF's temperature -> top-k -> top-p, renormalized: same kept tokens (ties included: rows
    of integer logits tie everywhere, at the top-k and at the top-p boundary) and same log-probabilities."""
    g = torch.Generator().manual_seed(1)
    rows = torch.cat([torch.randn(64, 50, generator=g) * 2, torch.randint(0, 4, (64, 50), generator=g).float()])
    for temperature, top_k, top_p in WARPS + [(1.0, 7, 1.0), (1.0, 0, 0.5), (0.6, 10, 0.8)]:
        ours = sampling_log_probs(rows, temperature, top_k, top_p)
        ref = _hf_distribution(rows, temperature, top_k, top_p)
        assert torch.equal(torch.isfinite(ours), ref > 0), (temperature, top_k, top_p)
        kept = ref > 0
        torch.testing.assert_close(ours[kept], ref[kept].log(), atol=1e-5, rtol=0)
        if top_k or top_p < 1.0:
            assert (~kept).any()  # the truncation really dropped tokens
    ties = _table()[1:2]
    assert torch.isfinite(sampling_log_probs(ties, top_k=3)).sum() == 5  # all three tied at the third logit stay
    assert torch.isfinite(sampling_log_probs(ties, top_k=1)).sum() == 2  # and both tied at the top


@pytest.mark.parametrize("temperature,top_k,top_p", WARPS)
def test_decode_loop_draws_from_the_truncated_renormalized_distribution(temperature, top_k, top_p):
    """20000 first tokens after the same prompt: each token's frequency is within 5 binomial standard deviations of
    its probability under HF's warpers (per-token false alarm ~6e-7; at these settings the untruncated distribution
    misses by more than 9 of them), and tokens outside the kept set are never drawn."""
    n = 20000
    model = BigramLM(_table()).eval()
    ids = torch.zeros(n, 1, dtype=torch.long)
    torch.manual_seed(5)
    tokens, logps = sample_with_logprobs(model, ids, torch.ones_like(ids), max_new_tokens=1, eos_token_ids=[EOS],
                                         pad_token_id=0, temperature=temperature, top_k=top_k, top_p=top_p)
    ref = _hf_distribution(_table()[0:1], temperature, top_k, top_p)[0].double()
    freq = torch.bincount(tokens[:, 0], minlength=8).double() / n
    sigma = (ref * (1 - ref) / n).sqrt()
    assert ((freq - ref).abs() <= 5 * sigma).all(), (freq, ref)
    assert (freq[ref == 0] == 0).all()
    full = _hf_distribution(_table()[0:1], temperature, 0, 1.0)[0].double()
    assert ((freq - full).abs() > 9 * (full * (1 - full) / n).sqrt()).any()  # the test can tell the two apart
    torch.testing.assert_close(logps[:, 0], ref[tokens[:, 0]].log().float(), atol=1e-5, rtol=0)


def _reference_bigram_logps(completions, first, eos, temperature, top_k, top_p, min_new_tokens, table):
    """log of HF's truncated distribution at every token up to and including each row's first EOS; EOS banned
    (-inf) for the first ``min_new_tokens`` steps before the warpers, as HF's minimum-length processor."""
    out = []
    for prev0, row in zip(first, completions.tolist()):
        n = next((i + 1 for i, t in enumerate(row) if t == eos), len(row))
        logits = table[[prev0] + row[: n - 1]]
        logits[:min_new_tokens, eos] = float("-inf")
        dist = _hf_distribution(logits, temperature, top_k, top_p)
        out.append(dist[torch.arange(n), row[:n]].log())
    return out


@pytest.mark.parametrize("temperature,top_k,top_p", WARPS)
@pytest.mark.parametrize("min_new_tokens", [0, 2])
def test_both_samplers_return_the_log_probs_of_the_distribution_sampled(temperature, top_k, top_p, min_new_tokens):
    """Over several steps, for sdft.sampling's loop and for HF generate with the recorder (generate_with_logprobs):
    every returned log-probability equals, to 1e-5, the log of the truncated renormalized distribution computed with
    HF's warpers from the step's exact logits (EOS banned first for min_new_tokens steps, then truncated); none is
    -inf (no token outside the kept set is drawn)."""
    table = _table()
    table[:, EOS] += 2.5  # EOS among the top tokens of most rows: banning it before or after truncating differs
    model = BigramLM(table).eval()
    first = [0, 1, 2, 3, 4, 5, 6, 0] * 8
    ids = torch.tensor(first)[:, None]
    mask = torch.ones_like(ids)
    config = GenerationConfig(max_new_tokens=6, do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p,
                              min_new_tokens=min_new_tokens, pad_token_id=0, eos_token_id=[EOS], use_cache=False)
    torch.manual_seed(6)
    loop = sample_with_logprobs(model, ids, mask, max_new_tokens=6, eos_token_ids=[EOS], pad_token_id=0,
                                temperature=temperature, top_k=top_k, top_p=top_p, min_new_tokens=min_new_tokens)
    hf = generate_with_logprobs(model, ids, mask, config)
    for completions, logps in (loop, hf):
        assert (completions[:, :min_new_tokens] != EOS).all()
        refs = _reference_bigram_logps(completions, first, EOS, temperature, top_k, top_p, min_new_tokens, table)
        for lp, ref in zip(logps, refs):
            assert torch.isfinite(ref).all()
            torch.testing.assert_close(lp[: len(ref)], ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("temperature,top_k,top_p", WARPS[1:3])
def test_generate_with_the_recorder_samples_the_configured_distribution(temperature, top_k, top_p):
    """The warpers moved ahead of the recorder (split_warpers) act once, as generate's own would: HF generate's first
    tokens follow HF's truncated distribution (5 standard deviations, as above), not one warped twice."""
    n = 20000
    model = BigramLM(_table()).eval()
    ids = torch.zeros(n, 1, dtype=torch.long)
    config = GenerationConfig(max_new_tokens=1, do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p,
                              pad_token_id=0, eos_token_id=[EOS])
    torch.manual_seed(7)
    tokens, logps = generate_with_logprobs(model, ids, torch.ones_like(ids), config)
    ref = _hf_distribution(_table()[0:1], temperature, top_k, top_p)[0].double()
    freq = torch.bincount(tokens[:, 0], minlength=8).double() / n
    assert ((freq - ref).abs() <= 5 * (ref * (1 - ref) / n).sqrt()).all(), (freq, ref)
    torch.testing.assert_close(logps[:, 0], ref[tokens[:, 0]].log().float(), atol=1e-5, rtol=0)


def test_split_warpers_keeps_generate_s_draws_and_refuses_late_warpers(tiny_lm):
    """generate with the split config and the warpers passed ahead draws the very tokens generate draws with the
    original config (same seed): same distribution, same random stream. Warpers generate would apply after every
    passed processor cannot be recorded and are refused."""
    config = GenerationConfig(max_new_tokens=10, do_sample=True, temperature=0.7, top_k=40, top_p=0.9, min_p=0.05,
                              pad_token_id=0, eos_token_id=[1])
    unwarped, warpers = split_warpers(config)
    assert [type(w).__name__ for w in warpers] == ["TemperatureLogitsWarper", "TopKLogitsWarper",
                                                   "TopPLogitsWarper", "MinPLogitsWarper"]
    assert not truncates(unwarped) and unwarped.temperature == 1.0 and config.top_k == 40  # config untouched
    ids, mask = _left_pad([[5, 17, 40], [7, 300, 301, 302]], pad_id=0)
    torch.manual_seed(8)
    direct = tiny_lm.generate(input_ids=ids, attention_mask=mask, generation_config=config)
    torch.manual_seed(8)
    split = tiny_lm.generate(input_ids=ids, attention_mask=mask, generation_config=unwarped, logits_processor=warpers)
    assert torch.equal(direct, split)
    for late in (dict(typical_p=0.9), dict(epsilon_cutoff=0.01), dict(num_beams=2)):
        with pytest.raises(ValueError, match="cannot record"):
            split_warpers(GenerationConfig(**{**config.to_diff_dict(), **late}))


@pytest.mark.parametrize("top_k,top_p", [(50, 1.0), (0, 0.8), (30, 0.9)])
def test_recorder_log_probs_on_the_tiny_model_equal_a_full_forward_with_hf_warpers(tiny_lm, top_k, top_p):
    """HF generate with the recorder on the tiny Llama (left padding, KV cache): each kept log-probability equals
    that of HF's warpers applied to an uncached forward of the unpadded row, and the loop's likewise."""
    prompts = [[5, 17, 40, 41, 9], [7, 300]]
    eos = list(range(100, 116))
    ids, mask = _left_pad(prompts, pad_id=0)
    config = GenerationConfig(max_new_tokens=20, do_sample=True, temperature=0.7, top_k=top_k, top_p=top_p,
                              pad_token_id=0, eos_token_id=eos)
    torch.manual_seed(9)
    hf = generate_with_logprobs(tiny_lm, ids, mask, config)
    loop = sample_with_logprobs(tiny_lm, ids, mask, max_new_tokens=20, eos_token_ids=eos, pad_token_id=0,
                                temperature=0.7, top_k=top_k, top_p=top_p)
    for completions, logps in (hf, loop):
        for prompt, row, lp in zip(prompts, completions.tolist(), logps):
            n = next((i + 1 for i, t in enumerate(row) if t in eos), len(row))
            with torch.no_grad():
                logits = tiny_lm(input_ids=torch.tensor([prompt + row[:n]])).logits[0, len(prompt) - 1: -1]
            ref = _hf_distribution(logits, 0.7, top_k, top_p)[torch.arange(n), row[:n]].log()
            assert torch.isfinite(ref).all()
            torch.testing.assert_close(lp[:n], ref, atol=1e-4, rtol=0)


def test_temperature_only_loop_keeps_its_numbers():
    """With top_k 0 and top_p 1 the loop is the temperature-only sampler bit for bit: per step one uniform per row
    (torch.rand(B, 1) from the generator) inverts the CDF of softmax(logits / temperature), EOS banned first for
    min_new_tokens steps, and the kept log-probability is that log-softmax's entry (reimplemented here)."""
    table = _table()
    model = BigramLM(table).eval()
    first = torch.tensor([0, 1, 2, 3, 4, 5])
    for temperature, min_new in ((1.0, 0), (0.6, 3)):
        got = sample_with_logprobs(model, first[:, None], torch.ones(6, 1, dtype=torch.long), max_new_tokens=8,
                                   eos_token_ids=[EOS], pad_token_id=0, temperature=temperature,
                                   min_new_tokens=min_new, generator=torch.Generator().manual_seed(11))
        g = torch.Generator().manual_seed(11)
        prev, finished, tokens, logps = first, torch.zeros(6, dtype=torch.bool), [], []
        for step in range(got[0].size(1)):
            logits = table[prev] / temperature if temperature != 1.0 else table[prev].clone()
            if step < min_new:
                logits[:, EOS] = float("-inf")
            log_probs = torch.log_softmax(logits, -1)
            cdf = log_probs.exp().cumsum(-1)
            u = torch.rand(6, 1, generator=g) * cdf[:, -1:]
            token = torch.searchsorted(cdf, u, right=True).clamp(max=7).squeeze(1)
            tokens.append(torch.where(finished, 0, token))
            logps.append(log_probs.gather(1, token[:, None]).squeeze(1).masked_fill(finished, 0.0))
            finished |= token == EOS
            prev = token
        assert torch.equal(got[0], torch.stack(tokens, 1)) and torch.equal(got[1], torch.stack(logps, 1))
        assert finished.all() or got[0].size(1) == 8


def test_config_rejects_bad_sampling_settings():
    from sdft.sdft_config import SelfDistillationConfig

    for key, value in (("temperature", 0.0), ("temperature", -1.0), ("top_p", 0.0), ("top_p", 1.5),
                       ("top_k", -1)):
        with pytest.raises(ValueError, match=key):
            SelfDistillationConfig(output_dir="/tmp/x", report_to=[], **{key: value})
    cfg = SelfDistillationConfig(output_dir="/tmp/x", report_to=[], use_cpu=True, temperature=0.6, top_p=0.9, top_k=20)
    assert (cfg.temperature, cfg.top_p, cfg.top_k) == (0.6, 0.9, 20)
