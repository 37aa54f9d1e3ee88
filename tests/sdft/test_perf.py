"""Performance features keep the math: chunked loss == unchunked (values and gradients), fused EMA == reference
update, and the cost benchmark runs end to end on the tiny model."""

import json
import math

import pytest
import torch

from sdft.ema import ema_update_
from sdft.losses import self_distillation_loss, token_terms


def _batch(B=3, T=11, V=37, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(B, T, V, generator=g, dtype=dtype) * 2
    t = torch.randn(B, T, V, generator=g, dtype=dtype) * 2
    ids = torch.randint(0, V, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[0, 7:] = 0
    mask[2, 9:] = 0
    return s, t, ids, mask


CASES = [("forward", "analytic"), ("reverse", "analytic"), (0.3, "analytic"), ("reverse", "token"),
         ("reverse", "rao_blackwell"), ("forward", "rao_blackwell")]


@pytest.mark.parametrize("divergence,estimator", CASES)
@pytest.mark.parametrize("chunk", [1, 4, 10])
def test_chunked_loss_equals_unchunked_values_and_gradients(divergence, estimator, chunk):
    s, t, ids, mask = _batch()
    w = torch.rand(ids.shape, dtype=s.dtype, generator=torch.Generator().manual_seed(3))
    kw = dict(divergence=divergence, estimator=estimator, skip_first=1, is_weights=w)
    s1, s2 = s.clone().requires_grad_(True), s.clone().requires_grad_(True)
    ref, ref_div = self_distillation_loss(s1, t, ids, mask, return_divergence=True, **kw)
    got, got_div = self_distillation_loss(s2, t, ids, mask, chunk_size=chunk, return_divergence=True, **kw)
    ref.backward()
    got.backward()
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(got_div, ref_div, atol=1e-6, rtol=0)
    torch.testing.assert_close(s2.grad, s1.grad, atol=1e-6, rtol=0)


def test_chunked_terms_float32_on_non_contiguous_logits():
    """The trainer's logits are a slice of a longer tensor; the chunked path must not need them contiguous."""
    s, t, ids, _ = _batch(T=9, dtype=torch.float32)
    s_long = torch.cat([s, torch.randn(3, 1, s.size(-1))], dim=1).requires_grad_(True)
    s_view = s_long[:, :-1]
    assert not s_view.is_contiguous()
    ref = [x.detach() for x in token_terms(s, t, ids, "forward")]
    got = token_terms(s_view, t, ids, "forward", chunk_size=2)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a.detach(), b, atol=1e-6, rtol=0)
    (got[0].sum() + got[1].sum()).backward()
    s_ref = s.clone().requires_grad_(True)
    d, lp, _ = token_terms(s_ref, t, ids, "forward")
    (d.sum() + lp.sum()).backward()
    torch.testing.assert_close(s_long.grad[:, :-1], s_ref.grad, atol=1e-6, rtol=0)
    assert torch.count_nonzero(s_long.grad[:, -1]) == 0


def test_chunked_loss_accepts_an_inference_mode_teacher():
    s, t, ids, mask = _batch(dtype=torch.float32)
    with torch.inference_mode():
        t_inf = t.clone()
    s1 = s.clone().requires_grad_(True)
    self_distillation_loss(s1, t_inf, ids, mask, divergence="forward", chunk_size=3).backward()
    s2 = s.clone().requires_grad_(True)
    self_distillation_loss(s2, t, ids, mask, divergence="forward").backward()
    torch.testing.assert_close(s1.grad, s2.grad, atol=1e-6, rtol=0)


def test_fused_ema_equals_reference_per_tensor_update():
    g = torch.Generator().manual_seed(0)
    shapes = [(5, 3), (7,), (2, 4, 6), ()]
    teacher = [torch.randn(sh, generator=g) for sh in shapes]
    student = [torch.randn(sh, generator=g) for sh in shapes]
    reference = [t.clone() for t in teacher]
    alpha = 0.05
    for phi, theta in zip(reference, student):  # TRL's per-tensor loop: phi <- (1 - a) phi + a theta
        phi.mul_(1.0 - alpha).add_(theta, alpha=alpha)
    ema_update_(teacher, student, alpha)
    for got, want in zip(teacher, reference):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)


TINY_BENCH = ["--model", "embedded:tiny-llama", "--steps", "1", "--warmup", "0", "--batch-size", "2",
              "--accumulation", "2", "--max-completion-length", "8", "--rounds", "1", "--eval-limit", "0"]


@pytest.mark.slow
def test_bench_cost_runs_on_the_tiny_model(tmp_path):
    from experiments.bench_cost import main

    out = tmp_path / "bench"
    # the parent in this process; every variant but sft+bf16 (TRL's SFT with TRL's bf16 flag) a process forked from
    # the preloaded server (a fresh interpreter per variant spends ~7 s importing; that start is tested below)
    main([*TINY_BENCH, "--ablations", "chunked_loss", "--sft-padding-free-variant", "--bf16-variant",
          "--fp32-sampler-variant", "--only", "sft,sft-padding_free,sdft,sdft-no-chunked_loss,sdft-trl,sdft+bf16,"
          "sdft+fp32", "--start", "fork", "--out-dir", str(out)])
    result = json.loads((out / "bench_cost.json").read_text())
    md = (out / "bench_cost.md").read_text()
    assert "python -m experiments.bench_cost" in md and "forked from a preloaded server" in md
    names = {v["name"] for v in result["variants"]}
    assert names == {"sft", "sft-padding_free", "sdft", "sdft-no-chunked_loss", "sdft-trl", "sdft+bf16", "sdft+fp32"}
    v = {r["name"]: r for r in result["variants"]}
    # each variant's trainer ran with its own precision and padding, and only those
    flags = {name: r["trainer_flags"] for name, r in v.items()}
    assert flags["sdft+bf16"]["bf16"]
    assert not flags["sft"]["bf16"] and not flags["sdft"]["bf16"] and not flags["sft-padding_free"]["bf16"]
    assert flags["sft-padding_free"]["padding_free"] and not flags["sft"]["padding_free"]
    # the sampler copy and the teacher in bf16 as `mini` runs them, both in float32 in sdft+fp32
    assert (flags["sdft"]["rollout_dtype"], flags["sdft"]["teacher_dtype"]) == ("bfloat16", "bfloat16")
    assert (flags["sdft+fp32"]["rollout_dtype"], flags["sdft+fp32"]["teacher_dtype"]) == ("float32", None)
    # the same batches (same seed), without the padding: the same tokens and targets, fewer positions computed
    for key in ("tokens_per_step", "completion_tokens_per_step"):
        assert v["sft-padding_free"][key] == v["sft"][key]
    assert v["sft-padding_free"]["computed_tokens_per_step"] == v["sft"]["tokens_per_step"]
    assert v["sft"]["computed_tokens_per_step"] >= v["sft"]["tokens_per_step"]
    assert result["ratios"]["sec_per_example_vs_sft_padding_free"] > 0 and "SFT, no padding" in md
    for v in result["variants"]:
        assert v["sec_per_example"] > 0 and v["peak_rss_mb"] > 0 and not v["fresh_interpreter"]
        # an optimizer step is batch x accumulation examples: 2 micro-batches of 2, whose tokens add up
        assert v["examples_per_step"] == 4 and v["sec_per_example"] == pytest.approx(v["sec_per_step"] / 4)
        if v["method"] == "sdft":  # every timer of the split found its method
            # the rollouts of both micro-batches counted (the tiny model rarely ends one before 8 tokens)
            assert 2 * 8 < v["completion_tokens_per_step"] <= 4 * 8
            assert all(v["split"][k] > 0 for k in ("generation", "teacher_forward", "student_forward", "backward"))
    assert result["ratios"]["sec_per_example"] > 0 and result["ratios"]["peak_memory"] > 0


@pytest.mark.slow
def test_bench_cost_starts_each_variant_as_a_fresh_interpreter_by_default(tmp_path, capsys):
    """The committed benchmarks' start: each variant a fresh ``python -m experiments.bench_cost --worker`` (its peak
    memory its own, environment switches set before torch loads)."""
    from experiments.bench_cost import main

    out = tmp_path / "bench"
    main([*TINY_BENCH, "--only", "sft", "--no-eval", "--out-dir", str(out)])
    result = json.loads((out / "bench_cost.json").read_text())
    assert [v["name"] for v in result["variants"]] == ["sft"] and result["settings"]["start"] == "fresh"
    assert result["variants"][0]["sec_per_example"] > 0
    assert result["variants"][0]["fresh_interpreter"]  # the launcher's child, not a fork of the server
    assert "Each variant a fresh interpreter" in capsys.readouterr().out


def test_a_forked_variant_that_needs_an_import_time_environment_is_refused(tmp_path):
    from experiments.bench_cost import main

    with pytest.raises(SystemExit, match="'sft\\+omp_passive' sets \\['OMP_WAIT_POLICY'.*--start fresh"):
        main([*TINY_BENCH, "--omp-passive-variant", "--only", "sft+omp_passive", "--start", "fork",
              "--out-dir", str(tmp_path)])
    assert not (tmp_path / "bench_cost.json").exists()


@pytest.mark.parametrize("divergence,estimator", CASES)
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_fused_head_terms_equal_full_logits(divergence, estimator, temperature):
    """The student's logits made chunk by chunk from hidden states (never whole) give the same loss and the same
    gradients for the hidden states, the output weight and its bias."""
    from sdft.losses import head_token_terms, loss_from_terms

    g = torch.Generator().manual_seed(5)
    B, T, H, V = 3, 11, 6, 37
    hidden = torch.randn(B, T, H, generator=g, dtype=torch.float64)
    weight = torch.randn(V, H, generator=g, dtype=torch.float64)
    bias = torch.randn(V, generator=g, dtype=torch.float64)
    _, t, ids, mask = _batch(B=B, T=T, V=V)
    kw = dict(estimator=estimator, skip_first=1)
    leaves1 = [x.clone().requires_grad_(True) for x in (hidden, weight, bias)]
    logits = (torch.nn.functional.linear(leaves1[0], leaves1[1], leaves1[2])) / temperature
    ref = self_distillation_loss(logits, t, ids, mask, divergence=divergence, **kw)
    ref.backward()
    leaves2 = [x.clone().requires_grad_(True) for x in (hidden, weight, bias)]
    div, s_tok, t_tok = head_token_terms(*leaves2, t, ids, divergence, chunk_size=4, temperature=temperature)
    got = loss_from_terms(div, s_tok, t_tok, mask, **kw)
    got.backward()
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=0)
    for a, b in zip(leaves2, leaves1):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=0)


@pytest.mark.parametrize("estimator", ["analytic", "rao_blackwell"])
def test_trainer_fused_and_chunked_paths_give_the_plain_loss_and_gradient(estimator, tiny_model_path, tmp_path):
    """The trainer's loss and student gradient are the same with every performance switch on or off."""
    from data_prep import load_task
    from sdft.config import build_config
    from sdft.self_distillation import build_sdft_trainer

    cfg = build_config("smoke", "sdft", overrides=dict(model=tiny_model_path, output_dir=str(tmp_path),
                                                       save_steps=1000, save_model=False, estimator=estimator,
                                                       divergence="reverse" if estimator != "analytic" else "forward"))
    recs = load_task("embedded_tool", "train", n=2)
    trainer = build_sdft_trainer(cfg, recs, tmp_path)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train()
    torch.manual_seed(0)
    batch = trainer._prepare_training_batch([{"prompt": r["prompt"], "privileged_context": r["demonstration"]}
                                             for r in recs])
    with torch.no_grad():  # a teacher different from the student
        for p in trainer.teacher_model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    results = []
    for switches in (dict(loss_chunk_size=0, teacher_inference_mode=False, lean_logits=False, fused_lm_head=False),
                     dict(loss_chunk_size=3, teacher_inference_mode=True, lean_logits=True, fused_lm_head=False),
                     dict(loss_chunk_size=3, teacher_inference_mode=True, lean_logits=True, fused_lm_head=True)):
        for k, v in switches.items():
            setattr(trainer.args, k, v)
        assert trainer._fused_head_usable(trainer.model) == switches["fused_lm_head"]
        trainer.model.zero_grad()
        loss = trainer.compute_loss(trainer.model, batch)
        loss.backward()
        grads = {k: p.grad.clone() for k, p in trainer.model.named_parameters() if p.grad is not None}
        results.append((loss.detach(), grads))
    ref_loss, ref_grads = results[0]
    for loss, grads in results[1:]:
        torch.testing.assert_close(loss, ref_loss, atol=1e-5, rtol=1e-5)
        assert grads.keys() == ref_grads.keys()
        for k in grads:
            torch.testing.assert_close(grads[k], ref_grads[k], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("estimator", ["analytic", "rao_blackwell"])
def test_sequence_microbatches_give_the_batched_gradient(estimator, tiny_model_path, tmp_path):
    """One rollout at a time without padding (sequence_microbatches) == the padded batch: same loss, same gradient."""
    from data_prep import load_task
    from sdft.config import build_config
    from sdft.self_distillation import build_sdft_trainer

    cfg = build_config("smoke", "sdft", overrides=dict(model=tiny_model_path, output_dir=str(tmp_path), save_steps=1000,
                                                       save_model=False, estimator=estimator, num_loss_tokens_to_skip=1,
                                                       per_device_train_batch_size=3,
                                                       divergence="reverse" if estimator != "analytic" else "forward"))
    recs = load_task("embedded_tool", "train", n=3)
    trainer = build_sdft_trainer(cfg, recs, tmp_path)
    trainer.current_gradient_accumulation_steps = 1
    trainer.model.train()
    torch.manual_seed(1)
    batch = trainer._prepare_training_batch([{"prompt": r["prompt"], "privileged_context": r["demonstration"]}
                                             for r in recs])
    batch["completion_mask"][1, 5:] = 0  # rollouts of different lengths: padding inside the batch
    batch["completion_ids"][1, 5:] = trainer._tokenizer.pad_token_id
    n = batch["completion_ids"].size(1)
    batch["teacher_attention_mask"][1, -n + 5:] = 0
    with torch.no_grad():
        for p in trainer.teacher_model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    trainer._prepare_inputs = lambda _inputs: batch  # no new rollouts: both paths see the same batch
    results = []
    for micro in (False, True):
        trainer.args.sequence_microbatches = micro
        trainer.model.zero_grad()
        if micro:
            loss = trainer.training_step(trainer.model, [{}] * 3)
        else:
            loss = trainer.compute_loss(trainer.model, batch)
            loss.backward()
        results.append((loss.detach(), {k: p.grad.clone() for k, p in trainer.model.named_parameters()}))
    torch.testing.assert_close(results[1][0], results[0][0], atol=1e-5, rtol=1e-5)
    for k in results[0][1]:
        torch.testing.assert_close(results[1][1][k], results[0][1][k], atol=1e-5, rtol=1e-4)


def _rollout_trainer(tiny_model_path, tmp_path, rollout_dtype, args_overrides=None, **overrides):
    from data_prep import load_task
    from sdft.config import build_config
    from sdft.self_distillation import build_sdft_trainer

    cfg = build_config("smoke", "sdft", overrides=dict(model=tiny_model_path, output_dir=str(tmp_path), save_steps=1000,
                                                       save_model=False, rollout_dtype=rollout_dtype,
                                                       per_device_train_batch_size=3, **overrides))
    recs = load_task("embedded_tool", "train", n=3)
    return build_sdft_trainer(cfg, recs, tmp_path, args_overrides=args_overrides), [{"prompt": r["prompt"], "privileged_context": r["demonstration"]}
                                                     for r in recs]


def _student_logps_of_rollouts(model, batch, temperature=1.0):
    """log pi_student of every sampled token, from one forward over prompt + completion (independent of generate)."""
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    att = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=att).logits
    T = batch["completion_ids"].size(1)
    return torch.log_softmax(logits[:, -T - 1:-1].float() / temperature, -1).gather(
        2, batch["completion_ids"].unsqueeze(-1)).squeeze(-1)


@pytest.mark.parametrize("fast", [True, False], ids=["sdft-sampling-loop", "hf-generate"])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_rollout_sampler_records_the_sampled_tokens_log_probs(temperature, fast, tiny_model_path, tmp_path,
                                                              monkeypatch):
    """With a float32 sampler copy, the recorded log pi_sampler of every sampled token equals the student's own
    log-probability of it, computed independently by one forward over prompt + completion: the recording is
    aligned token by token, applies the temperature, and stops at each row's EOS. Both samplers: sdft.sampling's
    loop (eager attention) and HF generate with the recorder."""
    import sdft.speedups

    trainer, inputs = _rollout_trainer(tiny_model_path, tmp_path, "float32", temperature=temperature,
                                       max_completion_length=12, args_overrides={"fast_rollout_sampler": fast})
    assert trainer.sampler_copy.model is not trainer.model
    assert (trainer.sampler_copy.model.config._attn_implementation == "eager") == fast
    assert trainer.model.config._attn_implementation != "eager"  # the student keeps its own attention
    calls = []
    monkeypatch.setattr(sdft.speedups, "sample_with_logprobs",
                        lambda *a, **k: calls.append(1) or sdft.sampling.sample_with_logprobs(*a, **k))
    torch.manual_seed(0)
    batch = trainer._prepare_training_batch(inputs)
    assert bool(calls) == fast
    logps, mask = batch["sampler_per_token_logps"], batch["completion_mask"]
    assert logps.shape == batch["completion_ids"].shape
    trainer.model.eval()
    ref = _student_logps_of_rollouts(trainer.model, batch, temperature)
    m = mask.bool()
    torch.testing.assert_close(logps[m], ref[m], atol=1e-4, rtol=0)
    eos = trainer.eos_token_ids
    for row, n in zip(batch["completion_ids"], mask.sum(1).tolist()):  # nothing after an EOS is kept
        assert not any(t in eos for t in row[: n - 1].tolist())


def _warped_student_logps(model, batch, temperature, top_k, top_p):
    """log pi_student of every sampled token under the distribution sampled -- its tempered softmax truncated by
    transformers' own top-k and top-p warpers and renormalized -- and under the full tempered softmax."""
    from transformers import TopKLogitsWarper, TopPLogitsWarper

    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    att = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=att).logits
    T = batch["completion_ids"].size(1)
    scores = logits[:, -T - 1:-1].float().flatten(0, 1) / temperature
    full = torch.log_softmax(scores, -1)
    warped = TopPLogitsWarper(top_p)(None, TopKLogitsWarper(top_k)(None, scores))
    tok = batch["completion_ids"].flatten()[:, None]
    return (torch.log_softmax(warped, -1).gather(1, tok).view(-1, T), full.gather(1, tok).view(-1, T))


@pytest.mark.parametrize("rollout_dtype,fast", [("float32", True), ("float32", False), (None, False)],
                         ids=["copy-sdft-sampling-loop", "copy-hf-generate", "student-hf-generate"])
def test_truncated_rollouts_record_the_truncated_distribution(rollout_dtype, fast, tiny_model_path, tmp_path):
    """temperature 0.7, top_k 20, top_p 0.9: the recorded log pi_sampler of every sampled token is that of the
    distribution sampled (HF's warpers on the student's own forward), from the float32 sampler copy (either sampler)
    and from the student itself (no copy: HF generate with the recorder). There the importance weights are the kept
    mass Z_t <= 1 (pi_train is the full tempered softmax), and the rollouts are those TRL's own generate draws for
    the same seed (vllm_importance_sampling off: no recording, TRL's path)."""
    trainer, inputs = _rollout_trainer(tiny_model_path, tmp_path, rollout_dtype, temperature=0.7,
                                       max_completion_length=12,
                                       args_overrides={"fast_rollout_sampler": fast, "top_k": 20, "top_p": 0.9})
    assert (trainer.sampler_copy is None) == (rollout_dtype is None)
    torch.manual_seed(0)
    batch = trainer._prepare_training_batch(inputs)
    logps, m = batch["sampler_per_token_logps"], batch["completion_mask"].bool()
    was_training = trainer.model.training
    trainer.model.eval()
    ref, full = _warped_student_logps(trainer.model, batch, 0.7, 20, 0.9)
    trainer.model.train(was_training)
    assert torch.isfinite(ref[m]).all()
    torch.testing.assert_close(logps[m], ref[m], atol=1e-4, rtol=0)
    if rollout_dtype is None:
        kept_mass = (full - ref).exp()  # Z_t = pi(y_t) / pi_truncated(y_t), the same for every kept token
        assert (kept_mass[m] <= 1 + 1e-5).all() and (kept_mass[m] < 0.999).any()
        trainer.args.importance_sampling_level = "per_token"
        w = trainer._importance_weights(batch, full)
        torch.testing.assert_close(w[m], kept_mass[m], atol=1e-4, rtol=0)  # the trainer's ratio, uncapped
        trainer.args.vllm_importance_sampling = False
        torch.manual_seed(0)
        plain = trainer._prepare_training_batch(inputs)
        assert "sampler_per_token_logps" not in plain
        assert torch.equal(plain["completion_ids"], batch["completion_ids"])


def test_bf16_rollout_sampler_follows_the_student_and_training_uses_its_weights(tiny_model_path, tmp_path):
    """The bf16 sampler is the student's weights cast to bf16 after every optimizer step (ties kept, buffers in
    float32); its rollouts carry log-probs that differ from the student's only by bf16 rounding, and a run trains."""
    trainer, inputs = _rollout_trainer(tiny_model_path, tmp_path, "bfloat16", max_steps=2)
    sampler, student = trainer.sampler_copy.model, trainer.model
    assert all(p.dtype == torch.bfloat16 for p in sampler.parameters())
    assert all(b.dtype == s.dtype for b, s in zip(sampler.buffers(), student.buffers()))
    assert (sampler.get_input_embeddings().weight is sampler.get_output_embeddings().weight) == \
        (student.get_input_embeddings().weight is student.get_output_embeddings().weight)
    before = {n: p.detach().clone() for n, p in student.named_parameters()}
    seen = []
    orig = trainer._importance_weights
    trainer._importance_weights = lambda batch, s_tok: seen.append(orig(batch, s_tok)) or seen[-1]
    trainer.train()
    assert seen and all(w is not None and (w >= 0).all() and (w <= trainer.args.importance_sampling_cap).all()
                        for w in seen)
    assert any(not torch.equal(before[n], p) for n, p in student.named_parameters())
    logged = [h["sampler_is_weight"] for h in trainer.state.log_history if "sampler_is_weight" in h]
    assert logged and all(0.5 < w < 1.5 for w in logged)  # bf16 vs float32: weights near 1
    trainer.sampler_copy.sync(trainer.state.global_step)
    for (n, p), (_, q) in zip(student.named_parameters(), sampler.named_parameters()):
        assert torch.equal(q, p.detach().to(torch.bfloat16)), n
    torch.manual_seed(0)
    batch = trainer._prepare_training_batch(inputs)
    ref = _student_logps_of_rollouts(student, batch)
    m = batch["completion_mask"].bool()
    gap = (batch["sampler_per_token_logps"][m] - ref[m]).abs()
    assert gap.max() < 0.1 and gap.max() > 0  # bf16 rounding: close, not identical


def test_rollout_dtype_rejects_unknown_names():
    from sdft.sdft_config import SelfDistillationConfig

    with pytest.raises(ValueError, match="rollout_dtype"):
        SelfDistillationConfig(output_dir="/tmp/x", rollout_dtype="int3", report_to=[])


def _teacher_reference_logits(teacher, batch):
    """The teacher's logits of the completion positions from one plain float32 forward of its whole input."""
    T = batch["completion_ids"].size(1)
    with torch.no_grad():
        return teacher(input_ids=batch["teacher_input_ids"],
                       attention_mask=batch["teacher_attention_mask"]).logits[:, -T - 1:-1].float()


@pytest.mark.parametrize("lean", [True, False], ids=["body-autocast-head-fp32", "whole-forward-autocast"])
def test_bf16_teacher_equals_the_float32_teacher_up_to_bf16_rounding(lean, tiny_model_path, tmp_path):
    from sdft.speedups import teacher_logits

    trainer, inputs = _rollout_trainer(tiny_model_path, tmp_path, None, max_completion_length=12)
    trainer.args.lean_logits = lean
    torch.manual_seed(0)
    batch = trainer._prepare_training_batch(inputs)
    ref = _teacher_reference_logits(trainer.teacher_model, batch)

    def teacher():  # as the trainer's loss takes it
        return teacher_logits(trainer.teacher_model, batch, trainer.args, trainer._forward_logits,
                              trainer._teacher_weights)

    torch.testing.assert_close(teacher(), ref, atol=1e-5, rtol=1e-5)
    trainer.args.teacher_dtype = "bfloat16"
    low = teacher()
    assert low.dtype == torch.float32 and low.shape == ref.shape
    m = batch["completion_mask"].bool()
    gap = (torch.log_softmax(low, -1) - torch.log_softmax(ref, -1))[m].abs()
    assert 0 < gap.max() < 0.05  # rounded, and aligned (a shift by one position would be far off)


def test_bf16_teacher_runs_its_body_under_autocast_and_the_student_does_not(tiny_model_path, tmp_path):
    trainer, _ = _rollout_trainer(tiny_model_path, tmp_path, None, teacher_dtype="bfloat16", max_steps=2)
    assert trainer.args.teacher_dtype == "bfloat16" and trainer.teacher_model is not trainer.model
    seen = {"teacher": [], "student": []}
    for name, model in (("teacher", trainer.teacher_model), ("student", trainer.model)):
        model.model.register_forward_pre_hook(
            lambda *_, name=name: seen[name].append(torch.is_autocast_enabled("cpu")))
    trainer.train()
    assert seen["teacher"] and all(seen["teacher"])
    assert seen["student"] and not any(seen["student"])
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert losses and all(math.isfinite(x) for x in losses)


def test_teacher_dtype_rejects_unknown_names():
    from sdft.sdft_config import SelfDistillationConfig

    for bad in ("fp8", "float32"):  # float32 is no autocast type: leave teacher_dtype unset for the training dtype
        with pytest.raises(ValueError, match="teacher_dtype"):
            SelfDistillationConfig(output_dir="/tmp/x", teacher_dtype=bad, report_to=[])


def test_the_trainer_warns_when_trl_or_transformers_is_not_the_checked_version(monkeypatch):
    import importlib.metadata

    import sdft.trainer

    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.0.1" if name == "trl" else real(name))
    with pytest.warns(UserWarning, match=r"installed: \{'trl': '0.0.1'\}"):
        sdft.trainer._warn_on_other_versions()
    monkeypatch.setattr(importlib.metadata, "version", real)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sdft.trainer._warn_on_other_versions()  # the pinned versions: silent


def test_padding_free_sft_gives_the_padded_loss_and_gradients(tmp_path):
    """``sft-padding_free`` (bench_cost) is SFT computing no padding, not another objective: on a batch of the tiny
    model with sequences of different lengths, TRL's padding_free (one concatenated row, attention kept within each
    sequence by its position ids) gives the loss and the gradients of the padded batch."""
    from data_prep.registry import load_task
    from sdft.baselines.sft import build_sft_trainer
    from sdft.config import build_config

    records = load_task("embedded_tool", "train")[:4]
    results = {}
    for padding_free in (False, True):
        lengths = {"padding_free": True, "max_length": None} if padding_free else {}
        cfg = build_config("smoke", "sft", overrides=dict(
            model="embedded:tiny-llama", task="embedded_tool", per_device_train_batch_size=4, n_train=None,
            output_dir=str(tmp_path / str(padding_free)), save_model=False, seed=0, **lengths))
        trainer = build_sft_trainer(cfg, records, tmp_path / str(padding_free), callbacks=[])
        batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
        if padding_free:
            assert batch["input_ids"].size(0) == 1 and "attention_mask" not in batch
        else:
            assert batch["attention_mask"].sum() < batch["attention_mask"].numel()  # some padding to skip
        trainer.model.eval()  # no dropout
        loss = trainer.compute_loss(trainer.model, batch)
        loss.backward()
        results[padding_free] = (loss.detach(), {n: p.grad.clone() for n, p in trainer.model.named_parameters()})
    (loss_padded, grads_padded), (loss_free, grads_free) = results[False], results[True]
    torch.testing.assert_close(loss_free, loss_padded, rtol=1e-5, atol=1e-6)
    for name, grad in grads_padded.items():
        torch.testing.assert_close(grads_free[name], grad, rtol=1e-4, atol=1e-6, msg=name)
