"""The baselines (sdft/baselines): what each one trains on, its loss, and a smoke run of each through the CLI."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from transformers import TrainerCallback

from sdft.config import build_config
from sdft.losses import dft_loss, per_token_divergence
from sdft.prompts import student_messages, teacher_messages

BASELINES = ("sft", "dft", "reinvoke", "cpt", "offline_distill", "sft_from_teacher")


def _cfg(method, tiny_model_path, tmp_path, **overrides):
    values = dict(model=tiny_model_path, output_dir=str(tmp_path), save_steps=1000, save_model=False)
    values.update(overrides)
    return build_config("smoke", method, overrides=values)


def _records(n=4):
    from data_prep import load_task

    return load_task("embedded_tool", "train", n=n)


def _params(model):
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def _prompt_ids(tok, messages):
    return list(tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"])


# ------------------------------------------------------------------------------------------------ SFT
def test_sft_labels_only_the_assistant_tokens(tiny_model_path, tmp_path):
    from sdft.baselines.sft import build_sft_trainer

    recs = _records(2)
    recs[1] = {**recs[1], "demonstration": recs[1]["demonstration"] + " and a longer tail"}  # unequal lengths: padding
    trainer = build_sft_trainer(_cfg("sft", tiny_model_path, tmp_path), recs, tmp_path)
    tok = trainer.processing_class
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    for i, rec in enumerate(recs):
        ids, labels, attn = batch["input_ids"][i], batch["labels"][i], batch["attention_mask"][i]
        prompt = _prompt_ids(tok, student_messages(rec))  # rendered independently, with the assistant header
        real = attn.bool()
        ids_real, labels_real = ids[real], labels[real]
        assert ids_real[: len(prompt)].tolist() == prompt
        assert (labels_real[: len(prompt)] == -100).all(), "a prompt token carries a label"
        assert torch.equal(labels_real[len(prompt):], ids_real[len(prompt):]), "an assistant token is not trained on"
        assert (labels[~real] == -100).all(), "padding carries a label"
        target = tok.decode(labels_real[len(prompt):])
        assert target.startswith(rec["demonstration"])
        assert target[len(rec["demonstration"]):].replace(tok.eos_token, "").strip() == ""


# ------------------------------------------------------------------------------------------------ DFT
def test_dft_loss_equals_hand_computation_on_random_logits():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 11, generator=g, dtype=torch.float64) * 3
    labels = torch.randint(0, 11, (2, 5), generator=g)
    labels[0, :2] = -100
    labels[1, 4] = -100
    total, count = 0.0, 0
    for b in range(2):
        for t in range(5):
            if labels[b, t] == -100:
                continue
            z = logits[b, t].tolist()
            m = max(z)
            log_norm = m + math.log(sum(math.exp(v - m) for v in z))
            logp = z[labels[b, t]] - log_norm
            total += -math.exp(logp) * logp
            count += 1
    assert math.isclose(dft_loss(logits, labels).item(), total / count, rel_tol=1e-12)
    assert math.isclose(dft_loss(logits, labels, reduction="sum").item(), total, rel_tol=1e-12)

    # gradient: each target token's gradient is SFT's times that token's (detached) probability
    x1 = logits.clone().requires_grad_(True)
    dft_loss(x1, labels).backward()
    x2 = logits.clone().requires_grad_(True)
    F.cross_entropy(x2.reshape(-1, 11), labels.reshape(-1), ignore_index=-100).backward()
    p = torch.softmax(logits, -1).gather(-1, labels.clamp(min=0).unsqueeze(-1))  # [2, 5, 1]
    target = (labels != -100).unsqueeze(-1)
    torch.testing.assert_close(x1.grad, torch.where(target, p * x2.grad, torch.zeros_like(x2.grad)), atol=1e-12, rtol=0)
    assert not torch.allclose(x1.grad, x2.grad)


def test_trl_dft_loss_is_ours_and_its_gradient_is_sft_gradient_times_p(tiny_model_path, tmp_path):
    from sdft.baselines.sft import build_sft_trainer

    trainer = build_sft_trainer(_cfg("dft", tiny_model_path, tmp_path), _records(2), tmp_path)
    assert trainer.args.loss_type == "dft"
    model = trainer.model
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    labels = batch["labels"]
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    shifted = labels[:, 1:]
    targets = shifted != -100

    captured = {}

    def keep_hidden(_module, _inputs, output):
        output.last_hidden_state.retain_grad()
        captured["h"] = output.last_hidden_state

    handle = model.model.register_forward_hook(keep_hidden)
    grads, losses = {}, {}
    try:
        for loss_type in ("nll", "dft"):
            trainer.args.loss_type = loss_type
            model.zero_grad()
            loss = trainer.compute_loss(model, {k: v.clone() for k, v in batch.items()})
            loss.backward()
            losses[loss_type], grads[loss_type] = loss.detach(), captured["h"].grad[:, :-1].clone()
    finally:
        handle.remove()
        trainer.args.loss_type = "dft"

    torch.testing.assert_close(losses["dft"], dft_loss(logits[:, :-1], shifted), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(losses["nll"], F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)),
                                                             shifted.reshape(-1), ignore_index=-100), atol=1e-5, rtol=1e-5)
    # d loss / d hidden state at position t: DFT's = p(y_t) * SFT's, exactly; zero off the targets
    p = torch.softmax(logits[:, :-1], -1).gather(-1, shifted.clamp(min=0).unsqueeze(-1))
    torch.testing.assert_close(grads["dft"][targets], (p * grads["nll"])[targets], atol=1e-7, rtol=1e-4)
    assert (grads["dft"][~targets] == 0).all() and (grads["nll"][~targets] == 0).all()
    assert grads["nll"][targets].abs().sum() > 0


# ------------------------------------------------------------------------------------------------ SFT + re-invoke
class _PromptRecorder(TrainerCallback):
    """Records the prompts TRL's SDFT trainer hands to generation (its ``on_generation_prompts_selected`` event)."""

    def __init__(self):
        self.prompts = []

    def on_generation_prompts_selected(self, generation_prompts=None, **kwargs):
        self.prompts.extend(generation_prompts)


def test_reinvoke_stage2_teacher_is_the_frozen_original_base_and_sees_only_general_prompts(tiny_model_path, tmp_path):
    from data_prep.general_prompts import EMBEDDED_GENERAL_PROMPTS
    from sdft.baselines.reinvoke import build_reinvoke_trainer, build_stage1_trainer
    from sdft.training import load_student, run_callbacks

    cfg = _cfg("reinvoke", tiny_model_path, tmp_path, max_steps=2, reinvoke_steps=2, learning_rate=1e-2)
    recs = _records(4)
    base = _params(load_student(cfg)[0])
    sft = build_stage1_trainer(cfg, recs, tmp_path)
    sft.train()
    sft.save_model(str(tmp_path / "sft"))
    # the SFT model reloaded from its checkpoint: its config now names the checkpoint, the trap TRL would fall into
    model, tok = load_student(cfg, str(tmp_path / "sft"))
    assert model.config._name_or_path != tiny_model_path
    sft_params = _params(model)
    assert any(not torch.equal(base[k], sft_params[k]) for k in base), "SFT did not move the model"

    recorder = _PromptRecorder()
    trainer = build_reinvoke_trainer(cfg, model, tok, tmp_path, callbacks=[recorder, *run_callbacks(tmp_path, "reinvoke")])
    assert trainer.args.teacher_model_kind == "base" and trainer.args.distillation_alpha == 1.0  # reverse KL
    teacher = trainer.teacher_model
    for k, v in _params(teacher).items():
        assert torch.equal(v, base[k]), f"teacher {k} is not the original base"
    assert not any(p.requires_grad for p in teacher.parameters())

    def no_teacher_sampling(*a, **k):
        raise AssertionError("stage 2 sampled from the teacher")

    teacher.generate = no_teacher_sampling  # the rollouts are the student's own
    trainer.train()

    for k, v in _params(teacher).items():
        assert torch.equal(v, base[k]), f"teacher {k} changed during stage 2"
    assert any(not torch.equal(sft_params[k], v) for k, v in _params(trainer.model).items()), "student did not move"
    # only general prompts reached the rollouts; no task prompt did; the teacher context equals the student's
    general = [[{"role": "user", "content": t}] for t in EMBEDDED_GENERAL_PROMPTS]
    assert len(recorder.prompts) == 2 * cfg.per_device_train_batch_size
    assert all(p in general for p in recorder.prompts)
    assert not any(p == r["prompt"] or p[-1]["content"] == r["prompt"][-1]["content"] for p in recorder.prompts for r in recs)
    built = trainer.teacher_context_builder.select_generation_prompts(recorder.prompts, [""] * len(recorder.prompts))
    assert built == recorder.prompts
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert {r.get("stage") for r in rows if "loss" in r} == {"sft", "reinvoke"}


def test_general_prompts_are_not_task_prompts_and_cover_the_set():
    from data_prep.general_prompts import EMBEDDED_GENERAL_PROMPTS, load_general_prompts

    prompts = load_general_prompts("embedded")
    assert len(prompts) == len(EMBEDDED_GENERAL_PROMPTS) == len(set(EMBEDDED_GENERAL_PROMPTS)) >= 40
    assert all(len(p) == 1 and p[0]["role"] == "user" for p in prompts)
    task_texts = {m["content"] for r in _records(64) for m in r["prompt"]}
    assert not task_texts & {p[0]["content"] for p in prompts}
    many = load_general_prompts("embedded", n=100, seed=3)
    assert len(many) == 100 and {p[0]["content"] for p in many[:40]} == set(EMBEDDED_GENERAL_PROMPTS)
    assert many == load_general_prompts("embedded", n=100, seed=3) != load_general_prompts("embedded", n=100, seed=4)


# ------------------------------------------------------------------------------------------------ CPT
def test_cpt_trains_on_every_token_of_the_deduplicated_raw_text(tiny_model_path, tmp_path):
    from sdft.baselines.cpt import build_cpt_trainer, corpus_texts

    articles = ["Storm Alma reached the coast on 3 May. Winds of 150 km/h closed the port for two days.",
                "The Rio flood of June displaced 4,000 people; the river rose by 6 metres in one night."]
    recs = [{**r, "meta": {"article": articles[i % 2]}} for i, r in enumerate(_records(4))]
    cfg = _cfg("cpt", tiny_model_path, tmp_path, max_length=32)
    trainer = build_cpt_trainer(cfg, recs, tmp_path)
    assert trainer.cpt_info["cpt_source"] == "meta.article" and trainer.cpt_info["cpt_documents"] == 2
    tok = trainer.processing_class
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(trainer.train_dataset))])
    real = batch["attention_mask"].bool()
    assert batch["input_ids"].size(1) == 32
    assert torch.equal(batch["labels"][real], batch["input_ids"][real]), "a text token is not trained on"
    assert (batch["labels"][~real] == -100).all()
    # the blocks hold exactly the tokens of each distinct article (with its end token), each once
    expected = sorted(t for a in articles for t in tok(a)["input_ids"] + [tok.eos_token_id])
    assert sorted(batch["input_ids"][real].tolist()) == expected
    # a task without raw text falls back to its demonstrations, and says so
    texts, source = corpus_texts(_records(4))
    assert source.startswith("demonstration") and texts == list(dict.fromkeys(r["demonstration"] for r in _records(4)))


# ------------------------------------------------------------------------------------------------ offline distillation
def _independent_offline_loss(model, teacher, tok, recs, rows, template, divergence):
    """The divergence on the cached sequences, one unpadded sequence at a time, prompts rendered afresh."""
    by_id = {r["id"]: r for r in recs}
    per_seq = []
    for row in rows:
        rec = by_id[row["record_id"]]
        y = torch.tensor(row["completion_ids"])
        s_in = torch.cat([torch.tensor(_prompt_ids(tok, student_messages(rec))), y]).unsqueeze(0)
        t_in = torch.cat([torch.tensor(_prompt_ids(tok, teacher_messages(rec, template))), y]).unsqueeze(0)
        n = len(y)
        s_logits = model(input_ids=s_in).logits[:, -n - 1:-1]
        t_logits = teacher(input_ids=t_in).logits[:, -n - 1:-1]
        per_seq.append(per_token_divergence(s_logits, t_logits, divergence).mean())
    return torch.stack(per_seq).mean()


@pytest.mark.slow
def test_offline_distillation_uses_the_cache_only_and_its_loss_is_our_divergence(tiny_model_path, tmp_path,
                                                                                 monkeypatch):
    from sdft.baselines.offline import CACHE_FILE, build_offline_distill_trainer, read_cache

    # checkpoint_selection=final: the protocol's validation evaluations generate (greedily, on validation items)
    # during training by design; here every training sequence must come from the cache
    cfg = _cfg("offline_distill", tiny_model_path, tmp_path, divergence="forward", offline_num_samples=2,
               max_steps=2, learning_rate=1e-2, checkpoint_selection="final")
    recs = _records(3)
    trainer = build_offline_distill_trainer(cfg, recs, tmp_path)
    rows = read_cache(tmp_path / CACHE_FILE)
    assert len(rows) == 3 * 2 and [r["record_id"] for r in rows] == [r["id"] for r in recs for _ in range(2)]
    for row in rows:  # sampled from the demonstration-conditioned teacher context
        rec = next(r for r in recs if r["id"] == row["record_id"])
        assert row["teacher_prompt"] == teacher_messages(rec, cfg.teacher_template)
        assert len(row["completion_ids"]) <= cfg.max_completion_length

    def no_generation(*a, **k):
        raise AssertionError("generation was called after the teacher cache was made")

    monkeypatch.setattr(type(trainer.model), "generate", no_generation)

    # make the student differ from the teacher so the divergence is not ~0
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        for p in trainer.model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    examples = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    for divergence in ("forward", "reverse", 0.5):
        trainer.divergence = divergence
        with torch.no_grad():
            ours = trainer.compute_loss(trainer.model, trainer.data_collator(examples))
            independent = _independent_offline_loss(trainer.model, trainer.teacher_model, trainer.processing_class,
                                                    recs, rows, cfg.teacher_template, divergence)
        assert ours.item() > 1e-3
        torch.testing.assert_close(ours, independent, atol=1e-5, rtol=1e-4, msg=lambda m: f"{divergence}: {m}")
    trainer.divergence = cfg.divergence

    teacher0, student0 = _params(trainer.teacher_model), _params(trainer.model)
    trainer.train()  # generate raises: every sequence comes from the cache
    assert any(not torch.equal(student0[k], v) for k, v in _params(trainer.model).items())
    assert all(torch.equal(teacher0[k], v) for k, v in _params(trainer.teacher_model).items()), "teacher moved"

    # a rebuild with the same settings reuses the cache instead of sampling again
    again = build_offline_distill_trainer(cfg, recs, tmp_path)
    assert again.cache_rows == rows


def test_sft_from_teacher_trains_on_the_cached_teacher_samples(tiny_model_path, tmp_path, monkeypatch):
    from sdft.baselines.offline import CACHE_FILE, generate_teacher_cache, read_cache, train_sft_from_teacher
    from sdft.training import load_student

    # checkpoint_selection=final: the protocol's validation evaluations generate by design (see above)
    cfg = _cfg("sft_from_teacher", tiny_model_path, tmp_path, max_steps=1, checkpoint_selection="final")
    recs = _records(2)
    model, tok = load_student(cfg)
    generate_teacher_cache(cfg, recs, model, tok, tmp_path)
    rows = read_cache(tmp_path / CACHE_FILE)
    seen = []
    import sdft.baselines.sft as sft_module

    real_examples = sft_module.sft_examples

    def spy(records, completions=None):
        seen.append(completions)
        return real_examples(records, completions)

    monkeypatch.setattr(sft_module, "sft_examples", spy)
    monkeypatch.setattr(type(model), "generate", lambda *a, **k: (_ for _ in ()).throw(AssertionError("generated")))
    train_sft_from_teacher(cfg, recs, tmp_path)
    assert seen == [[r["completion"] for r in rows if r["completion"].strip()]]


# ------------------------------------------------------------------------------------------------ the CLI
def _weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.mark.slow
@pytest.mark.parametrize("method", BASELINES)
def test_smoke_run_writes_a_run_directory_with_a_changed_model(method, tmp_path, run_module):
    """``python -m sdft.train --method M --preset smoke`` for every baseline. To keep the file fast, the CLI runs
    in a process of its own (its exit status checked; forked as the launchers fork their runs) for ``reinvoke``,
    the method with the most moving parts, and through the same ``main`` in this process for the others."""
    import shutil
    from pathlib import Path

    from sdft.models import resolve_model_path
    from sdft.train import main

    out = tmp_path / method
    argv = ["--method", method, "--preset", "smoke", "--output-dir", str(out)]
    if method == "reinvoke":
        argv.append("keep_checkpoints=true")  # the resume check below needs them
        proc = run_module("sdft.train", argv)
        assert proc.returncode == 0, proc.stderr[-3000:]
    else:
        assert main(argv) == out
    for name in ("config.yaml", "manifest.json", "metrics.jsonl", "model/config.json", "model/model.safetensors"):
        assert (out / name).exists(), name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["method"] == method
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses and all(math.isfinite(x) for x in losses)
    initial = _weights(Path(resolve_model_path("embedded:tiny-llama")))
    trained = _weights(out / "model")
    assert initial.keys() == trained.keys()
    assert any(not torch.equal(initial[k], trained[k]) for k in initial), "the saved model equals the initial one"
    if method == "reinvoke":
        assert {r.get("stage") for r in rows if "loss" in r} == {"sft", "reinvoke"}
        assert (out / "checkpoints" / "stage1_sft").is_dir() and (out / "checkpoints" / "stage2_reinvoke").is_dir()
        # resume: with the model lost, a rerun restores stage 2's last checkpoint instead of training again
        shutil.rmtree(out / "model")
        n_rows = len(rows)
        assert main(argv) == out
        resumed = _weights(out / "model")
        assert all(torch.equal(trained[k], resumed[k]) for k in trained)
        new_rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][n_rows:]
        assert not any("loss" in r for r in new_rows), "the resumed run trained again"
    if method in ("offline_distill", "sft_from_teacher"):
        assert (out / "teacher_samples.jsonl").exists() and manifest["teacher_samples"] == 8
    if method == "cpt":
        assert manifest["cpt_source"].startswith("demonstration")
