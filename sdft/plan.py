"""Memory planner: how much memory one training process of a run needs, part by part, before anything is loaded.

    python -m sdft.plan --method sdft --preset paper --gpus 1 --gpu-memory 80            # Qwen2.5-7B, full fine-tuning
    python -m sdft.plan --method sdft --preset paper --gpus 1 use_peft=true lora_r=16    # ... with a LoRA adapter
    python -m sdft.plan --method sdft --preset paper --gpus 8 --zero 3                   # ZeRO-3 on 8 GPUs (or --fsdp)
    python -m sdft.plan --method sdft --preset mini --cpu                                # the CPU run of `mini` (fp32)
    python -m sdft.plan --method sft --preset paper --config RECIPE.yaml model=Qwen/Qwen2.5-3B-Instruct --json

The run's config is resolved as ``sdft.train`` resolves it (``sdft.config.build_config``: preset, ``--config``
recipe, ``key=value``), so every key ``sdft.train`` takes is read here where it changes memory: ``bf16``,
``per_device_train_batch_size``, ``gradient_accumulation_steps``, ``max_prompt_length``, ``max_completion_length``,
``max_length``, ``gradient_checkpointing``, ``optim``, the LoRA / QLoRA keys (``use_peft``, ``lora_r``,
``lora_target_modules``, ``lora_dropout``, ``lora_modules_to_save``, ``use_dora``, ``load_in_4bit``,
``load_in_8bit``, ``use_bnb_nested_quant``), SDFT's ``teacher_model_kind``, ``fused_lm_head``,
``sequence_microbatches``, ``lean_logits``, ``loss_chunk_size``, ``distillation_topk``, ``temperature``,
``teacher_dtype``, ``rollout_dtype`` and vLLM's ``use_vllm``, ``vllm_mode``, ``vllm_gpu_memory_utilization``,
``vllm_enable_sleep_mode``. What is not a key of a run -- the cards, their memory, ZeRO / FSDP (accelerate's
config) -- are options. The model's shape comes from ``model_shape`` (a built-in table of hub models, a local folder's
``config.json``, the embedded models); nothing is downloaded.

The arithmetic is pure functions of a ``ModelShape`` and a ``PlanInput`` (``plan_memory``), which returns every
part with its size, the peak per device and the assumptions it made. The parts, per device:

  * static: the student's weights, the teacher (a copy of the weights for SDFT's ``ema`` / ``base`` teachers and
    offline distillation; an adapter or nothing with LoRA), AdamW's two states, the ``rollout_dtype`` sampler copy,
    vLLM's share when it does not sleep, a runtime allowance (CUDA context, workspaces; 0 on the CPU);
  * the training phase: activations saved for backward, the logits, the gradients (all of them when they persist
    across micro-batches: gradient accumulation, or SDFT's one-rollout-at-a-time backward; else the output
    head's, which backward makes first);
  * the optimizer step: the gradients and AdamW's temporaries;
  * rollouts: vLLM's share (``vllm_gpu_memory_utilization`` of the card) when it sleeps during training.

The peak is static + the largest phase. Checked against measured peaks on the CPU:
``experiments/results/memory_plan/`` (``python -m experiments.memory_plan``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdft.config import build_config
from sdft.config_layers import parse_overrides
from sdft.errors import UserError, reported_as_one_line

GIB = 1024 ** 3
MIB = 1024 ** 2
DEFAULT_LORA_TARGETS = ("q_proj", "v_proj")  # PEFT's choice for Llama / Qwen / Mistral / Gemma (TRL's default: None)
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LOSS_CHUNK_TENSORS = 7  # [chunk, V] float32 tensors alive at once in the chunked loss (tests/sdft/test_plan.py measures)
GPU_RUNTIME_GIB = 1.0  # CUDA context, cuBLAS workspaces, allocator fragmentation: an allowance, not a measurement
METHOD_KINDS = {"sdft": "sdft", "reinvoke": "sdft", "offline_distill": "offline", "sft": "sft", "dft": "sft",
                "cpt": "sft", "sft_from_teacher": "sft"}




class PlanError(UserError, ValueError):
    """A model or a setting the planner cannot plan (named in the message)."""


# ------------------------------------------------------------------------------------------------ model shapes
@dataclass(frozen=True)
class ModelShape:
    """What the planner needs of a decoder-only transformer (Llama / Qwen2 / Qwen3 / Mistral / Gemma 3 / OLMo 2)."""

    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    head_dim: int | None = None  # default hidden // heads
    tied: bool = False  # the output head shares the embedding's weights
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    norms_per_layer: int = 2  # RMSNorms over the hidden size in each layer (Gemma 3: 4)
    qk_norm: int = 0  # weights of the per-layer query / key norms (Qwen3, Gemma 3: 2 x head_dim; OLMo 2: q + k dims)
    source: str = "built-in table"

    @property
    def hd(self) -> int:
        return self.head_dim or self.hidden // self.heads

    @property
    def q_dim(self) -> int:
        return self.heads * self.hd

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.hd

    def linears(self) -> list[tuple[str, int, int, bool]]:
        """(name, in features, out features, bias) of each linear layer of one decoder layer."""
        H, M = self.hidden, self.intermediate
        return [("q_proj", H, self.q_dim, self.qkv_bias), ("k_proj", H, self.kv_dim, self.qkv_bias),
                ("v_proj", H, self.kv_dim, self.qkv_bias), ("o_proj", self.q_dim, H, self.o_bias),
                ("gate_proj", H, M, self.mlp_bias), ("up_proj", H, M, self.mlp_bias), ("down_proj", M, H, self.mlp_bias)]

    def describe(self) -> str:
        heads = f"{self.heads}/{self.kv_heads} heads of {self.hd}"
        return (f"{param_count(self) / 1e9:.3g} B parameters: hidden {self.hidden}, {self.layers} layers, {heads}, MLP "
                f"{self.intermediate}, vocabulary {self.vocab}, {'tied' if self.tied else 'separate'} output head "
                f"({self.source})")


def layer_param_count(shape: ModelShape) -> int:
    """Parameters of one decoder layer: its linears (and biases), its norms."""
    linear = sum(i * o + (o if bias else 0) for _, i, o, bias in shape.linears())
    return linear + shape.norms_per_layer * shape.hidden + shape.qk_norm


def param_count(shape: ModelShape) -> int:
    """Every parameter, a tied head counted once (as ``sum(p.numel() for p in model.parameters())``)."""
    embed = shape.vocab * shape.hidden
    return embed + shape.layers * layer_param_count(shape) + shape.hidden + (0 if shape.tied else embed)


def _m(name, hidden, layers, heads, kv, inter, vocab, **kw) -> ModelShape:
    return ModelShape(name, hidden, layers, heads, kv, inter, vocab, **kw)


# Shapes of the models this repository names (the config.json of each on the hub; an instruct model has its base's)
KNOWN_MODELS = {m.name.lower(): m for m in [
    _m("Qwen2.5-0.5B", 896, 24, 14, 2, 4864, 151936, tied=True, qkv_bias=True),
    _m("Qwen2.5-1.5B", 1536, 28, 12, 2, 8960, 151936, tied=True, qkv_bias=True),
    _m("Qwen2.5-3B", 2048, 36, 16, 2, 11008, 151936, tied=True, qkv_bias=True),
    _m("Qwen2.5-7B", 3584, 28, 28, 4, 18944, 152064, qkv_bias=True),
    _m("Qwen2.5-14B", 5120, 48, 40, 8, 13824, 152064, qkv_bias=True),
    _m("Llama-3.2-1B", 2048, 16, 32, 8, 8192, 128256, tied=True),
    _m("Llama-3.2-3B", 3072, 28, 24, 8, 8192, 128256, tied=True),
    _m("Llama-3.1-8B", 4096, 32, 32, 8, 14336, 128256),
    _m("SmolLM2-135M", 576, 30, 9, 3, 1536, 49152, tied=True),
    _m("SmolLM2-360M", 960, 32, 15, 5, 2560, 49152, tied=True),
    _m("SmolLM2-1.7B", 2048, 24, 32, 32, 8192, 49152, tied=True),
    _m("gemma-3-270m", 640, 18, 4, 1, 2048, 262144, head_dim=256, tied=True, norms_per_layer=4, qk_norm=512),
]}
_SUFFIXES = ("-instruct", "-it")
_EMBEDDED_TABLE = {"smollm2-135m-instruct": "smollm2-135m", "gemma3-270m": "gemma-3-270m"}


def known_shape(name: str) -> ModelShape | None:
    """The table's shape of a hub id (``Qwen/Qwen2.5-7B-Instruct``, ``qwen2.5-7b``; case and an instruct suffix are
    ignored), or ``None``."""
    key = name.rstrip("/").split("/")[-1].lower()
    for suffix in _SUFFIXES:
        key = key.removesuffix(suffix)
    shape = KNOWN_MODELS.get(key)
    return dataclasses.replace(shape, name=name) if shape else None


def shape_from_config(config: dict[str, Any], name: str = "model", source: str = "config.json") -> ModelShape:
    """A ``ModelShape`` from a transformers ``config.json`` (a dict): Llama, Qwen2, Qwen3, Mistral, Gemma 3, OLMo 2
    and their kin; another ``model_type`` is read as Llama's layout (``source`` then says so)."""
    config = config.get("text_config") or config
    kind = config.get("model_type", "")
    heads = config["num_attention_heads"]
    kv = config.get("num_key_value_heads") or heads
    hidden = config["hidden_size"]
    head_dim = config.get("head_dim") or hidden // heads
    bias = bool(config.get("attention_bias", False))
    extra: dict[str, Any] = {"qkv_bias": bias, "o_bias": bias}
    if kind == "qwen2":
        extra = {"qkv_bias": True, "o_bias": False}
    elif kind == "qwen3":
        extra["qk_norm"] = 2 * head_dim
    elif kind.startswith("gemma3"):
        extra.update(norms_per_layer=4, qk_norm=2 * head_dim)
    elif kind.startswith("olmo2") or kind.startswith("olmo3"):
        extra["qk_norm"] = heads * head_dim + kv * head_dim
    elif kind not in ("llama", "mistral", "qwen2", "smollm3"):
        source += f" (model_type {kind!r} read as Llama's layout)"
    return ModelShape(name, hidden, config["num_hidden_layers"], heads, kv, config["intermediate_size"],
                      config["vocab_size"], head_dim=head_dim, tied=bool(config.get("tie_word_embeddings", False)),
                      mlp_bias=bool(config.get("mlp_bias", False)), source=source, **extra)


def model_shape(name: str) -> ModelShape:
    """The shape of a model name as ``sdft.train`` takes it, reading only local files: an ``embedded:`` model (its
    built folder's ``config.json``; before it is built, the table or ``build_tiny_model``'s shape), a local folder
    (its ``config.json``, or the base its ``adapter_config.json`` names), a hub id of the built-in table."""
    from sdft.models import EMBEDDED_PREFIX, TINY, cache_dir, is_embedded, looks_like_path

    if is_embedded(name):
        key = name[len(EMBEDDED_PREFIX):]
        folder = cache_dir() / "models" / key
        if (folder / "config.json").is_file():
            return _folder_shape(folder, name)
        if key == TINY:
            return _tiny_shape(name)
        if key in _EMBEDDED_TABLE:
            return dataclasses.replace(KNOWN_MODELS[_EMBEDDED_TABLE[key]], name=name)
        raise PlanError(f"unknown embedded model {name!r}")
    folder = Path(name).expanduser()
    if folder.is_dir():
        return _folder_shape(folder, name)
    shape = known_shape(name)
    if shape is None:
        if looks_like_path(name):
            raise PlanError(f"no model folder at {name}")
        known = ", ".join(m.name for m in KNOWN_MODELS.values())
        raise PlanError(f"model {name!r} is not in the planner's table ({known}) and is no local folder: pass "
                         "model=<a folder holding its config.json> (the hub is not read)")
    return shape


def _folder_shape(folder: Path, name: str) -> ModelShape:
    config = folder / "config.json"
    if not config.is_file() and (folder / "adapter_config.json").is_file():
        from sdft.adapters import adapter_base

        return model_shape(adapter_base(folder))
    return shape_from_config(json.loads(config.read_text()), name, source=str(config))


def _tiny_shape(name: str) -> ModelShape:
    """``sdft.models.build_tiny_model``'s shape (its vocabulary is its tokenizer's, built in code)."""
    from sdft.models import build_tiny_model, build_tiny_tokenizer

    config = build_tiny_model(build_tiny_tokenizer()).config.to_dict()
    return shape_from_config(config, name, source="sdft.models.build_tiny_model")


# ------------------------------------------------------------------------------------------------ LoRA
def lora_targets(shape: ModelShape, target_modules: Any = None) -> list[str]:
    """The linear layers of a decoder layer that LoRA adapts: PEFT's default (``q_proj``, ``v_proj``), ``all-linear``
    (every linear of the layers; never the output head) or the names given."""
    names = [n for n, *_ in shape.linears()]
    if target_modules in (None, [], ()):
        return [n for n in names if n in DEFAULT_LORA_TARGETS]
    if target_modules == "all-linear" or target_modules == ["all-linear"]:
        return names
    wanted = [target_modules] if isinstance(target_modules, str) else list(target_modules)
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        raise PlanError(f"lora_target_modules {unknown}: the planner knows the layers' linears {names} only")
    return [n for n in names if n in wanted]


def lora_param_count(shape: ModelShape, r: int, target_modules: Any = None, use_dora: bool = False,
                     modules_to_save: Any = None) -> int:
    """Trainable parameters of a LoRA adapter (as ``peft``'s ``get_nb_trainable_parameters``): r x (in + out) per
    adapted linear (and DoRA's magnitude, one per output feature), plus the full modules of ``modules_to_save``
    (``lm_head``, ``embed_tokens``)."""
    dims = {n: (i, o) for n, i, o, _ in shape.linears()}
    per_layer = sum(r * (dims[n][0] + dims[n][1]) + (dims[n][1] if use_dora else 0)
                    for n in lora_targets(shape, target_modules))
    return shape.layers * per_layer + _saved_modules_params(shape, modules_to_save)


def _saved_modules_params(shape: ModelShape, modules_to_save: Any) -> int:
    names = [modules_to_save] if isinstance(modules_to_save, str) else list(modules_to_save or [])
    unknown = sorted(set(names) - {"lm_head", "embed_tokens"})
    if unknown:
        raise PlanError(f"lora_modules_to_save {unknown}: the planner knows lm_head and embed_tokens only")
    return len(names) * shape.vocab * shape.hidden


# ------------------------------------------------------------------------------------------------ the run
@dataclass
class PlanInput:
    """Everything of a run that changes its memory (``inputs_from_config`` fills it from a run's config)."""

    method: str = "sdft"
    device: str = "gpu"  # gpu | cpu (the CPU trains in float32, without vLLM)
    gpus: int = 1  # processes, one per GPU (data parallel, or sharded by ``sharding``)
    gpu_memory_gib: float = 80.0
    sharding: str = "none"  # none | zero1 | zero2 | zero3 | fsdp
    bf16: bool = True
    batch_size: int = 4  # per_device_train_batch_size: rollouts (SDFT) or sequences (SFT) per micro-batch
    gradient_accumulation_steps: int = 1
    prompt_length: int = 1024
    completion_length: int = 1024
    max_length: int | None = None  # SFT's sequence length (default: prompt + completion)
    gradient_checkpointing: bool = False
    optim: str = "adamw_torch"
    use_peft: bool = False
    lora_r: int = 16
    lora_target_modules: Any = None
    lora_dropout: float = 0.05
    lora_modules_to_save: Any = None
    use_dora: bool = False
    load_in_4bit: bool = False
    load_in_8bit: bool = False
    use_bnb_nested_quant: bool = False
    teacher_model_kind: str = "ema"
    fused_lm_head: bool = True
    sequence_microbatches: bool = True
    lean_logits: bool = True
    loss_chunk_size: int = 64
    distillation_topk: int = 0
    temperature: float = 1.0
    teacher_dtype: str | None = None
    rollout_dtype: str | None = None
    use_vllm: bool = False
    vllm_mode: str = "colocate"
    vllm_gpu_memory_utilization: float = 0.3
    vllm_enable_sleep_mode: bool = False
    runtime_gib: float | None = None  # default GPU_RUNTIME_GIB on a GPU, 0 on the CPU


@dataclass
class Part:
    name: str
    bytes: float
    how: str
    phase: str  # static | train | optimizer | rollout


@dataclass
class MemoryPlan:
    shape: ModelShape
    input: PlanInput
    parts: list[Part]
    phases: dict[str, float]  # phase -> bytes of its parts
    peak_bytes: float
    peak_phase: str
    budget_bytes: float | None
    assumptions: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool | None:
        return None if self.budget_bytes is None else self.peak_bytes <= self.budget_bytes

    def part(self, name: str) -> float:
        return sum(p.bytes for p in self.parts if p.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.shape.name, "shape": dataclasses.asdict(self.shape), "input": dataclasses.asdict(self.input),
                "parameters": param_count(self.shape),
                "parts": [{"name": p.name, "gib": p.bytes / GIB, "phase": p.phase, "how": p.how} for p in self.parts],
                "phases_gib": {k: v / GIB for k, v in self.phases.items()}, "peak_gib": self.peak_bytes / GIB,
                "peak_phase": self.peak_phase,
                "budget_gib": None if self.budget_bytes is None else self.budget_bytes / GIB, "fits": self.fits,
                "assumptions": self.assumptions}


def method_kind(method: str) -> str:
    """How a method trains, for memory: ``sdft`` (rollouts, a teacher, the distillation loss), ``offline`` (a frozen
    teacher on fixed sequences) or ``sft`` (next-token loss)."""
    return METHOD_KINDS.get(method, "sft")


def _dtype_bytes(name: str | None, default: int) -> int:
    return {None: default, "float32": 4, "bfloat16": 2, "float16": 2}[name]


def plan_memory(shape: ModelShape, inp: PlanInput) -> MemoryPlan:
    """Every part of one process's peak memory (module docstring), in bytes, with the assumptions made."""
    cpu = inp.device == "cpu"
    kind = method_kind(inp.method)
    notes: list[str] = []
    b = 2 if (inp.bf16 and not cpu) else 4  # weights, activations and logits (load_student: bf16 on GPU only)
    n = max(1, inp.gpus)
    shard = inp.sharding if n > 1 else "none"
    quant = 0.5 + (4 / 64 / 256 + 1 / 64 if inp.use_bnb_nested_quant else 4 / 64) if inp.load_in_4bit else \
        (1.0 + 4 / shape.hidden if inp.load_in_8bit else None)
    if quant is not None and (cpu or not inp.use_peft):
        raise PlanError("QLoRA (load_in_4bit / load_in_8bit) needs use_peft=true and a CUDA GPU")
    P = param_count(shape)
    embed_params = shape.vocab * shape.hidden * (1 if shape.tied else 2)
    linear_params = P - embed_params - shape.layers * (shape.norms_per_layer * shape.hidden + shape.qk_norm) \
        - shape.hidden
    parts: list[Part] = []

    def add(name: str, nbytes: float, how: str, phase: str = "static") -> None:
        parts.append(Part(name, float(nbytes), how, phase))

    # ---- weights
    weight_shard = n if shard in ("zero3", "fsdp") else 1
    if quant is not None:
        weights = linear_params * quant + (P - linear_params) * b
        how = (f"{linear_params:.3g} linear weights at {quant:.3f} B ({'4' if inp.load_in_4bit else '8'}-bit), "
               f"{P - linear_params:.3g} others at {b} B")
    else:
        weights = P * b
        how = f"{P:.4g} x {b} B ({'bf16' if b == 2 else 'fp32'})"
    add("student weights", weights / weight_shard, how + (f", sharded over {n}" if weight_shard > 1 else ""))

    # ---- what trains: the weights, or an adapter
    if inp.use_peft:
        trainable = lora_param_count(shape, inp.lora_r, inp.lora_target_modules, inp.use_dora,
                                     inp.lora_modules_to_save)
        tb = 2 if quant is not None and b == 2 else 4  # PEFT makes adapters fp32; TRL casts a bf16 QLoRA's to bf16
        whole = _saved_modules_params(shape, inp.lora_modules_to_save)
        add("LoRA adapter", trainable * tb, f"{trainable:.4g} parameters x {tb} B (r={inp.lora_r}, "
            f"{', '.join(lora_targets(shape, inp.lora_target_modules))}"
            f"{', modules_to_save ' + str(inp.lora_modules_to_save) if whole else ''})")
    else:
        trainable, tb = P, b

    # ---- optimizer: torch AdamW keeps its states in the weights' dtype; DeepSpeed's ZeRO keeps fp32 master weights
    deepspeed = shard in ("zero1", "zero2", "zero3")
    opt_shard = n if shard != "none" else 1
    if deepspeed and b == 2:
        state_bytes, opt_how = 12, "fp32 master weights and AdamW's two fp32 states (DeepSpeed bf16)"
    else:
        state_bytes, opt_how = 2 * tb, f"AdamW's two states in the weights' dtype ({tb} B each)"
    if inp.optim not in ("adamw_torch", "adamw_torch_fused", "adamw_hf"):
        notes.append(f"optim={inp.optim!r} is planned as torch AdamW (two states per trainable parameter)")
    add("optimizer state (AdamW)", trainable * state_bytes / opt_shard,
        f"{trainable:.4g} trainable x {state_bytes} B: {opt_how}" + (f", sharded over {n}" if opt_shard > 1 else ""))

    # ---- gradients
    grad_shard = n if shard in ("zero2", "zero3", "fsdp") else 1
    grads = trainable * tb / grad_shard
    rows = _rows_per_forward(inp, kind, notes)
    persist = inp.gradient_accumulation_steps > 1 or (rows == 1 and inp.batch_size > 1 and kind == "sdft")
    if persist:
        add("gradients", grads, f"{trainable:.4g} x {tb} B" + (f", sharded over {grad_shard}" if grad_shard > 1
                                                                  else "") + ", kept across micro-batches", "train")
    saved = inp.lora_modules_to_save
    if not inp.use_peft or "lm_head" in ([saved] if isinstance(saved, str) else list(saved or [])):
        hb = 4 if fused_head(inp) else tb  # the fused loss accumulates the head's gradient in float32
        add("output head's gradient, as backward makes it", shape.vocab * shape.hidden * hb,
            f"{shape.vocab} x {shape.hidden} x {hb} B, before it is added to the gradients"
            + ("" if persist else " (the first gradient of backward; the rest come as activations are freed)"),
            "train")
    # optimizer step: the gradients and AdamW's temporaries
    add("gradients (at the optimizer step)", grads, f"{trainable:.4g} x {tb} B", "optimizer")
    if inp.optim == "adamw_torch_fused":
        temp, temp_how = 0.0, "fused AdamW: none"
    elif deepspeed:
        temp, temp_how = trainable * 4 / opt_shard, "the fp32 gradient partition of the step (DeepSpeed)"
    elif cpu:
        largest = shape.vocab * shape.hidden if not inp.use_peft else max(
            [i * inp.lora_r for _, i, _, _ in shape.linears()] + [1])
        temp, temp_how = 2 * largest * tb, "AdamW's per-tensor loop on the CPU: two temporaries of the largest tensor"
    else:
        temp, temp_how = trainable * tb / opt_shard, "foreach AdamW: one temporary as large as the trainable weights"
    add("optimizer step temporaries", temp, temp_how, "optimizer")

    # ---- the teacher
    if kind in ("sdft", "offline"):
        teacher_kind = "base" if (kind == "offline" or inp.method == "reinvoke") else inp.teacher_model_kind
        if teacher_kind == "live":
            add("teacher", 0, "live: the student itself")
        elif inp.use_peft:
            if teacher_kind == "ema":
                add("teacher", trainable * tb, "ema with LoRA: a second adapter over the shared base weights")
            else:
                add("teacher", 0, "base with LoRA: the student with its adapter disabled")
        else:
            add("teacher", P * b / weight_shard, f"{teacher_kind}: a frozen copy of the weights ({P:.4g} x {b} B"
                + (f", sharded over {n}" if weight_shard > 1 else "") + ")")
    # ---- the sampler copy (rollout_dtype, HF generation on one process, not with adapters)
    kb = b  # the rollouts' KV cache: in the sampler's dtype
    if kind == "sdft" and inp.rollout_dtype and not inp.use_vllm and not inp.use_peft and n == 1:
        kb = _dtype_bytes(inp.rollout_dtype, b)
        add("sampler copy (rollout_dtype)", P * kb, f"{P:.4g} x {kb} B ({inp.rollout_dtype})")

    # ---- activations and logits
    _activations(shape, inp, kind, b, rows, add)
    if shard in ("zero3", "fsdp"):
        gathered = (embed_params + 2 * layer_param_count(shape)) * b
        add("gathered weights (ZeRO-3 / FSDP)", gathered,
            "the embedding and output head, and two decoder layers (one prefetched), whole during forward and "
            "backward", "train")

    # ---- rollouts: vLLM, or HF generate's KV cache
    if kind == "sdft" and not (inp.use_vllm and not cpu):
        S = inp.prompt_length + inp.completion_length
        add("KV cache of the rollouts (HF generate)", inp.batch_size * S * shape.layers * 2 * shape.kv_dim * kb,
            f"{inp.batch_size} x {S} tokens x {shape.layers} layers x 2 x {shape.kv_dim} x {kb} B", "rollout")
    if kind == "sdft" and inp.use_vllm and not cpu:
        if inp.vllm_mode == "colocate":
            share = inp.vllm_gpu_memory_utilization * inp.gpu_memory_gib * GIB
            how = f"vllm_gpu_memory_utilization {inp.vllm_gpu_memory_utilization} x {inp.gpu_memory_gib:g} GiB"
            if inp.vllm_enable_sleep_mode:
                add("vLLM (colocated, sleeps while training)", share, how + ": its weights and KV cache, during "
                    "rollouts only", "rollout")
            else:
                add("vLLM (colocated)", share, how + ", held throughout (no sleep mode)")
        else:
            notes.append("vllm_mode=server: vLLM runs on other GPUs; its memory is not on these")
    runtime = inp.runtime_gib if inp.runtime_gib is not None else (0.0 if cpu else GPU_RUNTIME_GIB)
    if runtime:
        add("runtime (CUDA context, workspaces, fragmentation)", runtime * GIB, "an allowance, not computed")

    phases = {ph: sum(p.bytes for p in parts if p.phase == ph) for ph in ("static", "train", "optimizer", "rollout")}
    peak_phase = max(("train", "optimizer", "rollout"), key=lambda ph: phases[ph])
    peak = phases["static"] + phases[peak_phase]
    budget = None if cpu else inp.gpu_memory_gib * GIB
    notes += _standing_assumptions(inp, kind, cpu, b)
    return MemoryPlan(shape, inp, parts, phases, peak, peak_phase, budget, notes)


def fused_head(inp: PlanInput) -> bool:
    """Whether SDFT's student logits are made chunk by chunk (``sdft.speedups``: one unsharded process, an
    ``nn.Linear`` head, not a 4-/8-bit base nor an adapted head)."""
    saved = inp.lora_modules_to_save
    adapted_head = inp.use_peft and "lm_head" in ([saved] if isinstance(saved, str) else list(saved or []))
    return (method_kind(inp.method) == "sdft" and inp.fused_lm_head and inp.lean_logits and inp.loss_chunk_size > 0
            and inp.gpus <= 1 and not inp.load_in_4bit and not inp.load_in_8bit and not adapted_head)


def one_rollout_at_a_time(inp: PlanInput) -> bool:
    """Whether SDFT's forward and backward take one rollout at a time, without padding (``sequence_microbatches``
    with the fused head)."""
    return fused_head(inp) and inp.sequence_microbatches


def _rows_per_forward(inp: PlanInput, kind: str, notes: list[str]) -> int:
    if one_rollout_at_a_time(inp):
        return 1
    if kind == "sdft" and inp.fused_lm_head and not fused_head(inp):
        notes.append("fused_lm_head and sequence_microbatches are off here (several processes, or a quantized base / "
                     "adapted head): the student's logits are made whole, the batch in one forward")
    return inp.batch_size


def layer_activation_bytes(shape: ModelShape, b: int, trainable_base: bool, lora: list[str] | None = None,
                           lora_r: int = 0, lora_dropout: float = 0.0, repeated_kv: bool = True) -> float:
    """Bytes one decoder layer saves for backward, per token (transformers' Llama-style layer, SDPA attention).

    Each norm (RMSNorm) keeps its input in float32; with trainable weights also the normalized input and its output
    (the next linears' input). Attention keeps q (after RoPE), k, v (repeated to every head when a padding mask is
    used: ``repeat_kv``), its output and log-sum-exp; the MLP its gate, the gate's activation and the up projection;
    a trainable ``o_proj`` / ``down_proj`` its input. A frozen linear keeps nothing (its weight's gradient is not
    wanted). LoRA on a frozen base: per adapted linear its dropout's output and mask (or the shared input, dropout 0)
    and the A projection's output.
    """
    H, M = shape.hidden, shape.intermediate
    kv = shape.q_dim if repeated_kv else shape.kv_dim
    per = 0.0
    norms = shape.norms_per_layer
    per += norms * 4 * H + (norms * 2 * b * H if trainable_base else 0)  # norm inputs (fp32), normalized + output
    per += b * (shape.q_dim + 2 * kv) + b * shape.q_dim + 4 * shape.heads  # q, k, v, attention output, LSE
    if shape.qk_norm:
        per += 4 * (shape.q_dim + shape.kv_dim) + (2 * b * (shape.q_dim + shape.kv_dim) if trainable_base else 0)
    per += 3 * b * M  # gate, act(gate), up
    if trainable_base:
        per += b * shape.q_dim + b * M  # o_proj's and down_proj's inputs
    if lora:
        dims = {n: i for n, i, _, _ in shape.linears()}
        shared = {"q_proj": "attn_in", "k_proj": "attn_in", "v_proj": "attn_in", "o_proj": "o_in",
                  "gate_proj": "mlp_in", "up_proj": "mlp_in", "down_proj": "down_in"}
        inputs = set()
        for name in lora:
            per += b * lora_r
            if lora_dropout > 0:
                per += (b + 1) * dims[name]  # dropout output and its mask (1 B)
            elif not trainable_base:
                inputs.add((shared[name], dims[name]))
        per += sum(b * d for _, d in inputs)
    return per


def _activations(shape, inp, kind, b, rows, add) -> None:
    """Activation and logits parts of the training phase."""
    trainable_base = not inp.use_peft
    lora = lora_targets(shape, inp.lora_target_modules) if inp.use_peft else None
    V, H = shape.vocab, shape.hidden
    chunk = inp.loss_chunk_size if inp.loss_chunk_size > 0 else None
    if kind == "sft":
        S = inp.max_length or inp.prompt_length + inp.completion_length
        T_logits = S
    else:
        S = inp.prompt_length + inp.completion_length
        T_logits = inp.completion_length
    repeated = rows > 1  # a padded batch has a mask, and SDPA then takes k / v repeated to every head
    per_layer = layer_activation_bytes(shape, b, trainable_base, lora, inp.lora_r, inp.lora_dropout, repeated)
    final = 4 * H + 2 * b * H  # the final norm's input (fp32), normalized input, output (the head's input)
    tokens = rows * S
    if inp.gradient_checkpointing:
        acts = tokens * (shape.layers * b * H + per_layer + final)
        how = (f"{rows} x {S} tokens x ({shape.layers} layer inputs x {b} B x {H} + one layer recomputed "
               f"{per_layer / 1024:.1f} KiB + head input): gradient checkpointing")
    else:
        acts = tokens * (shape.layers * per_layer + final)
        how = f"{rows} x {S} tokens x ({shape.layers} layers x {per_layer / 1024:.1f} KiB + head input)"
    add("activations", acts, how, "train")

    work = LOSS_CHUNK_TENSORS * min(chunk or T_logits, T_logits) * V * 4
    if kind == "sft":
        sb = 12 + (b if b != 4 else 0)
        add("logits", rows * S * V * sb, f"{rows} x {S} x {V} x {sb} B: the logits, their float32 log-softmax "
            "(kept by the cross-entropy) and its gradient", "train")
        return
    topk = inp.distillation_topk
    tb = 4 if (inp.teacher_dtype or b == 4) else b
    if topk > 0:
        add("teacher logits (top-K)", rows * T_logits * (topk * 12 + 8), f"{rows} x {T_logits} x K={topk} "
            "(float32 log-probabilities and int64 ids)", "train")
    else:
        add("teacher logits", rows * T_logits * V * tb, f"{rows} x {T_logits} x {V} x {tb} B, kept through the "
            "student's backward", "train")
    if fused_head(inp):
        add("student logits (fused head)", work, f"never whole: {LOSS_CHUNK_TENSORS} float32 [{min(chunk, T_logits)} x {V}] "
            "tensors of one chunk of the loss", "train")
    else:
        copies = 2 + (1 if inp.temperature != 1.0 else 0)
        add("student logits", rows * T_logits * V * b * copies + work,
            f"{rows} x {T_logits} x {V} x {b} B x {copies} (the logits, their gradient"
            f"{', the tempered copy' if copies == 3 else ''}) + the loss's chunk working set", "train")


def _standing_assumptions(inp, kind, cpu, b) -> list[str]:
    out = [
        "sequences are as long as the config allows (prompt + completion, or max_length): real batches are shorter",
        "activations: transformers' Llama-style layers with SDPA attention (no [S x S] scores kept); eager "
        "attention would add heads x S^2 per layer",
        "the peak is the static parts plus the largest phase (training, optimizer step, rollouts); allocator "
        "fragmentation is not modelled" + ("" if cpu else " beyond the runtime allowance"),
    ]
    if inp.method == "reinvoke":
        out.append("re-invoke: its stage 2 (on-policy distillation from the frozen base) is planned; stage 1 is SFT "
                   "(plan it with --method sft)")
    if kind == "sdft":
        out.append("the teacher's forward runs under inference mode and keeps only its logits (its transient working "
                   "set, one layer's, is smaller than the student's activations)")
    if kind == "sft" and not cpu:
        out.append("SFT: TRL's cross-entropy path (transformers' loss on float32 logits); packing and padding-free "
                   "batches hold the same number of tokens")
    if b == 2:
        out.append("bf16: the weights are loaded in bf16 and trained in bf16 (sdft.training.load_student), no "
                   "float32 master copy unless DeepSpeed keeps one")
    return out


# ------------------------------------------------------------------------------------------------ from a run's config
def inputs_from_config(cfg, gpus: int = 1, gpu_memory_gib: float = 80.0, sharding: str = "none",
                       device: str = "gpu", **changes: Any) -> PlanInput:
    """A ``PlanInput`` of a resolved run config (``sdft.config.RunConfig``): every key that changes memory."""
    kind = method_kind(cfg.method)

    def get(name: str, default: Any = None) -> Any:
        try:
            value = getattr(cfg, name)
        except AttributeError:
            return default
        return getattr(value, "value", value)

    prompt = get("max_prompt_length") or 1024
    completion = get("max_completion_length") or 1024
    max_length = get("max_length") if kind == "sft" else None
    accumulation = get("gradient_accumulation_steps", 1)  # the trainer's (SDFT: x num_generations, sdft.sdft_config)
    values = dict(
        method=cfg.method, device=device, gpus=gpus, gpu_memory_gib=gpu_memory_gib, sharding=sharding,
        bf16=bool(get("bf16", False)), batch_size=int(get("per_device_train_batch_size", 1)),
        gradient_accumulation_steps=int(accumulation),
        prompt_length=int(prompt), completion_length=int(completion),
        max_length=int(max_length) if max_length else None,
        gradient_checkpointing=bool(get("gradient_checkpointing", False)), optim=str(get("optim", "adamw_torch")),
        use_peft=bool(get("use_peft", False)), lora_r=int(get("lora_r", 16)),
        lora_target_modules=get("lora_target_modules"), lora_dropout=float(get("lora_dropout", 0.05)),
        lora_modules_to_save=get("lora_modules_to_save"), use_dora=bool(get("use_dora", False)),
        load_in_4bit=bool(get("load_in_4bit", False)), load_in_8bit=bool(get("load_in_8bit", False)),
        use_bnb_nested_quant=bool(get("use_bnb_nested_quant", False)),
        teacher_model_kind=str(get("teacher_model_kind", "ema")), fused_lm_head=bool(get("fused_lm_head", False)),
        sequence_microbatches=bool(get("sequence_microbatches", False)), lean_logits=bool(get("lean_logits", True)),
        loss_chunk_size=int(get("loss_chunk_size", 0) or 0), distillation_topk=int(get("distillation_topk", 0) or 0),
        temperature=float(get("temperature", 1.0) or 1.0), teacher_dtype=get("teacher_dtype"),
        rollout_dtype=get("rollout_dtype"), use_vllm=bool(get("use_vllm", False)),
        vllm_mode=str(get("vllm_mode", "colocate")),
        vllm_gpu_memory_utilization=float(get("vllm_gpu_memory_utilization", 0.3)),
        vllm_enable_sleep_mode=bool(get("vllm_enable_sleep_mode", False)),
    )
    values.update(changes)
    return PlanInput(**values)


# ------------------------------------------------------------------------------------------------ output
def format_plan(plan: MemoryPlan) -> str:
    """The plan as text: the model, each part with its size and how it was counted, the peak, the assumptions."""
    inp = plan.input
    where = ("the CPU (float32, no vLLM)" if inp.device == "cpu" else
             f"{inp.gpus} x {inp.gpu_memory_gib:g} GiB GPU" + ("s" if inp.gpus > 1 else "")
             + {"none": "", "zero1": ", ZeRO-1", "zero2": ", ZeRO-2", "zero3": ", ZeRO-3", "fsdp": ", FSDP"}[
                 inp.sharding if inp.gpus > 1 else "none"])
    training = "full fine-tuning"
    if inp.use_peft:
        bits = " on a 4-bit base (QLoRA)" if inp.load_in_4bit else " on an 8-bit base" if inp.load_in_8bit else ""
        training = f"LoRA r={inp.lora_r}{bits}"
    lines = [f"memory plan: {inp.method} on {plan.shape.name}, {training}, {where}",
             f"model: {plan.shape.describe()}",
             f"shapes: batch {inp.batch_size} per device, " + (
                 f"sequence {inp.max_length or inp.prompt_length + inp.completion_length}" if method_kind(inp.method)
                 == "sft" else f"prompt {inp.prompt_length} + completion {inp.completion_length}")
             + f", gradient checkpointing {'on' if inp.gradient_checkpointing else 'off'}", "",
             f"{'part':<46} {'GiB':>8}  phase      how"]
    order = {"static": 0, "train": 1, "optimizer": 2, "rollout": 3}
    for p in sorted(plan.parts, key=lambda p: order[p.phase]):
        lines.append(f"{p.name:<46} {p.bytes / GIB:>8.2f}  {p.phase:<9}  {p.how}")
    ph = plan.phases
    lines += ["", f"static {ph['static'] / GIB:.2f} GiB + the largest phase: training {ph['train'] / GIB:.2f}, "
                  f"optimizer step {ph['optimizer'] / GIB:.2f}, rollouts {ph['rollout'] / GIB:.2f} GiB",
              f"peak per {'process' if inp.device == 'cpu' else 'GPU'}: {plan.peak_bytes / GIB:.2f} GiB "
              f"(in the {plan.peak_phase} phase)"]
    if plan.budget_bytes is not None:
        verdict = "fits" if plan.fits else "does NOT fit"
        lines.append(f"{verdict}: {plan.peak_bytes / GIB:.1f} of {plan.budget_bytes / GIB:g} GiB "
                     f"({(plan.budget_bytes - plan.peak_bytes) / GIB:+.1f} GiB to spare)")
    lines += ["", "assumptions:"] + [f"  - {a}" for a in plan.assumptions]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ command line
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sdft.plan", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", default=None, help="a registered method (default: the config's, sdft)")
    p.add_argument("--preset", default=None, choices=["smoke", "mini", "paper"], help="default: paper")
    p.add_argument("--config", default=None, help="a YAML recipe, as sdft.train --config")
    p.add_argument("--model", default=None, help="hub id of the built-in table, local folder or embedded:NAME")
    p.add_argument("--gpus", type=int, default=1, help="GPUs (one training process each)")
    p.add_argument("--gpu-memory", type=float, default=80.0, help="GiB of memory per GPU (default 80)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--zero", type=int, choices=[0, 1, 2, 3], default=0, help="DeepSpeed ZeRO stage")
    group.add_argument("--fsdp", action="store_true", help="FSDP full sharding (experiments/accelerate/fsdp.yaml)")
    p.add_argument("--cpu", action="store_true", help="plan the CPU run (float32, no vLLM, no runtime allowance)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config keys, as sdft.train takes them")
    return p


def plan_from_args(args: argparse.Namespace) -> MemoryPlan:
    overrides = parse_overrides(args.overrides)
    if args.model:
        overrides["model"] = args.model
    # QLoRA is refused when a config is built without CUDA: plan it, but build the config without it
    quant = {k: overrides.pop(k) for k in ("load_in_4bit", "load_in_8bit") if k in overrides}
    cfg = build_config(preset=args.preset or "paper", method=args.method, recipe=args.config, overrides=overrides)
    sharding = "fsdp" if args.fsdp else {0: "none", 1: "zero1", 2: "zero2", 3: "zero3"}[args.zero]
    inp = inputs_from_config(cfg, gpus=args.gpus, gpu_memory_gib=args.gpu_memory, sharding=sharding,
                             device="cpu" if args.cpu else "gpu", **{k: bool(v) for k, v in quant.items()})
    return plan_memory(model_shape(cfg.model), inp)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    with reported_as_one_line(argv):
        plan = plan_from_args(args)
    print(json.dumps(plan.to_dict(), indent=1, default=str) if args.json else format_plan(plan))
    return 0 if plan.fits in (None, True) else 1


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["GIB", "KNOWN_MODELS", "MemoryPlan", "ModelShape", "Part", "PlanInput", "format_plan",
           "inputs_from_config", "layer_activation_bytes", "lora_param_count", "lora_targets", "model_shape",
           "param_count", "plan_memory", "shape_from_config"]
