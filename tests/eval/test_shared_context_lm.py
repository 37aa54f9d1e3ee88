"""SharedContextHFLM against lm-eval's HFLM on the tiny model: the same value and is_greedy for every request, the
same choice for every item of the embedded suite; and which of the two the prior suite runs."""

import random

import pytest
import torch

from eval.shared_context_lm import SharedContextHFLM, block_causal_mask, group_by_context, pack

MC_TASKS = ["sdft_commonsense", "sdft_winograd", "sdft_facts", "sdft_truthful"]


@pytest.fixture(scope="module")
def tiny():
    """The tiny Llama in float64: what differs between the two paths is the order of float operations, whose
    rounding is ~1e-15 here, so a difference above 1e-6 is a difference of computation, not of rounding."""
    from sdft.models import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer("embedded:tiny-llama")
    return model.double().eval(), tok


def _lms(model, tok, **kwargs):
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=model, tokenizer=tok, **kwargs), SharedContextHFLM(pretrained=model, tokenizer=tok, **kwargs)


def _greedy(model, tokens: list[int], n: int) -> list[int]:
    """The ``n`` tokens greedy decoding appends to ``tokens``."""
    out = list(tokens)
    with torch.no_grad():
        for _ in range(n):
            out.append(int(model(torch.tensor([out])).logits[0, -1].argmax()))
    return out[len(tokens):]


def test_group_by_context():
    assert group_by_context([[1, 2], [3], [1, 2], [3], [4]]) == [[0, 2], [1, 3], [4]]


def test_pack_and_block_causal_mask():
    row = pack([10, 11, 12], [[20, 21, 22], [30], [40, 41]])
    assert row.tokens == [10, 11, 12, 20, 21, 40]  # each continuation's last token is never an input
    assert row.positions == [0, 1, 2, 3, 4, 3]  # each block where the context ends
    assert row.segments == [0, 0, 0, 1, 1, 3]
    assert row.reads == [[2, 3, 4], [2], [2, 5]]  # the context's last token predicts every first token
    mask = block_causal_mask(torch.tensor([[-1, *row.segments]]))[0, 0]  # one column of left padding
    expected = torch.tensor([[1, 0, 0, 0, 0, 0, 0],   # padding sees padding only
                             [0, 1, 0, 0, 0, 0, 0],   # context: causal
                             [0, 1, 1, 0, 0, 0, 0],
                             [0, 1, 1, 1, 0, 0, 0],
                             [0, 1, 1, 1, 1, 0, 0],   # block 1: the context and itself
                             [0, 1, 1, 1, 1, 1, 0],
                             [0, 1, 1, 1, 0, 0, 1]],  # block 3: the context and itself, not block 1
                            dtype=torch.bool)
    assert torch.equal(mask, expected)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_token_requests_equal_hflm(tiny, attention):
    model, tok = tiny
    model.set_attn_implementation(attention)
    max_length = 24
    rng = random.Random(0)

    def tokens(n):
        return [rng.randrange(3, tok.vocab_size) for _ in range(n)]

    requests = []
    # contexts of different lengths (1: the empty context's prefix token), 3-7 continuations of 1-7 tokens each
    for n_ctx, cont_lens in [(1, [4, 2]), (5, [3, 1, 4]), (9, [7]), (12, [2, 2, 6, 1, 3]), (16, [5, 1])]:
        ctx = tokens(n_ctx)
        requests += [(None, ctx, tokens(n)) for n in cont_lens]
        requests.append((None, ctx, _greedy(model, ctx, 3)))  # is_greedy True
        requests.append((None, ctx, _greedy(model, ctx, 2)[:1] + tokens(1)))  # greedy first token only
    long_ctx = tokens(20)  # two continuations need left truncation (20 + 8, 20 + 6 > 25), one does not
    requests += [(None, long_ctx, tokens(8)), (None, long_ctx, tokens(6)), (None, long_ctx, tokens(2))]
    requests.append((None, tokens(7), tokens(3)))  # a context with one continuation
    requests.append((None, tokens(30), tokens(2)))  # alone, and truncated
    requests.append(requests[3])  # a request twice
    rng.shuffle(requests)  # a group's requests apart, as lm-eval may give them
    assert sum(len(c) + len(t) > max_length + 1 for _, c, t in requests) == 3

    try:
        for batch_size in (1, 3, 32):  # one group per forward, several (rows of different lengths), all
            reference, fast = _lms(model, tok, batch_size=batch_size, max_length=max_length)
            expected = reference._loglikelihood_tokens(requests)
            got = fast._loglikelihood_tokens(requests)
            assert len(got) == len(requests)
            assert {g for _, g in expected} == {True, False}
            for (value, greedy), (ref_value, ref_greedy) in zip(got, expected, strict=True):
                assert value == pytest.approx(ref_value, abs=1e-6, rel=0) and greedy == ref_greedy
    finally:
        model.set_attn_implementation("sdpa")


def test_string_requests_equal_hflm(tiny):
    # through TemplateLM.loglikelihood: tokenization, the empty context, the cache hook
    from lm_eval.api.instance import Instance

    model, tok = tiny
    pairs = [("The cat sat on", " the mat"), ("The cat sat on", " a hat"), ("The cat sat on", " the warm red mat"),
             ("", "Hello there"), ("A dog ", "ran"), ("A dog ", "barked loudly")]
    requests = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
    reference, fast = _lms(model, tok, batch_size=4)
    seen = []
    fast.cache_hook.add_partial = lambda kind, args, answer: seen.append((kind, args, answer))
    expected, got = reference.loglikelihood(requests), fast.loglikelihood(requests)
    for (value, greedy), (ref_value, ref_greedy) in zip(got, expected, strict=True):
        assert value == pytest.approx(ref_value, abs=1e-6, rel=0) and greedy == ref_greedy
    assert sorted(seen, key=lambda s: pairs.index(s[1])) == [("loglikelihood", p, a) for p, a in zip(pairs, got)]


def test_embedded_suite_same_choice_on_every_item(tiny):
    import lm_eval
    from lm_eval.tasks import TaskManager

    from eval.prior import TASKS_DIR

    model, tok = tiny
    runs = []
    for lm in _lms(model, tok, batch_size=8):
        res = lm_eval.simple_evaluate(model=lm, tasks=MC_TASKS, limit=12, log_samples=True, bootstrap_iters=0,
                                      task_manager=TaskManager(include_path=str(TASKS_DIR), include_defaults=False))
        runs.append(res)
    reference, fast = runs
    for task in MC_TASKS:
        ref_samples = sorted(reference["samples"][task], key=lambda s: s["doc_id"])
        samples = sorted(fast["samples"][task], key=lambda s: s["doc_id"])
        assert len(samples) == len(ref_samples) == 12
        for s, r in zip(samples, ref_samples, strict=True):
            values = [v for v, _ in s["filtered_resps"]]
            ref_values = [v for v, _ in r["filtered_resps"]]
            assert values == pytest.approx(ref_values, abs=1e-6, rel=0), (task, s["doc_id"])
            assert values.index(max(values)) == ref_values.index(max(ref_values)), (task, s["doc_id"])
            assert s["acc"] == r["acc"]
        assert fast["results"][task]["acc,none"] == reference["results"][task]["acc,none"]


def test_batch_size_must_be_a_number(tiny):
    model, tok = tiny
    with pytest.raises(ValueError, match="number as batch size"):
        SharedContextHFLM(pretrained=model, tokenizer=tok, batch_size="auto")


def test_switch_selects_the_path_and_the_result_records_it(tiny, tmp_path):
    import json

    from lm_eval.models.huggingface import HFLM

    from eval.config import build_eval_config
    from eval.evaluation import evaluate
    from eval.prior import _make_lm
    from sdft.errors import ConfigError

    model, tok = tiny
    assert type(_make_lm(model, tok, "hf", 8, None, "shared_context")) is SharedContextHFLM
    assert type(_make_lm(model, tok, "hf", 8, None, "lm_eval")) is HFLM
    with pytest.raises(ValueError, match="unknown loglikelihood path"):
        _make_lm(model, tok, "hf", 8, None, "fast")
    assert build_eval_config().prior_loglikelihood == "shared_context"
    with pytest.raises(ConfigError, match="prior_loglikelihood"):
        build_eval_config({"prior_loglikelihood": "fast"})
    values = {}
    for path in ("lm_eval", None):  # None: the default
        cfg = build_eval_config({"skip_task": True, "prior_suite": "embedded", "prior_benchmarks": ["facts"],
                                 "limit": 3, "prior_loglikelihood": path})
        evaluate(model, None, cfg, tokenizer=tok, output_dir=tmp_path / str(path))
        prior = json.loads((tmp_path / str(path) / "eval.json").read_text())["prior"]["embedded"]
        values[prior["loglikelihood"]] = prior["benchmarks"]["facts"]["value"]
    assert set(values) == {"lm_eval", "shared_context"} and values["lm_eval"] == values["shared_context"]


def test_greedy_generation_returns_hflms_texts_with_rows_leaving_at_their_stop(tiny, monkeypatch, varied_copy):
    """generate_until through SharedContextHFLM (greedy_decode, a row leaving at its stop sequence) returns the
    texts of HFLM's generate (every row until the batch stops, then cut by lm-eval) -- with stop sequences that
    cut some rows early, none, or an end token; and the fast path is the one that ran."""
    from lm_eval.api.instance import Instance

    import eval.shared_context_lm as fast_module

    model, tok = tiny
    model = varied_copy(model, seed=1)
    contexts = ["The cat sat on", "A dog", "Write a poem about the sea", "Numbers: 1 2 3", "Hello", "Once upon"]

    def requests(until):
        return [Instance("generate_until", {}, (c, {"until": until, "max_gen_toks": 16, "do_sample": False}), i)
                for i, c in enumerate(contexts)]

    calls = []
    real = fast_module.greedy_decode
    monkeypatch.setattr(fast_module, "greedy_decode", lambda *a, **k: calls.append(1) or real(*a, **k))
    reference, fast = _lms(model, tok, batch_size=4)
    free = reference.generate_until(requests([]))
    # stop sequences met by some rows: a character of one row's text, another's
    stops = [free[0][len(free[0]) // 2], free[3][len(free[3]) // 3]]
    for until in ([], stops, ["never-generated"]):
        expected, got = reference.generate_until(requests(until)), fast.generate_until(requests(until))
        assert got == expected, until
    assert calls
    cut = reference.generate_until(requests(stops))
    assert sum(c != f for c, f in zip(cut, free)) >= 2  # the stops cut rows at different places
