"""SFT + re-invoke (Lu & Thinking Machines Lab, 2025, "On-policy distillation", the personalization recipe).

Stage 1 is SFT on the task (``sdft.baselines.sft``). Stage 2 restores prior capabilities by on-policy
distillation from the FROZEN ORIGINAL BASE model on general-purpose prompts that are not task data
(``data_prep.general_prompts``, source ``cfg.reinvoke_prompts``), for ``cfg.reinvoke_steps`` optimizer steps:
the SFT'd student samples a response to each prompt and is trained to lower the per-token reverse KL
``KL(student || base)`` on its own samples (analytic full-vocabulary estimator by default, ``cfg.estimator``).

Stage 2 runs on our SDFT trainer (``sdft.trainer.build_sdft_trainer``) with
  * ``teacher_kind="base"``: TRL builds a separate, frozen (``requires_grad=False``, eval mode, never
    synchronised) teacher by loading ``model.config._name_or_path``. After SFT that attribute may name the
    stage-1 checkpoint (when the SFT model is reloaded to resume), so it is set explicitly to the original
    base (``cfg.model``) before the trainer is built, and checked after;
  * ``divergence="reverse"``;
  * ``teacher_template="none"`` with an empty demonstration: the teacher sees exactly the student's context.

Both stages append to the run's ``metrics.jsonl`` with ``stage`` = ``"sft"`` / ``"reinvoke"``. Checkpoints:
``<run_dir>/checkpoints/stage1_sft`` and ``<run_dir>/checkpoints/stage2_reinvoke``; a rerun resumes the stage
it stopped in (stage 2 restarts from the last stage-1 checkpoint when it had no checkpoint of its own).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from sdft.config import RunConfig

STAGE1_DIR = "stage1_sft"
STAGE2_DIR = "stage2_reinvoke"
STAGE1_DONE = "stage1_done.json"


def stage2_config(cfg: RunConfig) -> RunConfig:
    """The stage-2 settings: frozen-base teacher, reverse KL, teacher context = student context."""
    return dataclasses.replace(
        cfg, max_steps=cfg.reinvoke_steps, teacher_kind="base", divergence="reverse", teacher_template="none",
        num_generations=1,
    )


def general_prompt_records(cfg: RunConfig) -> list[dict]:
    """Stage-2 prompts in the shape ``sdft_dataset`` reads (a prompt and an empty demonstration)."""
    from data_prep.general_prompts import load_general_prompts

    needed = max(1, cfg.reinvoke_steps * cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps)
    prompts = load_general_prompts(cfg.reinvoke_prompts, n=needed, seed=cfg.seed)
    return [{"prompt": p, "demonstration": ""} for p in prompts]


def build_reinvoke_trainer(cfg: RunConfig, model, tokenizer, run_dir, callbacks=None):
    """Stage 2 on an SFT'd ``model``: on-policy reverse-KL distillation from the frozen original base."""
    from sdft.models import resolve_model_path
    from sdft.trainer import build_sdft_trainer
    from sdft.training import run_callbacks

    base_path = resolve_model_path(cfg.model)
    # TRL loads the "base" teacher from this attribute: make it the original base, not the SFT checkpoint.
    model.config._name_or_path = base_path
    cfg2 = stage2_config(cfg)
    trainer = build_sdft_trainer(
        cfg2, general_prompt_records(cfg2), run_dir, model=model, tokenizer=tokenizer,
        callbacks=callbacks if callbacks is not None else run_callbacks(run_dir, stage="reinvoke"),
        checkpoint_dir=Path(run_dir) / "checkpoints" / STAGE2_DIR,
    )
    teacher = trainer.accelerator.unwrap_model(trainer.teacher_model)
    if teacher is trainer.accelerator.unwrap_model(trainer.model) or teacher.config._name_or_path != base_path:
        raise RuntimeError("re-invoke: the stage-2 teacher is not a separate copy of the original base model")
    if any(p.requires_grad for p in teacher.parameters()):
        raise RuntimeError("re-invoke: the stage-2 teacher has trainable parameters")
    return trainer


def _last(folder: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(folder)) if folder.is_dir() else None


def train_reinvoke(cfg: RunConfig, records: list[dict], run_dir, resume_from_checkpoint=None):
    """SFT on the task, then ``cfg.reinvoke_steps`` steps of on-policy distillation from the frozen base."""
    from sdft.baselines.sft import build_sft_trainer
    from sdft.training import final_train_metrics, load_student

    run_dir = Path(run_dir)
    ckpt1, ckpt2 = run_dir / "checkpoints" / STAGE1_DIR, run_dir / "checkpoints" / STAGE2_DIR
    done1 = run_dir / "checkpoints" / STAGE1_DONE
    # "divergence" overrides the run manifest's entry (cfg.divergence), which stage 2 does not use
    info: dict = {"divergence": "reverse", "stage2_teacher": "frozen original base", "stage2_divergence": "reverse",
                  "stage2_prompts": cfg.reinvoke_prompts, "reinvoke_steps": cfg.reinvoke_steps}

    # ---- stage 1: SFT on the task (skipped when it finished in an earlier, interrupted run)
    if done1.exists():
        stage1 = json.loads(done1.read_text())
        info["sft"] = stage1["metrics"]
        resume2 = _last(ckpt2)
        # With a stage-2 checkpoint the trainer restores the student's weights itself; else start from SFT's end.
        model, tokenizer = load_student(cfg) if resume2 else load_student(cfg, stage1["final_checkpoint"])
    else:
        sft = build_sft_trainer(cfg, records, run_dir, checkpoint_dir=ckpt1, stage="sft")
        sft.train(resume_from_checkpoint=_last(ckpt1))
        final = _last(ckpt1)
        if final is None or not final.endswith(f"-{sft.state.global_step}"):  # no end-of-training checkpoint
            final = str(ckpt1 / f"final-{sft.state.global_step}")
            sft.save_model(final)
        info["sft"] = final_train_metrics(sft)
        done1.write_text(json.dumps({"final_checkpoint": final, "metrics": info["sft"]}, default=str))
        model, tokenizer = sft.model, sft.processing_class
        tokenizer.padding_side = "left"  # TRL's rollouts pad prompts on the left
        resume2 = None

    # ---- stage 2: on-policy distillation from the frozen original base on general prompts
    trainer = build_reinvoke_trainer(cfg, model, tokenizer, run_dir)
    trainer.train(resume_from_checkpoint=resume2)
    info["reinvoke"] = final_train_metrics(trainer)
    info["stage2_prompt_count"] = len(trainer.train_dataset)
    return trainer.model, trainer.processing_class, info
