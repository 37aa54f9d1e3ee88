"""sdft.plan: the memory planner's arithmetic against independent counts, its rules, and its command line."""

import json

import pytest
import torch

import sdft.plan as P
from sdft.plan import GIB, KNOWN_MODELS, PlanInput, known_shape, param_count, plan_memory, shape_from_config


def _unique_params(model):
    return {id(p): p for p in model.parameters()}.values()


def _tiny(**config):
    """A tiny transformers model of a family, built in code (random weights, a few hundred thousand parameters)."""
    import transformers

    family = config.pop("family")
    base = dict(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2)
    cfg = getattr(transformers, f"{family}Config")(**{**base, **config})
    cls = getattr(transformers, f"{family.removesuffix('Text')}ForCausalLM")
    torch.manual_seed(0)
    return cls(cfg)


# ------------------------------------------------------------------------------------------------ parameter counts
def test_the_tiny_models_parameters_and_weight_bytes_are_counted_exactly():
    from sdft.models import build_tiny_model, build_tiny_tokenizer

    model = build_tiny_model(build_tiny_tokenizer())
    shape = shape_from_config(model.config.to_dict(), "tiny")
    params = list(_unique_params(model))
    assert param_count(shape) == sum(p.numel() for p in params)
    plan = plan_memory(shape, PlanInput(device="cpu", prompt_length=8, completion_length=4, batch_size=1))
    assert plan.part("student weights") == sum(p.numel() * p.element_size() for p in params)
    # a full fine-tuning's EMA teacher is a copy of the weights, AdamW holds two states of each
    assert plan.part("teacher") == plan.part("student weights")
    assert plan.part("optimizer state (AdamW)") == 2 * plan.part("student weights")
    assert plan_memory(shape, PlanInput(bf16=True, prompt_length=8, completion_length=4)).part("student weights") \
        == 2 * sum(p.numel() for p in params)


@pytest.mark.parametrize("config", [
    {"family": "Llama", "tie_word_embeddings": False, "attention_bias": True, "mlp_bias": True},
    {"family": "Llama", "tie_word_embeddings": True, "head_dim": 32},
    {"family": "Qwen2", "tie_word_embeddings": False},
    {"family": "Qwen3", "tie_word_embeddings": True, "head_dim": 16},
    {"family": "Mistral"},
    {"family": "Gemma3Text", "head_dim": 32},
    {"family": "Olmo2"},
], ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_parameter_counts_of_each_family_match_a_model_built_in_code(config):
    model = _tiny(**config)
    shape = shape_from_config(model.config.to_dict())
    assert "read as Llama's layout" not in shape.source
    assert param_count(shape) == sum(p.numel() for p in _unique_params(model))


@pytest.mark.parametrize("name,total", [
    ("Qwen/Qwen2.5-7B-Instruct", 7_615_616_512),  # the published counts of each model
    ("meta-llama/Llama-3.1-8B-Instruct", 8_030_261_248),
    ("HuggingFaceTB/SmolLM2-135M-Instruct", 134_515_008),
    ("Qwen/Qwen2.5-3B", 3_085_938_688),
])
def test_the_built_in_table_gives_the_published_parameter_counts(name, total):
    assert param_count(known_shape(name)) == total


def test_the_table_matches_the_installed_smollm2_config():
    from sdft.models import cache_dir

    folder = cache_dir() / "models" / "smollm2-135m-instruct"
    if not (folder / "config.json").is_file():
        pytest.skip("embedded:smollm2-135m-instruct is not installed")
    shape = P.model_shape("embedded:smollm2-135m-instruct")
    assert shape.source.endswith("config.json")
    assert param_count(shape) == param_count(KNOWN_MODELS["smollm2-135m"]) == 134_515_008


def test_model_names_resolve_from_the_table_folders_and_adapters(tmp_path, tiny_model_path):
    assert P.model_shape("qwen2.5-7b").hidden == P.model_shape("Qwen/Qwen2.5-7B-Instruct").hidden == 3584
    assert P.model_shape(tiny_model_path).source.endswith("config.json")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "Qwen/Qwen2.5-3B-Instruct"}))
    assert P.model_shape(str(adapter)).hidden == 2048
    tiny = P.model_shape("embedded:tiny-llama")
    assert (tiny.hidden, tiny.layers, tiny.tied) == (64, 2, True)
    with pytest.raises(ValueError, match="not in the planner's table"):
        P.model_shape("some-org/unknown-model-7B")


# ------------------------------------------------------------------------------------------------ LoRA
@pytest.mark.parametrize("targets,r,dora", [(None, 16, False), ("all-linear", 8, False), (["q_proj", "o_proj"], 4, True),
                                            (["gate_proj", "down_proj"], 8, False)])
def test_lora_parameter_counts_match_peft(targets, r, dora):
    from peft import LoraConfig, get_peft_model

    model = _tiny(family="Qwen2", tie_word_embeddings=False)
    shape = shape_from_config(model.config.to_dict())
    peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets, use_dora=dora,
                                                  task_type="CAUSAL_LM"))
    trainable, _ = peft_model.get_nb_trainable_parameters()
    assert P.lora_param_count(shape, r, targets, use_dora=dora) == trainable


def test_lora_modules_to_save_count_the_whole_head():
    from peft import LoraConfig, get_peft_model

    model = _tiny(family="Llama", tie_word_embeddings=False)
    shape = shape_from_config(model.config.to_dict())
    peft_model = get_peft_model(model, LoraConfig(r=8, target_modules=["q_proj", "v_proj"],
                                                  modules_to_save=["lm_head"], task_type="CAUSAL_LM"))
    assert P.lora_param_count(shape, 8, ["q_proj", "v_proj"], modules_to_save=["lm_head"]) == \
        peft_model.get_nb_trainable_parameters()[0]


@pytest.mark.parametrize("trainable_head", [False, True])
def test_the_fused_losss_working_set_is_the_planners_chunk_tensors_and_head_gradient(trainable_head):
    """The constant behind "student logits (fused head)", measured: the peak of torch's CPU allocations in the fused
    loss's forward and backward (torch's profiler) is LOSS_CHUNK_TENSORS float32 [chunk, V] tensors, plus the output
    head's float32 gradient when the head trains."""
    from torch.profiler import ProfilerActivity, profile

    from sdft.losses import head_token_terms, loss_from_terms

    V, H, T, chunk = 8192, 32, 48, 16
    torch.manual_seed(0)
    weight = (torch.randn(V, H) * 0.02).requires_grad_(trainable_head)
    hidden = torch.randn(1, T, H, requires_grad=True)
    teacher, ids, mask = torch.randn(1, T, V), torch.randint(0, V, (1, T)), torch.ones(1, T)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        div, s_tok, t_tok = head_token_terms(hidden, weight, None, teacher, ids, "forward", chunk, True, 0.7)
        loss_from_terms(div, s_tok, t_tok, mask).backward()
    total = peak = 0
    for _, nbytes in sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                            if e.name() == "[memory]"):
        total += nbytes
        peak = max(peak, total)
    expected = P.LOSS_CHUNK_TENSORS * chunk * V * 4 + (V * H * 4 if trainable_head else 0)
    assert peak == pytest.approx(expected, rel=0.1)


# ------------------------------------------------------------------------------------------------ the plan's rules
QWEN7B = known_shape("Qwen/Qwen2.5-7B-Instruct")
PAPER = dict(bf16=True, batch_size=4, gradient_accumulation_steps=8, prompt_length=2048, completion_length=2048,
             gradient_checkpointing=True, use_vllm=True, vllm_enable_sleep_mode=True)


def test_lora_replaces_the_teacher_copy_and_the_optimizer_of_the_whole_model():
    full = plan_memory(QWEN7B, PlanInput(**PAPER))
    lora = plan_memory(QWEN7B, PlanInput(**PAPER, use_peft=True))
    weights = param_count(QWEN7B) * 2
    assert full.part("teacher") == weights and full.part("optimizer state (AdamW)") == 2 * weights
    assert lora.part("teacher") == lora.part("LoRA adapter") < weights / 100  # ema: a second adapter
    assert plan_memory(QWEN7B, PlanInput(**PAPER, use_peft=True, teacher_model_kind="base")).part("teacher") == 0
    assert not full.fits and lora.fits
    assert lora.peak_phase == "rollout" and lora.part("vLLM (colocated, sleeps while training)") == 0.3 * 80 * GIB


def test_sharding_divides_the_states_over_the_gpus():
    one = plan_memory(QWEN7B, PlanInput(**PAPER))
    zero3 = plan_memory(QWEN7B, PlanInput(**PAPER, gpus=8, sharding="zero3"))
    zero2 = plan_memory(QWEN7B, PlanInput(**PAPER, gpus=8, sharding="zero2"))
    fsdp = plan_memory(QWEN7B, PlanInput(**PAPER, gpus=8, sharding="fsdp"))
    assert zero3.part("student weights") == fsdp.part("student weights") == one.part("student weights") / 8
    assert zero2.part("student weights") == one.part("student weights")  # ZeRO-2 keeps whole weights
    assert zero3.part("optimizer state (AdamW)") == param_count(QWEN7B) * 12 / 8  # fp32 master + two fp32 states
    assert fsdp.part("optimizer state (AdamW)") == one.part("optimizer state (AdamW)") / 8
    assert zero3.part("teacher") == one.part("teacher") / 8
    # several processes: the fused head is off and the batch is one forward
    assert zero3.part("student logits") > 0 and one.part("student logits (fused head)") > 0
    assert zero3.part("activations") == pytest.approx(4 * one.part("activations"), rel=0.1)


def test_the_switches_that_change_activations_and_logits():
    base = PlanInput(bf16=True, batch_size=4, prompt_length=1024, completion_length=1024)
    plan = plan_memory(QWEN7B, base)
    checkpointed = plan_memory(QWEN7B, PlanInput(**{**vars(base), "gradient_checkpointing": True}))
    assert checkpointed.part("activations") < plan.part("activations") / 5
    topk = plan_memory(QWEN7B, PlanInput(**{**vars(base), "distillation_topk": 20}))
    assert topk.part("teacher logits (top-K)") < plan.part("teacher logits") / 1000
    unfused = plan_memory(QWEN7B, PlanInput(**{**vars(base), "fused_lm_head": False}))
    assert unfused.part("student logits") > 4 * 1024 * 152064 * 2 * 2  # the batch's logits and their gradient
    assert unfused.part("activations") > 3 * plan.part("activations")  # the batch, not one rollout
    sft = plan_memory(QWEN7B, PlanInput(method="sft", bf16=True, batch_size=4, max_length=2048))
    assert sft.part("teacher") == 0 and sft.part("logits") > 0


def test_qlora_quantizes_the_linear_weights_and_is_refused_without_an_adapter():
    full = plan_memory(QWEN7B, PlanInput(**PAPER, use_peft=True))
    qlora = plan_memory(QWEN7B, PlanInput(**PAPER, use_peft=True, load_in_4bit=True))
    assert qlora.part("student weights") < full.part("student weights") / 2.5
    with pytest.raises(ValueError, match="needs use_peft"):
        plan_memory(QWEN7B, PlanInput(**PAPER, load_in_4bit=True))
    assert "QLoRA" in P.format_plan(qlora)



@pytest.mark.parametrize("generations", [1, 2])
def test_the_plan_takes_the_trainers_micro_batches_per_step(generations):
    """G rollouts per prompt: the trainer runs gradient_accumulation_steps x G micro-batches per step (sdft.sdft_config),
    and so does the plan -- G times, not G squared."""
    from sdft.config import build_config

    cfg = build_config("smoke", "sdft", overrides={"num_generations": generations, "gradient_accumulation_steps": 3})
    assert cfg.training.gradient_accumulation_steps == 3 * generations
    assert P.inputs_from_config(cfg, device="cpu").gradient_accumulation_steps == 3 * generations

# ------------------------------------------------------------------------------------------------ command line
def test_the_command_line_plans_the_paper_preset_with_and_without_lora(capsys):
    assert P.main(["--method", "sdft", "--preset", "paper", "--gpus", "1", "--gpu-memory", "80"]) == 1
    text = capsys.readouterr().out
    assert "memory plan: sdft on Qwen/Qwen2.5-7B-Instruct, full fine-tuning" in text and "does NOT fit" in text
    for part in ("student weights", "optimizer state (AdamW)", "teacher", "activations", "teacher logits", "vLLM"):
        assert part in text
    assert P.main(["--method", "sdft", "--preset", "paper", "use_peft=true", "load_in_4bit=true", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["fits"] is True and plan["input"]["load_in_4bit"] and plan["input"]["batch_size"] == 4


def test_the_command_line_plans_zero3_sft_and_the_cpu(capsys):
    assert P.main(["--method", "sdft", "--preset", "paper", "--gpus", "8", "--zero", "3"]) == 0
    assert "8 x 80 GiB GPUs, ZeRO-3" in capsys.readouterr().out
    assert P.main(["--method", "sft", "--preset", "mini", "--cpu", "per_device_train_batch_size=2"]) == 0
    text = capsys.readouterr().out
    assert "the CPU (float32, no vLLM)" in text and "batch 2 per device" in text and "sequence 576" in text


def test_the_command_line_names_an_unknown_model_in_one_line():
    with pytest.raises(SystemExit, match="error: model 'acme/nothing-1B' is not in the planner's table"):
        P.main(["--preset", "paper", "model=acme/nothing-1B"])
