"""LoRA / QLoRA (sdft.adapters): the config keys, every method with an adapter, SDFT's teachers with adapters, exact
resume of an adapter run, what a run saves and how it is evaluated."""

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sdft.config import build_config, config_keys, describe_fields

ROOT = Path(__file__).resolve().parents[2]
METHODS = ("sdft", "sft", "dft", "reinvoke", "cpt", "offline_distill", "sft_from_teacher")


def _cfg(method, tiny_model_path, tmp_path, **overrides):
    values = dict(model=tiny_model_path, output_dir=str(tmp_path), save_steps=1000, save_model=False,
                  checkpoint_selection="final", use_peft=True, lora_r=4)
    values.update(overrides)
    return build_config("smoke", method, overrides=values)


def _records(n=8):
    from data_prep import load_task

    return load_task("embedded_tool", "train", n=n)


def _adapter(model, name):
    return {k: v.detach().clone() for k, v in model.named_parameters() if f".{name}." in k}


def _base(model):
    return {k: v.detach().clone() for k, v in model.named_parameters() if "lora_" not in k}


# ------------------------------------------------------------------------------------------------ config
def test_peft_keys_are_config_keys_of_every_method_with_trl_defaults_and_help(tmp_path):
    from trl import ModelConfig

    for method in METHODS:
        assert {"use_peft", "lora_r", "lora_alpha", "lora_target_modules", "load_in_4bit", "merge"} <= config_keys(method)
    text = describe_fields("sft")
    assert f"  lora_r (default {ModelConfig.lora_r})" in text and "  merge (default False)" in text
    cfg = build_config("smoke", "sft", overrides={"use_peft": True, "lora_r": 8, "lora_target_modules": "all-linear"},
                       argv=["--lora_alpha", "16"])
    assert (cfg.use_peft, cfg.lora_r, cfg.lora_alpha, cfg.lora_target_modules) == (True, 8, 16, "all-linear")
    assert cfg.to_dict()["lora_r"] == 8  # written to config.yaml, fingerprinted
    from sdft.adapters import peft_config

    lora = peft_config(cfg)
    assert (lora.r, lora.lora_alpha, lora.target_modules) == (8, 16, "all-linear")
    assert peft_config(build_config("smoke", "sft")) is None
    recipe = tmp_path / "lora.yaml"
    recipe.write_text("method: dft\nuse_peft: true\nlora_r: 2\nlora_target_modules: [q_proj, k_proj]\n")
    cfg = build_config("smoke", recipe=recipe, overrides={"lora_r": 3})
    assert (cfg.method, cfg.use_peft, cfg.lora_r, cfg.lora_target_modules) == ("dft", True, 3, ["q_proj", "k_proj"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is the CPU's")
def test_qlora_is_refused_on_the_cpu_before_anything_loads(tmp_path, monkeypatch):
    import transformers

    from sdft.train import main

    def no_load(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_load)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as err:
        main(["--method", "sdft", "--preset", "smoke", "--output-dir", str(out), "use_peft=true", "load_in_4bit=true"])
    message = str(err.value)
    assert "load_in_4bit=true (command line)" in message and "CUDA" in message and "\n" not in message
    assert not out.exists()
    with pytest.raises(ValueError, match="load_in_8bit=true .*set use_peft=true"):
        build_config("smoke", "sft", overrides={"load_in_8bit": True})
    with pytest.raises(ValueError, match="merge=true .*set use_peft=true"):
        build_config("smoke", "sft", overrides={"merge": True})


def test_an_adapter_folder_is_refused_as_the_model_to_train_from(tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(ValueError, match="holds a LoRA adapter, not a model: .*model_merged|_merged"):
        build_config("smoke", "sft", overrides={"model": str(tmp_path)})


# ------------------------------------------------------------------------------------------------ every method
@pytest.mark.parametrize("method", METHODS)
def test_smoke_run_of_every_method_trains_and_saves_an_adapter(method, tiny_model_path, tmp_path):
    from sdft.models import load_model
    from sdft.train import main

    out = tmp_path / method
    argv = ["--method", method, "--preset", "smoke", "--output-dir", str(out), f"model={tiny_model_path}",
            "checkpoint_selection=final", "use_peft=true", "lora_r=4", "learning_rate=1e-2"]
    assert main(argv + (["merge=true"] if method == "sdft" else [])) == out
    model_dir = out / "model"
    assert (model_dir / "adapter_config.json").exists() and not (model_dir / "model.safetensors").exists()
    assert not (model_dir / "teacher").exists()  # the student's adapter only
    adapter = load_file(str(model_dir / "adapter_model.safetensors"))
    assert any("lora_B" in k and v.abs().max() > 0 for k, v in adapter.items()), "the adapter did not train"
    saved = json.loads((out / "manifest.json").read_text())["saved_model"]
    assert saved["path"] == "model" and saved["kind"].startswith("LoRA adapter")
    assert saved["merged"] == ("model_merged" if method == "sdft" else None)
    loaded = load_model(str(model_dir))  # the evaluation's loader: the base with the adapter merged in
    base = load_model(tiny_model_path)
    assert type(loaded) is type(base)
    assert any(not torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), base.state_dict().values()))
    if method == "sdft":  # merge=true: the same model, written whole
        merged = load_model(str(out / "model_merged"))
        assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), merged.state_dict().values()))


def test_evaluation_of_an_adapter_run_prefers_its_merged_copy_and_keeps_vllm_off_the_adapter(tmp_path, monkeypatch):
    import eval.evaluation as evaluation

    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "model" / "adapter_config.json").write_text("{}")
    (run / "config.yaml").write_text("task: embedded_tool\npreset: smoke\n")
    loaded = []

    class Loaded(Exception):
        pass

    def stop(*args, **kwargs):
        raise Loaded

    monkeypatch.setattr("sdft.models.load_model_and_tokenizer", lambda ref: loaded.append(ref) or (None, None))
    monkeypatch.setattr("eval.task_eval.evaluate_task", stop)
    from data_prep.registry import get_task
    from eval.config import build_eval_config

    def evaluate(backend):
        cfg = build_eval_config({"backend": backend}, run_config=evaluation.run_config_of(str(run)))
        return evaluation.evaluate(str(run), get_task("embedded_tool"), cfg)

    with pytest.raises(evaluation.EvaluationError, match="LoRA adapter and vLLM loads full models"):
        evaluate("vllm")
    with pytest.raises(Loaded):
        evaluate("auto")
    assert loaded == [str(run / "model")]
    (run / "model_merged").mkdir()
    (run / "model_merged" / "config.json").write_text(json.dumps({"model_type": "llama"}))  # a folder whose config names its model
    with pytest.raises(Loaded):
        evaluate("hf")
    assert loaded[-1] == str(run / "model_merged")


def test_offline_distillation_of_an_adapter_distils_from_the_initial_model_without_a_copy(tiny_model_path, tmp_path):
    from transformers import AutoModelForCausalLM

    from sdft.baselines.offline import build_offline_distill_trainer, completion_logits
    from sdft.losses import self_distillation_loss

    cfg = _cfg("offline_distill", tiny_model_path, tmp_path, max_steps=1, lora_dropout=0.0)
    trainer = build_offline_distill_trainer(cfg, _records(2), tmp_path)
    trainer.model.train()
    assert trainer.shares_base and not hasattr(trainer, "teacher_model")
    with torch.no_grad():  # a student away from its base
        for k, p in trainer.model.named_parameters():
            if "lora_B" in k:
                p.add_(0.05 * torch.randn_like(p))
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(trainer.train_dataset))])
    c_len = batch["completion_ids"].size(1)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_path).eval()
    with torch.no_grad():
        ours = trainer.compute_loss(trainer.model, batch)
        student = completion_logits(trainer.model, batch["input_ids"], batch["attention_mask"], c_len)
        teacher = completion_logits(base, batch["teacher_input_ids"], batch["teacher_attention_mask"], c_len)
        independent = self_distillation_loss(student, teacher, batch["completion_ids"], batch["completion_mask"],
                                             divergence=cfg.divergence, estimator="analytic",
                                             reduction="sequence_mean")
    assert ours.item() > 1e-4 and trainer.model.training  # the teacher's eval mode ended with its forward
    torch.testing.assert_close(ours, independent, atol=1e-6, rtol=1e-5)


# ------------------------------------------------------------------------------------------------ SDFT's teachers
def test_ema_teacher_adapter_is_the_lerp_of_the_adapters_and_the_base_weights_stay_put(tiny_model_path, tmp_path):
    from sdft.self_distillation import build_sdft_trainer
    from sdft.trainer import TEACHER_ADAPTER

    rate = 0.3
    cfg = _cfg("sdft", tiny_model_path, tmp_path, max_steps=1, teacher_update_rate=rate, learning_rate=1e-2)
    trainer = build_sdft_trainer(cfg, _records(), tmp_path)
    model = trainer.model
    assert trainer.teacher_model is model and trainer.teacher_adapter == TEACHER_ADAPTER  # no copy of the base
    base0 = _base(model)
    theta0, phi0 = _adapter(model, "default"), _adapter(model, TEACHER_ADAPTER)
    assert len(theta0) == len(phi0) > 0
    for k, v in theta0.items():  # the teacher starts as the student (Algorithm 1, line 1)
        assert torch.equal(phi0[k.replace(".default.", f".{TEACHER_ADAPTER}.")], v)
    trainer.train()
    theta1, phi1 = _adapter(model, "default"), _adapter(model, TEACHER_ADAPTER)
    assert any(not torch.equal(theta0[k], theta1[k]) for k in theta0), "the student's adapter did not move"
    for k, student in theta1.items():
        t = k.replace(".default.", f".{TEACHER_ADAPTER}.")
        expected = phi0[t] + rate * (student - phi0[t])  # lerp(previous, student, rate)
        torch.testing.assert_close(phi1[t], expected, rtol=1e-6, atol=1e-8, msg=t)
    assert not any(p.requires_grad for k, p in model.named_parameters() if f".{TEACHER_ADAPTER}." in k)
    base1 = _base(model)  # the base weights are the student's and the teacher's: bitwise unchanged
    assert base0.keys() == base1.keys() and all(torch.equal(base0[k], base1[k]) for k in base0)


@pytest.mark.parametrize("kind", ["ema", "base", "live"])
def test_teacher_kinds_with_adapters(kind, tiny_model_path, tmp_path):
    """ema: the teacher adapter; base: the student with its adapter disabled (the initial model); live: the
    student. None is a second copy of the weights."""
    from transformers import AutoModelForCausalLM

    from sdft.self_distillation import build_sdft_trainer

    cfg = _cfg("sdft", tiny_model_path, tmp_path, max_steps=2, teacher_model_kind=kind, learning_rate=1e-2,
               teacher_update_rate=0.5)
    trainer = build_sdft_trainer(cfg, _records(), tmp_path)
    trainer.train()
    assert trainer.teacher_model is trainer.model
    ids = torch.tensor([[5, 9, 23, 41, 7, 12]])
    with torch.no_grad():
        student = trainer.model(input_ids=ids).logits
        with trainer._teacher_weights():
            teacher = trainer.teacher_model(input_ids=ids).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_model_path)(input_ids=ids).logits
        again = trainer.model(input_ids=ids).logits  # the context put the student back
    assert torch.equal(again, student) and not torch.allclose(student, base, atol=1e-6)
    if kind == "base":
        torch.testing.assert_close(teacher, base)
    elif kind == "live":
        assert torch.equal(teacher, student)
    else:
        assert not torch.allclose(teacher, student, atol=1e-7) and not torch.allclose(teacher, base, atol=1e-7)


def test_fused_and_chunked_paths_give_the_plain_loss_and_gradient_of_a_lora_student(tiny_model_path, tmp_path):
    from sdft.self_distillation import build_sdft_trainer

    recs = _records(2)
    trainer = build_sdft_trainer(_cfg("sdft", tiny_model_path, tmp_path), recs, tmp_path)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train()
    torch.manual_seed(0)
    batch = trainer._prepare_training_batch([{"prompt": r["prompt"], "privileged_context": r["demonstration"]}
                                             for r in recs])
    with torch.no_grad():  # a teacher adapter and a student adapter away from zero and from each other
        for k, p in trainer.model.named_parameters():
            if "lora_" in k:
                p.add_(0.05 * torch.randn_like(p))
    results = []
    for switches in (dict(loss_chunk_size=0, teacher_inference_mode=False, lean_logits=False, fused_lm_head=False),
                     dict(loss_chunk_size=3, teacher_inference_mode=True, lean_logits=True, fused_lm_head=True)):
        for k, v in switches.items():
            setattr(trainer.args, k, v)
        assert trainer._fused_head_usable(trainer.model) == switches["fused_lm_head"]
        trainer.model.zero_grad()
        loss = trainer.compute_loss(trainer.model, batch)
        loss.backward()
        grads = {k: p.grad.clone() for k, p in trainer.model.named_parameters() if p.grad is not None}
        assert grads and all(".default." in k for k in grads)
        results.append((loss.detach(), grads))
    (ref_loss, ref_grads), (loss, grads) = results
    torch.testing.assert_close(loss, ref_loss, atol=1e-5, rtol=1e-5)
    assert grads.keys() == ref_grads.keys()
    for k in grads:
        torch.testing.assert_close(grads[k], ref_grads[k], atol=1e-5, rtol=1e-4)


def test_the_bf16_sampler_copy_is_off_with_adapters_and_says_so(tiny_model_path, tmp_path, capsys):
    from sdft.self_distillation import build_sdft_trainer

    trainer = build_sdft_trainer(_cfg("sdft", tiny_model_path, tmp_path, rollout_dtype="bfloat16"), _records(2),
                                 tmp_path)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[sdft] with adapters")]
    assert len(lines) == 1 and "rollout_dtype=bfloat16 is off" in lines[0]
    assert trainer.sampler_copy is None and trainer._fused_head_usable(trainer.model)


# ------------------------------------------------------------------------------------------------ resume
@pytest.mark.slow
def test_lora_sdft_killed_in_its_second_epoch_resumes_to_the_same_adapters_bitwise(tiny_model_path, tmp_path,
                                                                                   run_module):
    """10 steps of a 4-step epoch, checkpoints every 2; killed after checkpoint-6 (SIGKILL, by
    tests/sdft/interrupted_train.py), then resumed. Each run is a process of its own."""
    def command(out):
        return ["--method", "sdft", "--preset", "smoke", f"model={tiny_model_path}", f"output_dir={out}",
                "max_steps=10", "save_steps=2", "learning_rate=0.01", "save_total_limit=10", "keep_checkpoints=true",
                "checkpoint_selection=final", "teacher_update_rate=0.3", "use_peft=true", "lora_r=4"]

    def run(args, module="sdft.train"):
        return run_module(module, args, env={**os.environ, "INTERRUPT": "SIGKILL"})

    straight, cut = tmp_path / "straight", tmp_path / "cut"
    done = run(command(straight))
    assert done.returncode == 0, done.stderr[-3000:]
    died = run(command(cut), "tests.sdft.interrupted_train")
    assert died.returncode == -9, died.stderr[-3000:]
    checkpoint = cut / "checkpoints" / "checkpoint-6"
    assert (checkpoint / "teacher_model.safetensors").exists() and (checkpoint / "adapter_model.safetensors").exists()
    assert not (checkpoint / "teacher").exists() and not (cut / "model").exists()
    resumed = run(command(cut))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((cut / "manifest.json").read_text())["resumed_from"].endswith("checkpoint-6")

    def same(a, b, what):
        a, b = load_file(str(a)), load_file(str(b))
        assert a.keys() == b.keys() and a
        for k in a:
            assert torch.equal(a[k], b[k]), f"{what} {k}: max |diff| {(a[k] - b[k]).abs().max().item():.3g}"

    same(straight / "model" / "adapter_model.safetensors", cut / "model" / "adapter_model.safetensors", "student")
    same(straight / "checkpoints" / "checkpoint-10" / "teacher_model.safetensors",
         cut / "checkpoints" / "checkpoint-10" / "teacher_model.safetensors", "teacher")
    # both moved after the checkpoint the run resumed from
    for name in ("adapter_model.safetensors", "teacher_model.safetensors"):
        mid, end = load_file(str(checkpoint / name)), load_file(str(cut / "checkpoints" / "checkpoint-10" / name))
        assert any(not torch.equal(mid[k], end[k]) for k in mid), name
