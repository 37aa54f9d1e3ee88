"""SFT + re-invoke (Lu & Thinking Machines Lab, 2025, "On-policy distillation", the personalization recipe).

Stage 1 is SFT on the task (``sdft.baselines.sft``). Stage 2 restores prior capabilities by on-policy
distillation from the FROZEN ORIGINAL BASE model on general-purpose prompts that are not task data
(``data_prep.general_prompts``, source ``reinvoke_prompts``), for ``reinvoke_steps`` optimizer steps:
the SFT'd student samples a response to each prompt and is trained to lower the per-token reverse KL
``KL(student || base)`` on its own samples (analytic full-vocabulary estimator by default, ``estimator``).

The run's trainer config is stage 2's, a ``SelfDistillationConfig`` whose defining values are this method's
defaults (below); stage 1's ``SFTConfig`` carries over its ``TrainingArguments`` fields (optimiser, schedule,
precision, ``max_steps``...) with ``max_length = max_prompt_length + max_completion_length``
(``sdft.training.derive_args``). Stage 2 runs ``reinvoke_steps`` optimizer steps on our SDFT trainer with
  * ``teacher_model_kind="base"``: TRL builds a separate, frozen (``requires_grad=False``, eval mode, never
    synchronised) teacher by loading ``model.config._name_or_path``. After SFT that attribute may name the
    stage-1 checkpoint (when the SFT model is reloaded to resume), so it is set explicitly to the original
    base (the run's ``model``) before the trainer is built, and checked after;
  * ``divergence="reverse"``;
  * ``teacher_template="none"`` with an empty demonstration: the teacher sees exactly the student's context.

Both stages append to the run's ``metrics.jsonl`` with ``stage`` = ``"sft"`` / ``"reinvoke"``. Checkpoints:
``<run_dir>/checkpoints/stage1_sft`` and ``<run_dir>/checkpoints/stage2_reinvoke``; a rerun resumes the stage
it stopped in from its newest complete checkpoint (``sdft.checkpoints.resume_point``); stage 2 restarts from the
end of stage 1 when it had no complete checkpoint of its own. Stage 1 counts as done once
``checkpoints/stage1_done.json`` is written (atomically, after stage 1's final model) and the model it names exists.

With ``use_peft`` stage 1 trains a LoRA adapter and stage 2 trains the same adapter on; the frozen original base
is then the student with its adapter disabled (TRL's ``base`` teacher of a PEFT model), not a second copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from accelerate.utils import is_peft_model

from data_prep.general_prompts import load_general_prompts
from sdft.baselines.sft import SFT_DEFAULTS, build_sft_trainer
from sdft.checkpoints import resume_point
from sdft.method import Method
from sdft.run_io import read_json_or_none, write_json_atomic
from sdft.sdft_config import SelfDistillationConfig
from sdft.self_distillation import build_sdft_trainer
from sdft.training import derive_args, final_train_metrics, load_student

STAGE1_DIR = "stage1_sft"
STAGE2_DIR = "stage2_reinvoke"
STAGE1_DONE = "stage1_done.json"


@dataclass
class ReinvokeArguments:
    """The knobs of SFT + re-invoke that its trainer configs lack."""

    reinvoke_steps: int = field(default=100, metadata={"help": "optimizer steps of stage 2 (on-policy distillation "
                                                               "from the frozen base)"})
    reinvoke_prompts: str = field(
        default="embedded",
        metadata={"help": "general prompt set of stage 2: 'embedded', 'hub:<owner>/<dataset>' or 'file:<path>' of a "
                          "local JSONL / JSON file (data_prep.general_prompts); checked when the config is built"},
    )


# Stage 2: frozen-base teacher, reverse KL, teacher context = student context (an empty demonstration).
# No demonstration, so no template artifact to mask: the loss covers every completion token.
REINVOKE_DEFAULTS = {"teacher_model_kind": "base", "divergence": "reverse", "teacher_template": "none",
                     "num_generations": 1, "num_loss_tokens_to_skip": 0}


def stage1_args(cfg, checkpoint_dir):
    """Stage 1's ``SFTConfig``: the run's ``TrainingArguments`` fields, SFT's sequence limit and loss."""
    from trl import SFTConfig

    t = cfg.training
    return derive_args(t, SFTConfig, output_dir=str(checkpoint_dir), loss_type="nll",
                       max_length=t.max_prompt_length + t.max_completion_length, **SFT_DEFAULTS)


def build_stage1_trainer(cfg, records: list[dict], run_dir, checkpoint_dir=None, **kwargs):
    """Stage 1: SFT on the task (``sdft.baselines.sft.build_sft_trainer`` with ``stage1_args``)."""
    checkpoint_dir = checkpoint_dir or Path(run_dir) / "checkpoints" / STAGE1_DIR
    return build_sft_trainer(cfg, records, run_dir, args=stage1_args(cfg, checkpoint_dir), stage="sft",
                             select=False, **kwargs)


def general_prompt_records(cfg) -> list[dict]:
    """Stage-2 prompts in the shape ``sdft_dataset`` reads (a prompt and an empty demonstration)."""
    needed = max(1, cfg.reinvoke_steps * cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps)
    prompts = load_general_prompts(cfg.reinvoke_prompts, n=needed, seed=cfg.seed)
    return [{"prompt": p, "demonstration": ""} for p in prompts]


def build_reinvoke_trainer(cfg, model, tokenizer, run_dir, callbacks=None):
    """Stage 2 on an SFT'd ``model``: on-policy reverse-KL distillation from the frozen original base."""
    from sdft.models import resolve_model_path
    from sdft.training import run_callbacks

    base_path = resolve_model_path(cfg.model)
    # TRL loads the "base" teacher from this attribute: make it the original base, not the SFT checkpoint.
    model.config._name_or_path = base_path
    trainer = build_sdft_trainer(
        cfg, general_prompt_records(cfg), run_dir, model=model, tokenizer=tokenizer,
        callbacks=callbacks if callbacks is not None else run_callbacks(run_dir, stage="reinvoke", cfg=cfg),
        checkpoint_dir=Path(run_dir) / "checkpoints" / STAGE2_DIR, args_overrides={"max_steps": cfg.reinvoke_steps},
    )
    teacher = trainer.accelerator.unwrap_model(trainer.teacher_model)
    if is_peft_model(teacher):  # the base weights under the adapter, which are never trained
        if teacher is not trainer.accelerator.unwrap_model(trainer.model) or trainer.args.teacher_model_kind != "base":
            raise RuntimeError("re-invoke: the stage-2 teacher of an adapter run is not the student's base")
        if any(p.requires_grad for n, p in teacher.named_parameters() if "lora_" not in n):
            raise RuntimeError("re-invoke: base weights of the adapter run are trainable")
        return trainer
    if teacher is trainer.accelerator.unwrap_model(trainer.model) or teacher.config._name_or_path != base_path:
        raise RuntimeError("re-invoke: the stage-2 teacher is not a separate copy of the original base model")
    if any(p.requires_grad for p in teacher.parameters()):
        raise RuntimeError("re-invoke: the stage-2 teacher has trainable parameters")
    return trainer


def train_reinvoke(cfg, records: list[dict], run_dir, resume_from_checkpoint=None):
    """SFT on the task, then ``reinvoke_steps`` steps of on-policy distillation from the frozen base."""
    run_dir = Path(run_dir)
    ckpt1, ckpt2 = run_dir / "checkpoints" / STAGE1_DIR, run_dir / "checkpoints" / STAGE2_DIR
    done1 = run_dir / "checkpoints" / STAGE1_DONE
    info: dict = {"divergence": cfg.divergence, "stage2_teacher": "frozen original base",
                  "stage2_prompts": cfg.reinvoke_prompts, "reinvoke_steps": cfg.reinvoke_steps}

    # ---- stage 1: SFT on the task (skipped when it finished in an earlier, interrupted run)
    stage1 = _stage1_done(done1)
    if stage1 is not None:
        info["sft"] = stage1["metrics"]
        resume2 = resume_point(ckpt2)
        # With a stage-2 checkpoint the trainer restores the student's weights itself; else start from SFT's end.
        if resume2:
            print(f"[sdft.train] re-invoke: stage 1 is done; stage 2 resumes from {resume2}", flush=True)
        model, tokenizer = load_student(cfg) if resume2 else load_student(cfg, stage1["final_checkpoint"])
    else:
        sft = build_stage1_trainer(cfg, records, run_dir, checkpoint_dir=ckpt1)
        main = sft.args.should_save  # the one process that writes files
        resume1 = resume_point(ckpt1, report=main)
        if resume1 and main:
            print(f"[sdft.train] re-invoke: stage 1 resumes from {resume1}", flush=True)
        sft.train(resume_from_checkpoint=resume1)
        # Every process takes the same decision (checkpoints are marked before any process goes on), and all of
        # them call save_model, which gathers sharded weights and writes on the main process.
        final = resume_point(ckpt1, report=False)
        if final is None or not final.endswith(f"-{sft.state.global_step}"):  # no end-of-training checkpoint
            final = str(ckpt1 / f"final-{sft.state.global_step}")
            sft.save_model(final)
        info["sft"] = final_train_metrics(sft)
        if main:
            write_json_atomic(done1, {"final_checkpoint": final, "metrics": info["sft"]})
        sft.accelerator.wait_for_everyone()
        model, tokenizer = sft.model, sft.processing_class
        tokenizer.padding_side = "left"  # TRL's rollouts pad prompts on the left
        resume2 = None

    # ---- stage 2: on-policy distillation from the frozen original base on general prompts
    trainer = build_reinvoke_trainer(cfg, model, tokenizer, run_dir)
    trainer.train(resume_from_checkpoint=resume2)
    info["reinvoke"] = final_train_metrics(trainer)
    info["stage2_prompt_count"] = len(trainer.train_dataset)
    return trainer, info


def _stage1_done(marker: Path) -> dict | None:
    """The stage-1 marker when stage 1 is done and the model it names exists; else ``None`` (a marker that names
    no model is reported, and stage 1 runs again from its newest complete checkpoint)."""
    if not marker.exists():
        return None
    stage1 = read_json_or_none(marker) or {}
    final = stage1.get("final_checkpoint")
    if final and Path(final).is_dir() and "metrics" in stage1:
        return stage1
    print(f"[sdft.train] re-invoke: ignoring {marker}: the stage-1 model it names ({final}) is not there", flush=True)
    return None


METHODS = [Method(
    "reinvoke", train=train_reinvoke, config_class=SelfDistillationConfig, args_class=ReinvokeArguments,
    title="SFT + re-invoke", defaults=REINVOKE_DEFAULTS, distils=True, style={"color": "#ff7f0e", "marker": "D"},
    description="SFT, then on-policy distillation from the frozen base on general prompts (Lu & Thinking Machines)",
)]
