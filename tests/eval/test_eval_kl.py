import itertools
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from eval.kl import kl_to_base, per_token_kl, summarize_kl


class Bigram(torch.nn.Module):
    """A logits table: the next-token distribution depends on the previous token only."""

    def __init__(self, table):
        super().__init__()
        self.table = torch.nn.Parameter(torch.as_tensor(table, dtype=torch.float32))

    def forward(self, input_ids, attention_mask=None, position_ids=None):
        return SimpleNamespace(logits=self.table[input_ids])


def _softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def _seq_prob(table, prompt_last, seq):
    p, prev = 1.0, prompt_last
    for tok in seq:
        p *= _softmax(table[prev])[tok]
        prev = tok
    return p


V, T = 4, 3
rng = np.random.default_rng(0)
P = rng.normal(size=(V, V)) * 1.5
Q = rng.normal(size=(V, V)) * 1.5


def _exact_kl(model_prompt, base_prompt):
    """KL(p || q) over all V**T sequences, from sequence probabilities (independent of the per-token form)."""
    total = 0.0
    for seq in itertools.product(range(V), repeat=T):
        p = _seq_prob(P, model_prompt[-1], seq)
        q = _seq_prob(Q, base_prompt[-1], seq)
        total += p * math.log(p / q)
    return total


def test_rao_blackwell_identity_exact():
    mp, bp = [0], [2]
    seqs = list(itertools.product(range(V), repeat=T))
    kls = per_token_kl(Bigram(P), Bigram(Q), [mp] * len(seqs), [bp] * len(seqs), seqs, batch_size=16)
    weighted = sum(_seq_prob(P, mp[-1], s) * float(k.sum()) for s, k in zip(seqs, kls))
    assert weighted == pytest.approx(_exact_kl(mp, bp), rel=1e-5)


def test_monte_carlo_estimate_converges():
    mp, bp = [1], [3]
    sampler = np.random.default_rng(1)
    samples = []
    for _ in range(3000):
        prev, seq = mp[-1], []
        for _ in range(T):
            prev = int(sampler.choice(V, p=_softmax(P[prev])))
            seq.append(prev)
        samples.append(seq)
    kls = per_token_kl(Bigram(P), Bigram(Q), [mp] * len(samples), [bp] * len(samples), samples, batch_size=512)
    vals = np.array([float(k.sum()) for k in kls])
    exact = _exact_kl(mp, bp)
    se = vals.std(ddof=1) / math.sqrt(len(vals))
    assert abs(vals.mean() - exact) < 4 * se + 1e-9
    s = summarize_kl(kls)
    assert s["kl_seq"] == pytest.approx(vals.mean()) and s["kl_per_token"] == pytest.approx(vals.mean() / T)
    scipy_stats = pytest.importorskip("scipy.stats")
    lo, hi = scipy_stats.t.interval(0.95, len(vals) - 1, loc=vals.mean(), scale=scipy_stats.sem(vals))
    assert (s["kl_seq_ci_low"], s["kl_seq_ci_high"]) == (pytest.approx(lo), pytest.approx(hi))


@pytest.fixture(scope="module")
def tiny():
    from sdft.models import load_model_and_tokenizer

    return load_model_and_tokenizer("embedded:tiny-llama")


def test_padding_invariance_and_zero_kl(tiny):
    model, tok = tiny
    torch.manual_seed(1)  # the embedded tiny model was initialised with seed 0
    other = type(model)(model.config)
    prompts = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [20, 21, 22, 23]]
    comps = [[30, 31, 32], [40, 41, 42, 43, 44], [50]]
    batched = per_token_kl(model, other, prompts, prompts, comps, pad=tok.pad_token_id, batch_size=3)
    single = [per_token_kl(model, other, [p], [p], [c], pad=tok.pad_token_id)[0] for p, c in zip(prompts, comps)]
    for b, s, c in zip(batched, single, comps):
        assert b.shape == (len(c),)
        assert torch.allclose(b, s, atol=1e-5)
        assert (b > 0).all()
    same = per_token_kl(model, model, prompts, prompts, comps, pad=tok.pad_token_id)
    assert all(float(k.abs().max()) < 1e-5 for k in same)


def test_kl_to_base_end_to_end(tiny):
    model, tok = tiny
    from data_prep.registry import load_task

    recs = load_task("embedded_tool", "test", n=3)
    same = kl_to_base(model, model, tok, recs, context="student", max_new_tokens=6, n_samples=2)
    assert same["n_samples"] == 6 and abs(same["kl_seq"]) < 1e-4
    teach = kl_to_base(model, model, tok, recs, context="teacher", template="paper", max_new_tokens=6)
    assert teach["kl_seq"] > 1e-4 and teach["context"] == "teacher"
