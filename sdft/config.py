"""One configuration system for every method, task and experiment.

A run is described by one :class:`RunConfig`. Its values come, later ones winning, from
  1. the dataclass defaults below,
  2. the preset (``smoke`` | ``mini`` | ``paper``), then the preset's per-method values,
  3. a YAML recipe (``--config recipe.yaml``; the files under ``experiments/recipes/``),
  4. ``key=value`` overrides on the command line (values parsed as YAML: ``ema_alpha=0.05``).

Presets:
  * ``smoke`` -- a tiny random Llama made in code, 8 embedded records, 3 steps. Seconds; for tests and CI.
  * ``mini``  -- the embedded SmolLM2-135M-Instruct on the embedded tasks; the offline CPU default. Minutes.
  * ``paper`` -- Qwen2.5-7B-Instruct with the paper's settings (Appendix B, Tables 3-4). GPUs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

METHODS = ("sdft", "sft", "dft", "reinvoke", "cpt", "offline_distill", "sft_from_teacher")
PRESETS = ("smoke", "mini", "paper")


@dataclass
class RunConfig:
    """Every knob of a training run. Field docs say what each one means and what the paper used."""

    # --- what to run --------------------------------------------------------------------------------
    method: str = field(default="sdft", metadata={"help": f"one of {METHODS}"})
    task: str = field(default="embedded_tool", metadata={"help": "a task name of data_prep.TASKS"})
    model: str = field(default="embedded:tiny-llama", metadata={"help": "HF id, local path or embedded:NAME"})
    preset: str = field(default="smoke", metadata={"help": f"one of {PRESETS}"})
    output_dir: str = field(default="runs/default", metadata={"help": "the run directory"})
    seed: int = field(default=0, metadata={"help": "seed of data order, sampling and initialisation"})
    data_dir: str | None = field(default=None, metadata={"help": "local mirror of the task data (offline clusters)"})
    n_train: int | None = field(default=None, metadata={"help": "cap on the number of training records"})

    # --- optimisation (Appendix B: AdamW, cosine, 10 warm-up steps, grad norm 1, no weight decay) ------
    learning_rate: float = field(default=1e-5, metadata={"help": "paper sweep {5e-6, 1e-5, 5e-5}"})
    num_train_epochs: float = field(default=1.0, metadata={"help": "paper: SFT 1, SDFT 2 (skill), 4 (knowledge)"})
    max_steps: int = field(default=-1, metadata={"help": "if > 0, overrides num_train_epochs"})
    per_device_train_batch_size: int = field(default=4, metadata={"help": "prompts per device per micro-batch"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "effective batch = devices x micro x this"})
    warmup_steps: int = field(default=10, metadata={"help": "linear warm-up before the cosine decay"})
    lr_scheduler_type: str = field(default="cosine")
    max_grad_norm: float = field(default=1.0)
    weight_decay: float = field(default=0.0)
    optim: str = field(default="adamw_torch")
    bf16: bool | None = field(default=None, metadata={"help": "None: bf16 on CUDA, fp32 on CPU"})
    gradient_checkpointing: bool = field(default=False)
    logging_steps: int = field(default=1)
    save_steps: int = field(default=500, metadata={"help": "checkpoint every N optimizer steps (resume point)"})
    save_total_limit: int = field(default=1, metadata={"help": "checkpoints kept while training (the newest resumes)"})
    keep_checkpoints: bool = field(
        default=False, metadata={"help": "keep checkpoints/ after the run completes (default: delete; the final "
                                         "model is in model/). A SmolLM2 checkpoint with teacher and optimizer is ~2 GB"})
    save_model: bool = field(default=True, metadata={"help": "write the final model to <output_dir>/model"})

    # --- sequences and sampling ------------------------------------------------------------------------
    max_prompt_length: int = field(default=1024, metadata={"help": "prompts longer than this are cut on the left"})
    max_completion_length: int = field(default=2048, metadata={"help": "paper: 2048 (skill), 1024 (knowledge)"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature of the on-policy rollouts"})
    top_p: float = field(default=1.0)

    # --- SDFT ------------------------------------------------------------------------------------------
    divergence: Any = field(
        default="forward",
        metadata={"help": "per-token divergence: 'forward' KL(teacher||student) -- what the authors' code used for "
                  "the paper's numbers --, 'reverse' KL(student||teacher) -- the paper's Eq. 1 --, or a float "
                  "in [0, 1] for the generalized JSD (0 = forward, 1 = reverse, TRL's convention)"},
    )
    estimator: str = field(default="analytic", metadata={"help": "analytic | token | rao_blackwell (Appendix A.1)"})
    teacher_kind: str = field(default="ema", metadata={"help": "ema | base (frozen initial model) | live (student)"})
    ema_alpha: float = field(default=0.02, metadata={"help": "teacher EMA rate: phi <- a*theta + (1-a)*phi"})
    teacher_template: str = field(default="paper", metadata={"help": "a name of sdft.prompts.TEACHER_TEMPLATES"})
    skip_first_tokens: int = field(default=0, metadata={"help": "mask the loss on the first k completion tokens"})
    num_generations: int = field(default=1, metadata={"help": "on-policy rollouts per prompt (paper: 1)"})
    use_vllm: bool = field(default=False, metadata={"help": "vLLM colocated generation (GPU only)"})
    vllm_gpu_memory_utilization: float = field(default=0.3)
    vllm_importance_sampling: bool = field(
        default=True,
        metadata={"help": "with vLLM or rollout_dtype: reweight tokens by pi_train/pi_sampler (Algorithm 1, line 17)"},
    )
    importance_sampling_cap: float = field(default=2.0, metadata={"help": "truncation of importance weights"})
    rollout_dtype: Any = field(
        default=None,
        metadata={"help": "without vLLM: sample rollouts from a copy of the student in this dtype ('bfloat16' halves "
                  "CPU decoding time), reweighted like vLLM's rollouts; null samples from the student itself"},
    )
    teacher_dtype: Any = field(
        default=None,
        metadata={"help": "the teacher's forward under autocast to this dtype, its output head in float32 "
                  "('bfloat16' halves its CPU time; on GPUs with bf16 every forward already is bf16); null: the "
                  "training dtype"},
    )

    # --- baselines -------------------------------------------------------------------------------------
    reinvoke_steps: int = field(default=100, metadata={"help": "SFT+re-invoke: steps of on-policy distillation"})
    reinvoke_prompts: str = field(
        default="embedded",
        metadata={"help": "general prompt set for re-invoke: 'embedded' or 'hub:<dataset id>' (data_prep.general_prompts)"},
    )
    offline_num_samples: int = field(default=1, metadata={"help": "offline distillation: teacher samples per prompt"})

    # ------------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @property
    def divergence_alpha(self) -> float:
        """The divergence as TRL's ``distillation_alpha``: 0 forward, 1 reverse, in between generalized JSD."""
        return divergence_to_alpha(self.divergence)


def divergence_to_alpha(divergence: Any) -> float:
    if divergence == "forward":
        return 0.0
    if divergence == "reverse":
        return 1.0
    try:
        value = float(divergence)
    except (TypeError, ValueError):
        raise ValueError(f"divergence must be 'forward', 'reverse' or a float in [0, 1], got {divergence!r}") from None
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"divergence as a float must lie in [0, 1], got {value}")
    return value


# Preset values. ``_per_method`` holds what differs by method inside a preset.
PRESET_VALUES: dict[str, dict[str, Any]] = {
    "smoke": dict(
        model="embedded:tiny-llama", task="embedded_tool", n_train=8, max_steps=3, per_device_train_batch_size=2,
        learning_rate=1e-3, warmup_steps=0, max_prompt_length=256, max_completion_length=16, ema_alpha=0.1,
        teacher_template="same_format", divergence="forward", save_steps=2, reinvoke_steps=2,
    ),
    "mini": dict(
        model="embedded:smollm2-135m-instruct", task="embedded_tool", n_train=64, num_train_epochs=1,
        # lr 1e-4: at 2e-5, 16 SDFT steps leave SmolLM2's answers on embedded_tool unchanged (0% -> 0%, no Action
        # lines); at 1e-4 the student starts writing the Action format. Same lr for every method, as in the paper.
        per_device_train_batch_size=4, learning_rate=1e-4, warmup_steps=2, max_prompt_length=512,
        max_completion_length=64, ema_alpha=0.05, teacher_template="same_format", divergence="forward",
        save_steps=8, reinvoke_steps=8,
        # Rollouts sampled from a bf16 copy of the student, reweighted by pi_train / pi_sampler: CPU decoding reads
        # every weight per token, so this halves the generation time (experiments/results/bench_cost_cpu.md).
        rollout_dtype="bfloat16",
        # The teacher's forward (a constant target) in bf16 autocast, as every forward of the paper's bf16 GPU runs.
        teacher_dtype="bfloat16",
    ),
    "paper": dict(
        model="Qwen/Qwen2.5-7B-Instruct", learning_rate=1e-5, per_device_train_batch_size=4,
        gradient_accumulation_steps=8, warmup_steps=10, max_prompt_length=2048, max_completion_length=2048,
        ema_alpha=0.02, teacher_template="paper", divergence="forward", bf16=True, gradient_checkpointing=True,
        use_vllm=True, save_steps=50, reinvoke_steps=100, reinvoke_prompts="hub:allenai/tulu-3-sft-mixture",
    ),
}
PRESET_PER_METHOD: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {"sdft": dict(num_train_epochs=2), "sft": dict(num_train_epochs=1), "dft": dict(num_train_epochs=1)},
}

# Per task inside a preset, keyed by task-name prefix (Table 4: knowledge acquisition generates at most 1024 tokens).
PRESET_PER_TASK: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {"knowledge": dict(max_completion_length=1024)},
}

_FIELD_NAMES = {f.name for f in fields(RunConfig)}


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["lr=1e-5", "divergence=reverse"]`` -> dict; values parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form key=value")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value) if value != "" else None
    return out


def load_recipe(path: str | Path) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """A YAML recipe: config keys, plus an optional ``sweep:`` mapping of key -> list of values (Tables 3-4).

    ``python -m sdft.train --config`` uses the config keys; the experiment drivers expand the sweep.
    """
    values = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a recipe must be a mapping of config keys to values")
    sweep = values.pop("sweep", None) or {}
    if not isinstance(sweep, dict) or not all(isinstance(v, list) and v for v in sweep.values()):
        raise ValueError(f"{path}: 'sweep' must map config keys to non-empty lists of values")
    _check_keys(values, str(path))
    _check_keys(sweep, f"{path} (sweep)")
    return values, sweep


def _check_keys(values: dict[str, Any], where: str) -> None:
    unknown = sorted(set(values) - _FIELD_NAMES)
    if unknown:
        raise ValueError(f"{where}: unknown config keys {unknown}; see `python -m sdft.train --help-config`")


def build_config(
    preset: str = "smoke",
    method: str | None = None,
    recipe: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> RunConfig:
    """Resolve a RunConfig from preset, per-method preset values, an optional YAML recipe and overrides."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {PRESETS}")
    values: dict[str, Any] = {"preset": preset, **PRESET_VALUES[preset]}
    recipe_values: dict[str, Any] = load_recipe(recipe)[0] if recipe is not None else {}
    overrides = dict(overrides or {})
    _check_keys(overrides, "command line")
    method = overrides.get("method") or method or recipe_values.get("method") or "sdft"
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    values.update(PRESET_PER_METHOD.get(preset, {}).get(method, {}))
    task = overrides.get("task") or recipe_values.get("task") or values.get("task") or ""
    for prefix, task_values in PRESET_PER_TASK.get(preset, {}).items():
        if task.startswith(prefix):
            values.update(task_values)
    values.update(recipe_values)
    values.update(overrides)
    values["method"] = method
    cfg = RunConfig(**{k: _coerce_number(k, v) for k, v in values.items()})
    validate(cfg)
    return cfg


_FIELD_TYPES = {f.name: str(f.type) for f in fields(RunConfig)}


def _coerce_number(name: str, value: Any) -> Any:
    """YAML 1.1 reads ``1e-4`` (no dot) as a string; a numeric field gets the number it spells."""
    if not isinstance(value, str) or value == "":
        return value
    kind = _FIELD_TYPES.get(name, "")
    try:
        if "float" in kind:
            return float(value)
        if kind.startswith("int"):
            return int(value)
    except ValueError:
        raise ValueError(f"config key {name!r}: expected a number, got {value!r}") from None
    return value


def validate(cfg: RunConfig) -> None:
    divergence_to_alpha(cfg.divergence)
    if cfg.estimator not in ("analytic", "token", "rao_blackwell"):
        raise ValueError(f"estimator must be analytic | token | rao_blackwell, got {cfg.estimator!r}")
    if cfg.estimator == "token" and cfg.divergence != "reverse":
        raise ValueError("the token-level estimator is defined for the reverse KL only (set divergence=reverse)")
    if cfg.teacher_kind not in ("ema", "base", "live"):
        raise ValueError(f"teacher_kind must be ema | base | live, got {cfg.teacher_kind!r}")
    if not 0.0 < cfg.ema_alpha <= 1.0:
        raise ValueError(f"ema_alpha must lie in (0, 1], got {cfg.ema_alpha}")
    if cfg.skip_first_tokens < 0:
        raise ValueError("skip_first_tokens must be >= 0")
    from sdft.prompts import get_template

    get_template(cfg.teacher_template)


def describe_fields() -> str:
    """A help text listing every config key with its default and meaning."""
    lines = []
    for f in fields(RunConfig):
        default = f.default if f.default is not dataclasses.MISSING else None
        lines.append(f"  {f.name} (default {default!r}): {f.metadata.get('help', '')}")
    return "\n".join(lines)


def trainer_kwargs(cfg: RunConfig, output_dir: str | Path) -> dict[str, Any]:
    """The ``TrainingArguments`` every method shares (Appendix B's optimiser settings come from ``cfg``)."""
    import torch

    cuda = torch.cuda.is_available()
    bf16 = cuda if cfg.bf16 is None else bool(cfg.bf16 and cuda)
    return dict(
        output_dir=str(output_dir),
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        warmup_steps=cfg.warmup_steps,
        lr_scheduler_type=cfg.lr_scheduler_type,
        max_grad_norm=cfg.max_grad_norm,
        weight_decay=cfg.weight_decay,
        optim=cfg.optim,
        bf16=bf16,
        gradient_checkpointing=cfg.gradient_checkpointing,
        logging_steps=cfg.logging_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        seed=cfg.seed,
        data_seed=cfg.seed,
        report_to=[],
        use_cpu=not cuda,
        dataloader_num_workers=0,
    )
