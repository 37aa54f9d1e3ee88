"""SDFT training on the tiny model: the EMA teacher, the prompts TRL builds, a short run end to end."""

import json
import math

import pytest
import torch

from sdft.config import build_config
from sdft.ema import ema_update_
from sdft.prompts import TEACHER_TEMPLATES, student_messages, teacher_messages
from sdft.self_distillation import build_sdft_trainer

PAPER_SENTENCES = (
    "This is an example for a response to the question:",
    "Now answer with a response of your own, including the thinking process:",
)


def _cfg(tiny_model_path, tmp_path, **overrides):
    values = dict(model=tiny_model_path, output_dir=str(tmp_path), save_steps=1000, save_model=False)
    values.update(overrides)
    return build_config("smoke", "sdft", overrides=values)


def _records(n=8):
    from data_prep import load_task

    return load_task("embedded_tool", "train", n=n)


def _params(model):
    return {k: v.detach().clone() for k, v in model.named_parameters()}


@pytest.mark.parametrize("kind", ["ema", "base", "live"])
def test_teacher_after_one_optimizer_step(kind, tiny_model_path, tmp_path):
    cfg = _cfg(tiny_model_path, tmp_path, max_steps=1, teacher_update_rate=0.1, teacher_model_kind=kind, learning_rate=1e-2)
    trainer = build_sdft_trainer(cfg, _records(), tmp_path)
    theta0 = _params(trainer.model)
    phi0 = _params(trainer.teacher_model)
    for k in theta0:
        torch.testing.assert_close(phi0[k], theta0[k])  # Algorithm 1, line 1: phi = theta
    trainer.train()
    theta1 = _params(trainer.model)
    phi1 = _params(trainer.teacher_model)
    assert any(not torch.equal(theta0[k], theta1[k]) for k in theta0), "the student did not move"
    for k in theta0:
        if kind == "ema":
            expected = 0.1 * theta1[k] + 0.9 * phi0[k]
        elif kind == "base":
            expected = phi0[k]
        else:
            expected = theta1[k]
        torch.testing.assert_close(phi1[k], expected, atol=1e-6, rtol=1e-6, msg=lambda m: f"{kind} {k}: {m}")
    if kind == "live":
        assert trainer.teacher_model is trainer.model


def test_fused_ema_equals_reference_update():
    g = torch.Generator().manual_seed(0)
    teacher = [torch.randn(5, 3, generator=g), torch.randn(7, generator=g)]
    student = [torch.randn(5, 3, generator=g), torch.randn(7, generator=g)]
    expected = [0.05 * s + 0.95 * t for t, s in zip(teacher, student)]
    ema_update_(teacher, student, 0.05)
    for got, want in zip(teacher, expected):
        torch.testing.assert_close(got, want, atol=1e-7, rtol=1e-6)


def test_teacher_prompt_holds_question_demo_and_the_paper_sentences():
    rec = _records(1)[0]
    teacher = teacher_messages(rec, template="paper")
    text = teacher[-1]["content"]
    assert rec["prompt"][-1]["content"] in text
    assert rec["demonstration"] in text
    for sentence in PAPER_SENTENCES:
        assert sentence in text
    # order: question, first sentence, demonstration, second sentence
    positions = [text.index(rec["prompt"][-1]["content"]), text.index(PAPER_SENTENCES[0]),
                 text.index(rec["demonstration"]), text.index(PAPER_SENTENCES[1])]
    assert positions == sorted(positions)
    student = student_messages(rec)
    assert all(rec["demonstration"] not in m["content"] for m in student)
    assert not any(s in m["content"] for m in student for s in PAPER_SENTENCES)
    assert teacher[:-1] == student[:-1]  # system messages are kept


@pytest.mark.parametrize("template", sorted(TEACHER_TEMPLATES))
def test_trainer_builds_the_same_teacher_prompt_as_prompts_module(template, tiny_model_path, tmp_path):
    cfg = _cfg(tiny_model_path, tmp_path, teacher_template=template)
    recs = _records(2)
    trainer = build_sdft_trainer(cfg, recs, tmp_path)
    built = trainer.teacher_context_builder.select_generation_prompts(
        [r["prompt"] for r in recs], [r["demonstration"] for r in recs])
    assert built == [teacher_messages(r, template=template) for r in recs]


def test_three_step_run_changes_student_moves_teacher_and_logs_finite_loss(tiny_model_path, tmp_path):
    cfg = _cfg(tiny_model_path, tmp_path, max_steps=3, teacher_update_rate=0.1, learning_rate=1e-2)
    trainer = build_sdft_trainer(cfg, _records(), tmp_path)
    theta0, phi0 = _params(trainer.model), _params(trainer.teacher_model)
    trainer.train()
    assert any(not torch.equal(theta0[k], v) for k, v in _params(trainer.model).items())
    assert any(not torch.equal(phi0[k], v) for k, v in _params(trainer.teacher_model).items())
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    assert all(math.isfinite(r["sdft/distillation_loss"]) for r in rows if "loss" in r)


@pytest.mark.slow
def test_cli_smoke_run_writes_the_run_directory(tmp_path, run_module):
    out = tmp_path / "run"
    argv = ["--method", "sdft", "--preset", "smoke", "--output-dir", str(out)]
    proc = run_module("sdft.train", argv)  # python -m sdft.train ARGV, forked from the preloaded server
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("config.yaml", "manifest.json", "metrics.jsonl", "model/config.json", "model/model.safetensors"):
        assert (out / name).exists(), name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["divergence"] == "forward"
    assert manifest["packages"]["trl"] == "1.16.0"
    losses = [json.loads(l)["loss"] for l in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in l]
    assert losses and all(math.isfinite(x) for x in losses)
    # rerun: the completed run is skipped, not retrained
    again = run_module("sdft.train", argv)
    assert again.returncode == 0 and "skipping" in again.stdout


@pytest.mark.parametrize("level", ["per_token", "per_sequence"])
def test_vllm_importance_weights_rescale_the_loss(level, tiny_model_path, tmp_path):
    """Algorithm 1, line 17: the loss is reweighted by the truncated ratio pi_train / pi_sampler, token by token
    (TRL) or one weight per rollout, the mean of its truncated ratios over its loss tokens (the authors' code)."""
    from trl.trainer.utils import selective_log_softmax

    from sdft.losses import loss_mask_for, self_distillation_loss
    from sdft.speedups import teacher_logits

    cfg = _cfg(tiny_model_path, tmp_path, importance_sampling_cap=2.0, importance_sampling_level=level,
               fused_lm_head=False)  # the student's logits whole: the loss of the logits below
    trainer = build_sdft_trainer(cfg, _records(2), tmp_path)
    trainer.model.train()
    batch = trainer._prepare_training_batch([{"prompt": r["prompt"], "privileged_context": r["demonstration"]}
                                             for r in _records(2)])
    ids = batch["completion_ids"]
    student_logits = trainer._forward_logits(trainer.model, torch.cat([batch["prompt_ids"], ids], dim=1),
                                             torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1),
                                             ids.size(1))
    teacher = teacher_logits(trainer.teacher_model, batch, trainer.args, trainer._forward_logits,
                             trainer._teacher_weights)

    def loss(sampler_logps=None):  # the trainer's loss of the batch, its rollouts sampled with these log-probs
        extra = {} if sampler_logps is None else {"sampler_per_token_logps": sampler_logps}
        return trainer._sdft_loss(trainer.model, {**batch, **extra})[0]

    plain = loss()
    train_logps = selective_log_softmax(student_logits, ids).detach()
    same = loss(train_logps)
    torch.testing.assert_close(same, plain)  # sampler == trainer: weights are 1
    # the sampler gave every token 4x less probability mass: the ratio 4 is truncated at the cap 2
    capped = loss(train_logps - torch.log(torch.tensor(4.0)))
    torch.testing.assert_close(capped, 2 * plain)
    # a token-dependent ratio: compare with the loss function given the weights explicitly
    shift = torch.linspace(-1.0, 0.5, train_logps.size(1)).expand_as(train_logps)
    mixed = loss(train_logps + shift)
    per_token = torch.exp(-shift).clamp(max=2.0)
    if level == "per_token":
        weights = per_token
    else:  # row by row: the plain mean of the row's capped ratios at its loss positions
        mask = loss_mask_for(batch["completion_mask"], cfg.num_loss_tokens_to_skip)
        rows = []
        for w_row, m_row in zip(per_token.tolist(), mask.tolist()):
            kept = [w for w, m in zip(w_row, m_row) if m]
            rows.append([sum(kept) / len(kept) if kept else 1.0] * len(w_row))
        weights = torch.tensor(rows)
        assert not torch.allclose(weights, per_token)  # the two forms differ on this batch
    expected = self_distillation_loss(student_logits, teacher, ids,
                                      batch["completion_mask"], divergence="forward", is_weights=weights,
                                      skip_first=cfg.num_loss_tokens_to_skip)
    torch.testing.assert_close(mixed, expected)


@pytest.mark.parametrize("generations", [2, 4])
def test_more_rollouts_per_prompt_keep_prompts_per_step_and_steps(generations, tiny_model_path, tmp_path):
    """G rollouts per prompt (Appendix A.1): the same optimizer steps for an epoch as G = 1, each seeing the same
    number of distinct prompts, every one G times, and every rollout weighing 1 / (rollouts per step)."""
    def run(g):
        cfg = _cfg(tiny_model_path, tmp_path / f"g{g}", num_generations=g, max_steps=-1, num_train_epochs=1,
                   per_device_train_batch_size=2, gradient_accumulation_steps=2, max_completion_length=4)
        trainer = build_sdft_trainer(cfg, _records(8), tmp_path / f"g{g}")
        steps, scales = [], []
        build, step = trainer._prepare_training_batch, trainer.training_step

        def recording_build(inputs):
            steps.append([r["prompt"][-1]["content"] if isinstance(r["prompt"], list) else r["prompt"]
                          for r in inputs])
            return build(inputs)

        def recording_step(*args, **kwargs):
            scales.append(trainer.current_gradient_accumulation_steps)
            return step(*args, **kwargs)

        trainer._prepare_training_batch, trainer.training_step = recording_build, recording_step
        trainer.train()
        return cfg, trainer.state.global_step, steps, scales

    cfg1, steps1, batches1, _ = run(1)
    cfg_g, steps_g, batches_g, scales = run(generations)
    assert steps_g == steps1 == 8 // (2 * 2)
    assert len(batches_g) == len(batches1) == steps1  # one generation batch per optimizer step
    for one, many in zip(batches1, batches_g):
        distinct = set(many)
        assert len(distinct) == len(set(one)) == 2 * 2  # prompts per optimizer step: batch x accumulation
        assert all(many.count(p) == generations for p in distinct)
    # micro-batches of per_device_train_batch_size rollouts, each scaled by 1 / (accumulation x G)
    assert scales == [2 * generations] * (steps1 * 2 * generations)
    assert cfg_g.to_dict()["gradient_accumulation_steps"] == 2  # what the user wrote


def test_paper_preset_follows_appendix_b():
    from sdft.config import build_config

    skill = build_config("paper", "sdft", overrides={"task": "science"})
    knowledge = build_config("paper", "sdft", overrides={"task": "knowledge"})
    assert (skill.max_completion_length, knowledge.max_completion_length) == (2048, 1024)
    assert skill.optim.startswith("adamw") and skill.lr_scheduler_type == "cosine" and skill.warmup_steps == 10
    assert skill.max_grad_norm == 1.0 and skill.weight_decay == 0.0 and skill.bf16 is True
    assert skill.num_generations == 1 and skill.teacher_template == "paper" and skill.divergence == "forward"
    assert build_config("paper", "sft").num_train_epochs == 1 and skill.num_train_epochs == 2
    # where the paper is silent, the authors' code: skip 3 tokens, EMA 0.01 every step, one weight per sequence
    assert (skill.num_loss_tokens_to_skip, skill.teacher_update_rate, skill.teacher_sync_steps) == (3, 0.01, 1)
    assert skill.importance_sampling_level == "per_sequence"
    assert knowledge.num_train_epochs == 4  # SDFT's typical choice for knowledge (Appendix B)
    assert build_config("paper", "sft", overrides={"task": "knowledge"}).num_train_epochs == 1
    assert build_config("paper", "reinvoke").num_loss_tokens_to_skip == 0  # no demonstration, no artifact


def test_numeric_overrides_written_without_a_dot_are_numbers():
    """YAML 1.1 reads `1e-4` as a string; `learning_rate=1e-4` on the command line must still be a float."""
    from sdft.config import build_config
    from sdft.config_layers import parse_overrides

    cfg = build_config("mini", "sdft", overrides=parse_overrides(["learning_rate=1e-4", "max_steps=3"]))
    assert cfg.learning_rate == pytest.approx(1e-4) and isinstance(cfg.learning_rate, float) and cfg.max_steps == 3
    with pytest.raises(ValueError, match="learning_rate"):
        build_config("mini", "sdft", overrides={"learning_rate": "fast"})


def test_a_bf16_ema_teacher_moves_as_far_as_the_exact_ema(monkeypatch):
    """bf16 student and teacher, 200 steps of small drift at alpha 0.02: the teacher's distance moved matches the
    float64 EMA of the same (bf16) student weights within 5%. Rounding each update to nearest bf16 -- a plain bf16
    lerp, as TRL and the authors' code do it -- loses most of the distance; the test checks that too, so it can fail."""
    from sdft.ema import stochastic_round_bf16

    monkeypatch.setattr("sdft.ema.EMA_CHUNK", 4096)  # the 20,000 weights in 5 chunks, as large tensors go
    g = torch.Generator().manual_seed(0)
    start = torch.randn(20_000, generator=g) * 0.05
    drift = 1e-5 * torch.sign(torch.randn(20_000, generator=g))  # per step, as an optimizer would move weights
    student = start.double()
    teacher, nearest = start.to(torch.bfloat16), start.to(torch.bfloat16)
    exact = teacher.double()
    phi0 = exact.clone()
    rounding = torch.Generator().manual_seed(1)
    for _ in range(200):
        student += drift
        theta = student.to(torch.bfloat16)
        ema_update_([teacher], [theta], 0.02, generator=rounding)
        torch._foreach_lerp_([nearest], [theta], 0.02)
        exact += 0.02 * (theta.double() - exact)
    exact_moved = (exact - phi0).norm()
    assert abs((teacher.double() - phi0).norm() / exact_moved - 1) < 0.05
    assert (nearest.double() - phi0).norm() / exact_moved < 0.6  # nearest rounding loses much of it

    x = torch.full((200_000,), 1.0 + 2 ** -10)  # an eighth of an ulp above 1.0 in bf16 (ulp 2^-7 there)
    r = stochastic_round_bf16(x, torch.Generator().manual_seed(2)).double()
    assert set(r.unique().tolist()) == {1.0, 1.0 + 2 ** -7}
    assert abs(r.mean().item() - (1.0 + 2 ** -10)) < 3e-5  # unbiased: an eighth of the draws round up (5 sigma)


@pytest.mark.parametrize("fused", [True, False])
def test_loss_temperature_separates_the_target_from_the_sampler(fused, tiny_model_path, tmp_path):
    """``loss_temperature``: the loss compares the student's and the teacher's distributions at that temperature,
    while the importance weights compare the student with the sampler at the sampling temperature. Checked against
    logits taken straight from the two models' forwards."""
    from trl.trainer.utils import selective_log_softmax

    from sdft.losses import self_distillation_loss

    sample_t, loss_t = 0.7, 1.3
    cfg = _cfg(tiny_model_path, tmp_path, temperature=sample_t, loss_temperature=loss_t, fused_lm_head=fused,
               importance_sampling_cap=2.0, importance_sampling_level="per_token")
    trainer = build_sdft_trainer(cfg, _records(2), tmp_path)
    assert (trainer.temperature, trainer.args.distillation_temperature) == (sample_t, loss_t)
    trainer.model.train()
    batch = trainer._prepare_training_batch([{"prompt": r["prompt"], "privileged_context": r["demonstration"]}
                                             for r in _records(2)])
    ids, mask = batch["completion_ids"], batch["completion_mask"]
    T = ids.size(1)
    with torch.no_grad():  # raw logits of the completion positions, no temperature
        raw_s = trainer.model(input_ids=torch.cat([batch["prompt_ids"], ids], dim=1),
                              attention_mask=torch.cat([batch["prompt_mask"], mask], dim=1)).logits[:, -T - 1:-1]
        with trainer._teacher_weights():
            raw_t = trainer.teacher_model(input_ids=batch["teacher_input_ids"],
                                          attention_mask=batch["teacher_attention_mask"]).logits[:, -T - 1:-1]
    # the sampler gave each token exp(shift) times the student's probability at the sampling temperature
    logps_at_sampling = selective_log_softmax(raw_s / sample_t, ids)
    shift = torch.linspace(-1.0, 0.5, T).expand_as(logps_at_sampling)
    got = trainer._sdft_loss(trainer.model, {**batch, "sampler_per_token_logps": logps_at_sampling + shift})[0]

    def expected(t):
        return self_distillation_loss(raw_s / t, raw_t / t, ids, mask, divergence="forward",
                                      is_weights=torch.exp(-shift).clamp(max=2.0),
                                      skip_first=cfg.num_loss_tokens_to_skip)

    torch.testing.assert_close(got, expected(loss_t), rtol=1e-4, atol=1e-6)
    assert not torch.allclose(expected(loss_t), expected(sample_t), rtol=1e-3)  # the key changes the loss


@pytest.mark.parametrize("path", ["fused_head", "fused_head_whole_batch", "logits"])
@pytest.mark.parametrize("bf16", [True, False])
def test_bf16_autocast_reaches_the_students_forward_on_every_loss_path(path, bf16, tiny_model_path, tmp_path):
    """``bf16=True`` puts the student's forward under autocast whichever way the loss reaches it -- the fused head
    (which runs the model's body directly, one rollout at a time or the whole batch) or the model's own logits --
    and ``bf16=False`` never does. Seen from inside the model: a hook on its first decoder layer records, for each
    forward that builds a graph (the student's; the rollouts and the teacher build none), whether autocast is on."""
    switches = {"fused_head": {}, "fused_head_whole_batch": {"sequence_microbatches": False},
                "logits": {"fused_lm_head": False}}[path]
    cfg = _cfg(tiny_model_path, tmp_path, max_steps=1, bf16=bf16, **switches)
    trainer = build_sdft_trainer(cfg, _records(4), tmp_path)
    assert trainer._fused_head_usable(trainer.model) == (path != "logits")
    seen = []
    layer = trainer.model.model.layers[0]
    layer.register_forward_hook(lambda module, args, out: seen.append(
        (torch.is_grad_enabled(), torch.is_autocast_enabled("cpu"))))
    trainer.train()
    student = [autocast for grad, autocast in seen if grad]
    assert student and all(autocast == bf16 for autocast in student), seen


@pytest.mark.parametrize("topk", [0, 3])
def test_teacher_head_stays_float32_inside_a_bf16_runs_autocast(topk, tiny_model_path, tmp_path):
    """With ``teacher_dtype`` the teacher's body runs in bf16 autocast and its output head in float32; a bf16 run
    (``bf16=True``) computes every loss inside its own bf16 autocast, and that must not turn the head to bf16: the
    teacher's target is the same inside that autocast as outside it, with the full logits and with their top K."""
    from sdft.speedups import teacher_logits

    cfg = _cfg(tiny_model_path, tmp_path, teacher_dtype="bfloat16", distillation_topk=topk,
               **({"estimator": "rao_blackwell"} if topk else {}))
    trainer = build_sdft_trainer(cfg, _records(2), tmp_path)
    batch = trainer._prepare_training_batch([{"prompt": r["prompt"], "privileged_context": r["demonstration"]}
                                             for r in _records(2)])

    def target():
        out = teacher_logits(trainer.teacher_model, batch, trainer.args, trainer._forward_logits,
                             trainer._teacher_weights)
        return out if topk == 0 else out.logprobs

    plain = target()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = target()
    assert plain.dtype == inside.dtype == torch.float32
    torch.testing.assert_close(inside, plain, rtol=0, atol=0)


@pytest.mark.parametrize("in_hardware", [False, True, None])
@pytest.mark.parametrize("dtypes", [dict(rollout_dtype="bfloat16", teacher_dtype="bfloat16"),
                                    dict(rollout_dtype="float32", teacher_dtype=None)])
def test_a_bf16_sampler_or_teacher_on_a_cpu_without_bf16_instructions_is_named_as_slow(
        in_hardware, dtypes, tiny_model_path, tmp_path, monkeypatch, capsys):
    """The note names each bf16 setting and the faster float32 ones, on a CPU whose flags show no bf16 dot products
    only (not where they exist, not where the flags cannot be read, not for float32 settings)."""
    import sdft.trainer

    monkeypatch.setattr(sdft.trainer, "bf16_matmul_in_hardware", lambda: in_hardware)
    build_sdft_trainer(_cfg(tiny_model_path, tmp_path, **dtypes), _records(2), tmp_path)
    out = capsys.readouterr().out
    expected = in_hardware is False and dtypes["rollout_dtype"] == "bfloat16"
    assert ("without bf16 dot-product instructions" in out) == expected, out
    if expected:
        assert "rollout_dtype=bfloat16 and teacher_dtype=bfloat16 on a CPU" in out
        assert "rollout_dtype=float32 and teacher_dtype=null are faster" in out


def test_the_cpu_flags_decide_whether_bf16_products_are_in_hardware(monkeypatch):
    from sdft import run_io

    for flags, want in ((set(), None), ({"avx2", "fma"}, False), ({"avx2", "avx512_bf16"}, True),
                        ({"avx2", "amx_bf16", "amx_tile"}, True)):
        monkeypatch.setattr(run_io, "_cpu_info", lambda flags=flags: ("a CPU", flags))
        assert run_io.bf16_matmul_in_hardware() is want, flags
        assert run_io.cpu_description()["bf16_matmul"] is want, flags
