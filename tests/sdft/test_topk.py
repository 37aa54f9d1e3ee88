"""The top-K forward KL (``distillation_topk``) against independent computations: the full-vocabulary loss at
K = V (values and gradients, every path), a direct float64 implementation written per position at K < V (values,
autograd gradients, reductions, first-k masking, importance weights), exact enumeration for ``rao_blackwell``, the
trainer's switches, and a short run."""

import itertools
import math

import pytest
import torch

from sdft.losses import (
    TeacherTopK,
    head_token_terms,
    head_top_k,
    loss_from_terms,
    per_token_divergence,
    self_distillation_loss,
    teacher_top_k,
    token_terms,
)


def _batch(B=3, T=9, V=13, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(B, T, V, generator=g, dtype=dtype) * 2
    t = torch.randn(B, T, V, generator=g, dtype=dtype) * 2
    ids = torch.randint(0, V, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[0, 6:] = 0
    mask[2, 8:] = 0
    w = torch.rand(B, T, generator=g, dtype=dtype) + 0.5
    return s, t, ids, mask, w


def _direct_topk_kl(student_logits_row, teacher_logits_row, k):
    """D^K at one position, written out: sort the teacher's probabilities, keep the first k as outcomes and sum the
    rest (of each distribution) into one tail outcome; KL of the two (k+1)-outcome distributions, term by term."""
    p = torch.softmax(teacher_logits_row.double(), -1)
    q = torch.softmax(student_logits_row.double(), -1)
    order = sorted(range(p.numel()), key=lambda v: -float(p[v]))
    top, rest = order[:k], order[k:]
    total = torch.zeros((), dtype=torch.float64)
    for v in top:
        total = total + p[v] * torch.log(p[v] / q[v])
    if rest:
        p_rest, q_rest = p[rest].sum(), q[rest].sum()
        total = total + p_rest * torch.log(p_rest / q_rest)
    return total


def _direct_divergence(s, t, k):
    B, T, _ = s.shape
    return torch.stack([torch.stack([_direct_topk_kl(s[b, i], t[b, i], k) for i in range(T)]) for b in range(B)])


# ---------------------------------------------------------------- K = V: the full-vocabulary forward KL
def _loss_and_grad(path, s, t, ids, mask, topk, **kw):
    """The loss and the gradient of the student's logits through one of the loss's paths."""
    if path == "head":  # the student's logits made by an output head inside the loss (fused head)
        V = s.size(-1)
        weight = torch.eye(V, dtype=s.dtype).requires_grad_(True)  # hidden = logits, so d/d hidden = d/d logits
        hidden = s.clone().requires_grad_(True)
        div, s_tok, t_tok = head_token_terms(hidden, weight, None, t, ids, "forward", chunk_size=4, topk=topk)
        loss = loss_from_terms(div, s_tok, t_tok, mask, **kw)
        loss.backward()
        return loss.detach(), div.detach(), hidden.grad
    leaf = s.clone().requires_grad_(True)
    chunk = {"plain": None, "chunked": 4}[path]
    loss, div = self_distillation_loss(leaf, t, ids, mask, divergence="forward", chunk_size=chunk, topk=topk,
                                       return_divergence=True, **kw)
    loss.backward()
    return loss.detach(), div, leaf.grad


@pytest.mark.parametrize("path", ["plain", "chunked", "head"])
@pytest.mark.parametrize("estimator", ["analytic", "rao_blackwell"])
@pytest.mark.parametrize("reduction", ["sequence_mean", "token_mean", "sum"])
def test_topk_at_full_vocabulary_equals_the_full_forward_kl(path, estimator, reduction):
    s, t, ids, mask, w = _batch()
    V = s.size(-1)
    kw = dict(estimator=estimator, skip_first=2, is_weights=w, reduction=reduction)
    ref_loss, ref_div, ref_grad = _loss_and_grad("plain", s, t, ids, mask, 0, **kw)
    for k in (V, V + 5):  # K above V means V
        loss, div, grad = _loss_and_grad(path, s, t, ids, mask, k, **kw)
        torch.testing.assert_close(loss, ref_loss, atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(div, ref_div, atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(grad, ref_grad, atol=1e-10, rtol=1e-10)
    # below V it is another loss (so the comparison above can fail)
    loss, _, grad = _loss_and_grad(path, s, t, ids, mask, 2, **kw)
    assert not torch.allclose(grad, ref_grad, atol=1e-4)


# ---------------------------------------------------------------- K < V: a direct computation
@pytest.mark.parametrize("k", [1, 3, 7])
def test_topk_divergence_equals_a_direct_float64_computation(k):
    s, t, *_ = _batch()
    torch.testing.assert_close(per_token_divergence(s, t, "forward", topk=k), _direct_divergence(s, t, k),
                               atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("path", ["plain", "chunked", "head"])
@pytest.mark.parametrize("k", [1, 4])
def test_topk_loss_and_gradient_equal_the_direct_computation(path, k):
    """sequence_mean of the importance-weighted D^K over the loss tokens (padding and the first two removed), its
    gradient by autograd through the direct computation."""
    s, t, ids, mask, w = _batch()
    skip = 2
    loss, div, grad = _loss_and_grad(path, s, t, ids, mask, k, estimator="analytic", skip_first=skip, is_weights=w)
    leaf = s.clone().requires_grad_(True)
    d = _direct_divergence(leaf, t, k)
    m = mask.double().clone()
    m[:, :skip] = 0
    expected = ((d * w * m).sum(-1) / m.sum(-1)).mean()
    expected.backward()
    torch.testing.assert_close(loss, expected.detach(), atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(div, d.detach(), atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(grad, leaf.grad, atol=1e-10, rtol=1e-10)
    assert torch.count_nonzero(grad[:, :skip]) == 0 and torch.count_nonzero(grad[mask == 0]) == 0


def test_topk_grows_with_k_to_the_full_forward_kl():
    """Coarse-graining loses information: D^K <= D^(K+1) <= ... <= D^V = KL(teacher || student)."""
    s, t, *_ = _batch(V=9)
    ds = [per_token_divergence(s, t, "forward", topk=k) for k in range(1, 10)]
    for a, b in zip(ds, ds[1:]):
        assert (a <= b + 1e-12).all()
    assert (ds[0] < ds[-1] - 1e-3).any()
    torch.testing.assert_close(ds[-1], per_token_divergence(s, t, "forward"), atol=1e-12, rtol=0)


@pytest.mark.parametrize("gap", [30.0, 100.0])
def test_student_tail_is_exact_where_one_minus_the_sum_rounds_to_zero(gap):
    """float32 logits: the student puts all but ~e^-gap of its mass on the teacher's top 3, so 1 - sum q is 0 in
    float32 and log1p(-sum) would give an infinite loss. At gap 30 the complement's probabilities are summed; at
    gap 100 they underflow (e^-100 is below float32's smallest normal number) and the logsumexp fallback serves."""
    V, k = 50, 3
    t = torch.zeros(1, 1, V)
    t[..., :k] = 3.0  # the teacher's top 3 hold 0.56 of its mass, its tail 0.44
    s = torch.full((1, 1, V), -gap)
    s[..., :k] = 0.0
    q = torch.softmax(s, -1)
    assert (1.0 - q[..., :k].sum(-1)).item() <= 0.0  # the cancellation is real in float32
    leaf = s.clone().requires_grad_(True)
    d = per_token_divergence(leaf, t, "forward", topk=k)
    d.sum().backward()
    ref_leaf = s.double().requires_grad_(True)
    ref = _direct_divergence(ref_leaf, t.double(), k)
    ref.sum().backward()
    assert torch.isfinite(d).all() and torch.isfinite(leaf.grad).all()
    torch.testing.assert_close(d.double(), ref.detach(), atol=0, rtol=1e-5)
    torch.testing.assert_close(leaf.grad.double(), ref_leaf.grad, atol=1e-6, rtol=1e-4)


def test_teacher_reduction_given_once_equals_topk_on_the_fly():
    """The trainer hands the loss a TeacherTopK (selected once); the loss with topk=K on the teacher's logits is the
    same, and the reduction made chunk by chunk from an output head equals the one of its whole logits."""
    s, t, ids, mask, w = _batch()
    reduced = teacher_top_k(t, 4, ids, chunk_size=2)
    assert isinstance(reduced, TeacherTopK) and reduced.ids.shape == (*ids.shape, 4)
    torch.testing.assert_close(reduced.token_logprobs, torch.log_softmax(t, -1).gather(-1, ids[..., None])[..., 0])
    a, b = s.clone().requires_grad_(True), s.clone().requires_grad_(True)
    kw = dict(divergence="forward", estimator="rao_blackwell", is_weights=w, skip_first=1)
    la = self_distillation_loss(a, reduced, ids, mask, chunk_size=3, **kw)
    lb = self_distillation_loss(b, t, ids, mask, topk=4, **kw)
    la.backward()
    lb.backward()
    torch.testing.assert_close(la, lb, atol=1e-12, rtol=0)
    torch.testing.assert_close(a.grad, b.grad, atol=1e-12, rtol=0)

    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(3, 9, 5, generator=g, dtype=torch.float64)
    weight = torch.randn(13, 5, generator=g, dtype=torch.float64)
    bias = torch.randn(13, generator=g, dtype=torch.float64)
    from_head = head_top_k(hidden, weight, bias, 4, ids, chunk_size=2, temperature=0.7)
    whole = teacher_top_k(torch.nn.functional.linear(hidden, weight, bias) / 0.7, 4, ids)
    assert torch.equal(from_head.ids, whole.ids)
    for name in ("logprobs", "tail_logprob", "token_logprobs"):
        torch.testing.assert_close(getattr(from_head, name), getattr(whole, name), atol=1e-12, rtol=0)


def test_topk_terms_accept_a_teacher_reduced_under_inference_mode():
    s, t, ids, mask, _ = _batch(dtype=torch.float32)
    with torch.inference_mode():
        reduced = teacher_top_k(t, 3, ids)
    for chunk in (None, 4):
        leaf = s.clone().requires_grad_(True)
        div, lp, _ = token_terms(leaf, reduced, ids, "forward", chunk_size=chunk)
        (div.sum() + lp.sum()).backward()
        ref = s.clone().requires_grad_(True)
        d2, lp2, _ = token_terms(ref, t, ids, "forward", topk=3)
        (d2.sum() + lp2.sum()).backward()
        torch.testing.assert_close(leaf.grad, ref.grad, atol=1e-6, rtol=0)


def test_topk_loss_refuses_what_it_cannot_serve():
    s, t, ids, mask, _ = _batch()
    with pytest.raises(ValueError, match="forward"):
        self_distillation_loss(s, t, ids, mask, divergence="reverse", topk=3)
    with pytest.raises(ValueError, match="forward"):
        self_distillation_loss(s, teacher_top_k(t, 3, ids), ids, mask, divergence=0.5)
    with pytest.raises(ValueError, match="token"):
        self_distillation_loss(s, t, ids, mask, divergence="forward", estimator="token", topk=3)
    with pytest.raises(ValueError, match=">= 0"):
        self_distillation_loss(s, t, ids, mask, divergence="forward", topk=-1)


# ---------------------------------------------------------------- rao_blackwell: exact enumeration
V_E, T_E, K_E = 4, 3, 2
PREFIXES = [p for n in range(T_E) for p in itertools.product(range(V_E), repeat=n)]
ROW = {p: i for i, p in enumerate(PREFIXES)}


def _seq_logits(table, y):
    return torch.stack([table[ROW[tuple(y[:i])]] for i in range(T_E)])


@pytest.mark.parametrize("seed", [0, 1])
def test_rao_blackwell_with_topk_is_unbiased_for_the_expected_summed_topk_kl(seed):
    """D^K_t is a function of the student's next-token distribution after y_<t (the teacher's top K are constants),
    so the Rao-Blackwellized estimator's expectation over y ~ pi_theta is grad E_y sum_t D^K_t. Checked against
    autograd of that expectation, enumerated with the direct D^K; the analytic estimator is biased for it."""
    g = torch.Generator().manual_seed(seed)
    student = (torch.randn(len(PREFIXES), V_E, generator=g, dtype=torch.float64) * 1.5).requires_grad_(True)
    teacher = torch.randn(len(PREFIXES), V_E, generator=g, dtype=torch.float64) * 1.5
    sequences = list(itertools.product(range(V_E), repeat=T_E))

    def log_prob(y):
        return sum(torch.log_softmax(student[ROW[tuple(y[:i])]], -1)[y[i]] for i in range(T_E))

    objective = sum(log_prob(y).exp() * sum(_direct_topk_kl(student[ROW[y[:i]]], teacher[ROW[y[:i]]], K_E)
                                            for i in range(T_E)) for y in sequences)
    (exact,) = torch.autograd.grad(objective, student)

    def expected(estimator):
        total = 0.0
        for y in sequences:
            surrogate = self_distillation_loss(
                _seq_logits(student, y)[None], _seq_logits(teacher, y)[None], torch.tensor([y]),
                torch.ones(1, T_E, dtype=torch.float64), divergence="forward", estimator=estimator, reduction="sum",
                topk=K_E)
            total = total + log_prob(y).exp().detach() * surrogate
        (grad,) = torch.autograd.grad(total, student)
        return grad

    torch.testing.assert_close(expected("rao_blackwell"), exact, atol=1e-10, rtol=1e-10)
    assert (expected("analytic") - exact).norm() > 1e-2 * exact.norm()


# ---------------------------------------------------------------- the config and the trainer
def test_config_refuses_what_topk_cannot_serve():
    from sdft.sdft_config import SelfDistillationConfig

    def cfg(**kw):
        return SelfDistillationConfig(output_dir="/tmp/x", report_to=[], use_cpu=True, bf16=False, **kw)

    assert cfg().distillation_topk == 0  # the paper's full vocabulary by default
    assert cfg(distillation_topk=20, estimator="rao_blackwell").distillation_topk == 20
    for bad in (dict(divergence="reverse"), dict(divergence="0.5"), dict(estimator="token", divergence="reverse"),
                dict(estimator="token")):
        with pytest.raises(ValueError, match="distillation_topk"):
            cfg(distillation_topk=20, **bad)
    with pytest.raises(ValueError, match="distillation_topk"):
        cfg(distillation_topk=-1)


def _teacher_logits(trainer, batch):
    """The teacher's logits (or their top-K reduction) as the trainer's loss takes them."""
    from sdft.speedups import teacher_logits

    return teacher_logits(trainer.teacher_model, batch, trainer.args, trainer._forward_logits, trainer._teacher_weights)


def _record_teacher_logits(monkeypatch) -> list:
    """Every teacher target the trainer's loss computes, in order."""
    import sdft.trainer
    from sdft.speedups import teacher_logits

    seen = []
    monkeypatch.setattr(sdft.trainer, "teacher_logits", lambda *a: seen.append(teacher_logits(*a)) or seen[-1])
    return seen


def _topk_trainer(tiny_model_path, tmp_path, **overrides):
    from data_prep import load_task
    from sdft.config import build_config
    from sdft.self_distillation import build_sdft_trainer

    values = dict(model=tiny_model_path, output_dir=str(tmp_path), save_steps=1000, save_model=False,
                  distillation_topk=4, per_device_train_batch_size=3)
    values.update(overrides)
    cfg = build_config("smoke", "sdft", overrides=values)
    recs = load_task("embedded_tool", "train", n=3)
    return build_sdft_trainer(cfg, recs, tmp_path), [{"prompt": r["prompt"], "privileged_context": r["demonstration"]}
                                                     for r in recs]


@pytest.mark.parametrize("estimator", ["analytic", "rao_blackwell"])
def test_trainer_topk_loss_is_the_same_through_every_switch_and_equals_the_loss_function(estimator, tiny_model_path,
                                                                                          tmp_path, monkeypatch):
    """distillation_topk=4 through the trainer: TRL's hook path (whole logits, second pass for the log), the chunked
    lean path, the fused head (the teacher's top K made from its hidden states) and one rollout at a time, teacher
    under no_grad or inference mode, with padding and first-k masking, all give one loss and gradient, equal to
    sdft.losses of the student's logits and the teacher's logits from a plain forward."""
    trainer, inputs = _topk_trainer(tiny_model_path, tmp_path, estimator=estimator, num_loss_tokens_to_skip=1)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    torch.manual_seed(0)
    batch = trainer._prepare_training_batch(inputs)
    n = batch["completion_ids"].size(1)
    batch["completion_mask"][1, 5:] = 0  # a shorter rollout: padding inside the batch
    batch["completion_ids"][1, 5:] = trainer._tokenizer.pad_token_id
    batch["teacher_attention_mask"][1, -n + 5:] = 0
    with torch.no_grad():  # a teacher different from the student
        for p in trainer.teacher_model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    trainer._prepare_inputs = lambda _inputs: batch

    # the reference: both models' plain forwards, the loss function given the teacher's whole logits
    ids = batch["completion_ids"]
    with torch.no_grad():
        t_logits = trainer.teacher_model(input_ids=batch["teacher_input_ids"],
                                         attention_mask=batch["teacher_attention_mask"]).logits[:, -n - 1:-1]
    trainer.model.zero_grad()
    s_logits = trainer.model(input_ids=torch.cat([batch["prompt_ids"], ids], 1),
                             attention_mask=torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
                             ).logits[:, -n - 1:-1]
    ref_loss = self_distillation_loss(s_logits, t_logits, ids, batch["completion_mask"], divergence="forward",
                                      estimator=estimator, skip_first=1, topk=4)
    ref_loss.backward()
    ref_grads = {k: p.grad.clone() for k, p in trainer.model.named_parameters()}
    full = self_distillation_loss(s_logits.detach(), t_logits, ids, batch["completion_mask"], divergence="forward",
                                  estimator=estimator, skip_first=1)
    assert not torch.allclose(full, ref_loss)  # K = 4 of V = 497 is another loss

    seen = _record_teacher_logits(monkeypatch)
    for switches in (dict(loss_chunk_size=0, teacher_inference_mode=False, lean_logits=False, fused_lm_head=False),
                     dict(loss_chunk_size=3, teacher_inference_mode=True, lean_logits=True, fused_lm_head=False),
                     dict(loss_chunk_size=3, teacher_inference_mode=True, lean_logits=True, fused_lm_head=True,
                          sequence_microbatches=False),
                     dict(loss_chunk_size=3, teacher_inference_mode=False, lean_logits=True, fused_lm_head=True,
                          sequence_microbatches=True)):
        for k, v in switches.items():
            setattr(trainer.args, k, v)
        trainer.model.zero_grad()
        if switches.get("sequence_microbatches"):
            loss = trainer.training_step(trainer.model, [{}] * 3)
        else:
            loss = trainer.compute_loss(trainer.model, batch)
            loss.backward()
        torch.testing.assert_close(loss.detach(), ref_loss.detach(), atol=1e-5, rtol=1e-5)
        for k, p in trainer.model.named_parameters():
            torch.testing.assert_close(p.grad, ref_grads[k], atol=1e-5, rtol=1e-4, msg=lambda m, k=k, sw=switches: f"{sw} {k}: {m}")
    assert seen and all(isinstance(x, TeacherTopK) and x.k == 4 for x in seen)


def test_bf16_teacher_topk_equals_the_float32_reduction_up_to_rounding(tiny_model_path, tmp_path):
    trainer, inputs = _topk_trainer(tiny_model_path, tmp_path)
    torch.manual_seed(0)
    batch = trainer._prepare_training_batch(inputs)
    n = batch["completion_ids"].size(1)
    with torch.no_grad():
        ref_logits = trainer.teacher_model(input_ids=batch["teacher_input_ids"],
                                           attention_mask=batch["teacher_attention_mask"]).logits[:, -n - 1:-1]
    ref = teacher_top_k(ref_logits, 4, batch["completion_ids"])
    for lean in (True, False):
        trainer.args.lean_logits = lean
        trainer.args.teacher_dtype = None
        got = _teacher_logits(trainer, batch)
        assert torch.equal(got.ids, ref.ids)
        torch.testing.assert_close(got.logprobs, ref.logprobs, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got.tail_logprob, ref.tail_logprob, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got.token_logprobs, ref.token_logprobs, atol=1e-5, rtol=1e-5)
        trainer.args.teacher_dtype = "bfloat16"
        low = _teacher_logits(trainer, batch)
        assert low.logprobs.dtype == torch.float32 and low.ids.shape == ref.ids.shape
        # rounded, and aligned (a shift by one position would be far off)
        m = batch["completion_mask"].bool()
        gap = (low.token_logprobs - ref.token_logprobs)[m].abs()
        assert 0 < gap.max() < 0.05


def test_smoke_run_with_topk_trains(tiny_model_path, tmp_path, monkeypatch):
    """The smoke preset with distillation_topk=4 for two optimizer steps through the repository's API: the teacher
    reaches the loss as its top-4 reduction, the logged losses are finite and the student's weights move."""
    import json

    from data_prep import load_task
    from sdft.config import build_config
    from sdft.self_distillation import build_sdft_trainer

    cfg = build_config("smoke", "sdft", overrides=dict(model=tiny_model_path, output_dir=str(tmp_path), save_steps=1000,
                                                       save_model=False, max_steps=2, distillation_topk=4,
                                                       learning_rate=1e-2))
    assert cfg.distillation_topk == 4
    trainer = build_sdft_trainer(cfg, load_task("embedded_tool", "train", n=4), tmp_path)
    seen = _record_teacher_logits(monkeypatch)
    before = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    trainer.train()
    assert seen and all(isinstance(x, TeacherTopK) and x.k == 4 for x in seen)
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.named_parameters())
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    assert all(math.isfinite(r["sdft/distillation_loss"]) and r["sdft/distillation_loss"] >= 0 for r in rows
               if "loss" in r)


def test_paper_and_mini_presets_keep_the_full_vocabulary():
    from sdft.config import build_config

    for preset in ("paper", "mini", "smoke"):
        assert build_config(preset, "sdft").distillation_topk == 0, preset


@pytest.mark.slow
def test_bench_topk_loss_runs_at_a_tiny_size(run_module):
    proc = run_module("experiments.bench_topk_loss", ["--batch", "2", "--length", "8", "--vocab", "300", "--hidden",
                                                      "16", "--k", "5", "--chunk", "4", "--reps", "1"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = [line for line in proc.stdout.splitlines() if line.startswith("| logits") or line.startswith("| head")]
    assert len(table) == 4 and sum("top 5 + tail" in line for line in table) == 2
