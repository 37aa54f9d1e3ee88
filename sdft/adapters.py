"""LoRA / QLoRA for every method: the adapter config keys, the checks made when a config is built, the adapter a
trainer trains, SDFT's teacher adapter, and the model a run saves.

Keys (``AdapterArguments``, one part of every method's config): TRL's ``ModelConfig`` fields that describe the
adapter and the quantized base -- ``use_peft``, ``lora_r``, ``lora_alpha``, ``lora_dropout``, ``lora_target_modules``,
``lora_target_parameters``, ``lora_modules_to_save``, ``use_rslora``, ``use_dora``, ``load_in_4bit``,
``load_in_8bit``, ``bnb_4bit_quant_type``, ``use_bnb_nested_quant``, ``bnb_4bit_quant_storage`` -- with TRL's names,
defaults and help (the fields are TRL's own, taken from ``trl.ModelConfig``), plus ``merge``. The rest of
``ModelConfig`` is left out: ``model_name_or_path`` is our ``model``, ``trust_remote_code`` is already a field of
TRL's trainer configs (two fields of one name cannot share a parser), and ``dtype`` / ``attn_implementation`` follow
the run's precision (``sdft.training.load_student``). ``trl.get_peft_config`` and ``trl.get_quantization_config``
read the keys, through a ``ModelConfig`` made from them (``model_config``).

What a run with ``use_peft=true`` saves: ``<run_dir>/model/`` is the adapter (``adapter_config.json``,
``adapter_model.safetensors``, the tokenizer; ``manifest.json``'s ``saved_model`` says so), loadable by
``sdft.models.load_model`` (the base it names, the adapter merged in) and so by every evaluation; with ``merge=true``
``<run_dir>/model_merged/`` also holds the full merged model (``write_merged``), which the evaluation prefers when it
is there (vLLM needs it). A merged copy of any adapter folder ``X`` is looked for at ``X_merged`` beside it.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import typing
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Mapping

import torch

ADAPTER_CONFIG = "adapter_config.json"
MERGED_SUFFIX = "_merged"

# TRL's ModelConfig fields that describe the adapter and the quantized base (the module docstring says why only these)
PEFT_KEYS = ("use_peft", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "lora_target_parameters",
             "lora_modules_to_save", "use_rslora", "use_dora", "load_in_4bit", "load_in_8bit", "bnb_4bit_quant_type",
             "use_bnb_nested_quant", "bnb_4bit_quant_storage")
QUANTIZATION_KEYS = ("load_in_4bit", "load_in_8bit")


def _adapter_arguments() -> type:
    """The dataclass of ``PEFT_KEYS`` (TRL's fields, as ``trl.ModelConfig`` declares them) and ``merge``."""
    from trl import ModelConfig

    hints = typing.get_type_hints(ModelConfig)
    spec = [(f.name, hints[f.name], dataclasses.field(default=f.default, metadata=dict(f.metadata)))
            for f in dataclasses.fields(ModelConfig) if f.name in PEFT_KEYS]
    missing = sorted(set(PEFT_KEYS) - {name for name, _, _ in spec})
    if missing:
        raise ImportError(f"trl.ModelConfig has no fields {missing}: this TRL version does not fit sdft.adapters")
    spec.append(("merge", bool, dataclasses.field(default=False, metadata={
        "help": "with use_peft: also write <output_dir>/model_merged, the base model with the trained adapter merged "
                "in (model/ holds the adapter)"})))
    cls = dataclasses.make_dataclass("AdapterArguments", spec)
    cls.__module__ = __name__
    cls.__doc__ = ("LoRA / QLoRA: TRL's ModelConfig fields for the adapter and the quantized base, and merge "
                   "(sdft.adapters).")
    return cls


AdapterArguments = _adapter_arguments()


def model_config(cfg):
    """A ``trl.ModelConfig`` holding the run's adapter keys (and the dtype the run loads its model in)."""
    from trl import ModelConfig

    dtype = "bfloat16" if cfg.bf16 and torch.cuda.is_available() else "float32"
    return ModelConfig(model_name_or_path=cfg.model, dtype=dtype, **{k: getattr(cfg, k) for k in PEFT_KEYS})


def peft_config(cfg, model=None):
    """The ``peft.LoraConfig`` a trainer should put on ``model`` (``trl.get_peft_config``); ``None`` without
    ``use_peft`` or when ``model`` already holds an adapter (re-invoke's stage 2 trains stage 1's on)."""
    from accelerate.utils import is_peft_model
    from trl import get_peft_config

    if not cfg.use_peft or (model is not None and is_peft_model(model)):
        return None
    return get_peft_config(model_config(cfg))


def quantization_kwargs(cfg) -> dict[str, Any]:
    """``from_pretrained`` keyword arguments of a QLoRA base (``load_in_4bit`` / ``load_in_8bit``); ``{}`` else."""
    if not any(getattr(cfg, k) for k in QUANTIZATION_KEYS):
        return {}
    from accelerate import PartialState
    from trl import get_quantization_config

    # each process's whole model on its own GPU (bitsandbytes places the quantized weights when loading)
    return {"quantization_config": get_quantization_config(model_config(cfg)),
            "device_map": {"": PartialState().local_process_index}}


# ------------------------------------------------------------------------------------------------ config checks
def adapter_problems(cfg, origins: Mapping[str, str] | None = None, cuda: bool | None = None) -> list[str]:
    """What is wrong with the adapter keys of ``cfg``, one line each naming the key, its value and its layer:
    quantized weights without ``use_peft``, QLoRA without a CUDA GPU (or without ``bitsandbytes``), ``merge``
    without ``use_peft``. Loads nothing."""
    origins = origins or {}
    cuda = torch.cuda.is_available() if cuda is None else cuda
    problems = []

    def say(key: str, problem: str) -> None:
        value = json.dumps(getattr(cfg, key))
        problems.append(f"{key}={value} ({origins.get(key, 'default')}): {problem}")

    for key in QUANTIZATION_KEYS:
        if not getattr(cfg, key):
            continue
        bits = key[len("load_in_"):].replace("bit", "-bit")
        if not cfg.use_peft:
            say(key, f"{bits} base weights are frozen, only an adapter can train on them: set use_peft=true")
        elif not cuda or cfg.use_cpu:
            where = "use_cpu=true" if cuda else "this machine has none"
            say(key, f"QLoRA needs a CUDA GPU (bitsandbytes' {bits} weights); {where}")
        elif not _importable("bitsandbytes"):
            say(key, "QLoRA needs the bitsandbytes package (pip install bitsandbytes)")
    if cfg.merge and not cfg.use_peft:
        say("merge", "merges a trained LoRA adapter into its base: set use_peft=true")
    return problems


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


# ------------------------------------------------------------------------------------------------ adapters in training
def attach_adapter(model, cfg, args):
    """``model`` with the run's LoRA adapter (for a trainer that does not take a ``peft_config``, offline
    distillation): a quantized base prepared for k-bit training, the adapter drawn after ``set_seed(args.seed)``
    (as TRL's trainers do), input gradients on with gradient checkpointing. Unchanged without ``use_peft``."""
    config = peft_config(cfg, model)
    if config is None:
        return model
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import set_seed

    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=args.gradient_checkpointing,
                                                gradient_checkpointing_kwargs=args.gradient_checkpointing_kwargs)
    set_seed(args.seed)
    model = get_peft_model(model, config)
    if args.gradient_checkpointing:
        model.enable_input_require_grads()
    return model


@contextmanager
def adapters_off(model):
    """``model`` (a PEFT model) as its base: adapters disabled and in eval mode (no dropout) for the block."""
    was_training = model.training
    model.eval()
    try:
        with model.disable_adapter():
            yield model
    finally:
        model.train(was_training)


def adapter_pairs(model, student: str, teacher: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(teacher parameter, student parameter) for every trainable parameter of the ``student`` adapter, paired by
    name (``...lora_A.<student>.weight`` with ``...lora_A.<teacher>.weight``). Every trainable parameter must be an
    adapter parameter with a twin: the teacher shares everything else with the student."""
    named = dict(model.named_parameters())
    pairs = []
    for name, param in named.items():
        if not param.requires_grad:
            continue
        twin = name.replace(f".{student}.", f".{teacher}.")
        if twin == name or twin not in named or named[twin].shape != param.shape:
            raise ValueError(f"the EMA teacher of an adapter run averages adapter weights only, and {name} is "
                             f"trainable without a twin in adapter {teacher!r}")
        pairs.append((named[twin], param))
    if not pairs:
        raise ValueError("the adapter run has no trainable parameters")
    return pairs


def add_teacher_adapter(model, name: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Add adapter ``name`` to the PEFT ``model``: a copy of its active (student) adapter, frozen and without
    dropout; the active adapter stays the student's. Returns the (teacher, student) parameter lists of
    ``adapter_pairs``, the teacher's equal to the student's."""
    student = model.active_adapter
    config = copy.deepcopy(model.peft_config[student])
    config.inference_mode = True
    if hasattr(config, "lora_dropout"):
        config.lora_dropout = 0.0  # a constant target
    model.add_adapter(name, config)
    model.set_adapter(student)
    pairs = adapter_pairs(model, student, name)
    with torch.no_grad():
        for t, s in pairs:
            t.copy_(s)
            t.requires_grad_(False)
    return [t for t, _ in pairs], [s for _, s in pairs]


def adapter_state(model, name: str) -> dict[str, torch.Tensor]:
    """Adapter ``name``'s weights in PEFT's file form (``adapter_model.safetensors`` keys), on the CPU."""
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(model, adapter_name=name)
    return {k: v.detach().contiguous().cpu().clone() for k, v in state.items()}


def load_adapter_state(model, name: str, state: dict[str, torch.Tensor]) -> None:
    """Put ``state`` (``adapter_state``'s form) into adapter ``name`` of ``model``, every weight of it."""
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(model, state, adapter_name=name)
    unexpected = list(getattr(result, "unexpected_keys", None) or [])
    if unexpected:
        raise ValueError(f"adapter {name!r}: weights that it does not have: {unexpected[:3]}")


def save_model_dir(model, path: str | Path) -> None:
    """``model.save_pretrained(path)``; of a PEFT model only its active adapter (a teacher adapter beside it is not
    part of the trained model)."""
    from accelerate.utils import is_peft_model

    if is_peft_model(model):
        model.save_pretrained(str(path), selected_adapters=[model.active_adapter])
    else:
        model.save_pretrained(str(path))


# ------------------------------------------------------------------------------------------------ saved adapters
def is_adapter_dir(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding a PEFT adapter and no full model (``adapter_config.json``, no
    ``config.json``)."""
    path = Path(str(path)).expanduser()
    return (path / ADAPTER_CONFIG).is_file() and not (path / "config.json").is_file()


def merged_dir(path: str | Path) -> Path:
    """Where the merged copy of the adapter folder ``path`` is written (``model`` -> ``model_merged``)."""
    path = Path(path)
    return path.with_name(path.name + MERGED_SUFFIX)


def adapter_base(path: str | Path) -> str:
    """The base model an adapter folder names (``base_model_name_or_path`` of its ``adapter_config.json``)."""
    return json.loads((Path(path) / ADAPTER_CONFIG).read_text())["base_model_name_or_path"]


def load_adapter_model(path: str | Path, dtype: torch.dtype = torch.float32, merge: bool = True,
                       trainable: bool = False, base=None):
    """The base model of the adapter folder ``path`` (``base``, else the one it names, loaded in ``dtype``) with
    the adapter: merged in (a plain model, as fast as the base), or kept as a PEFT model (``merge=False``;
    ``trainable`` for further training)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    if base is None:
        base = AutoModelForCausalLM.from_pretrained(adapter_base(path), dtype=dtype)
    model = PeftModel.from_pretrained(base, str(path), is_trainable=trainable and not merge)
    return model.merge_and_unload() if merge else model


def write_merged(adapter_path: str | Path, out: str | Path, dtype: torch.dtype, base_name: str | None = None) -> Path:
    """Write the full model of the adapter folder ``adapter_path`` merged into its base (``base_name``, else the
    one it names), loaded on the CPU in ``dtype`` (a QLoRA run's base unquantized), with the adapter's tokenizer, to
    ``out`` (written beside, then renamed into place)."""
    import shutil

    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = Path(out)
    partial = out.with_name(f".{out.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    base = AutoModelForCausalLM.from_pretrained(base_name or adapter_base(adapter_path), dtype=dtype)
    model = load_adapter_model(adapter_path, merge=True, base=base)
    model.save_pretrained(str(partial))
    AutoTokenizer.from_pretrained(str(adapter_path)).save_pretrained(str(partial))
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    return out


def saved_model_entry(cfg, merged: bool) -> dict[str, Any]:
    """The manifest's ``saved_model``: what ``model/`` holds."""
    if not cfg.use_peft:
        return {"path": "model", "kind": "full model"}
    quantized = next((k for k in QUANTIZATION_KEYS if getattr(cfg, k)), None)
    return {"path": "model", "kind": "LoRA adapter (adapter_config.json, adapter_model.safetensors): load it with "
            "its base, e.g. sdft.models.load_model('model')", "base_model": cfg.model,
            "quantized_base": quantized, "merged": "model_merged" if merged else None}
