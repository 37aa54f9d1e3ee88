"""SDFT as a method of this repository: its dataset, its trainer built from a run's config, its :class:`Method`.

The algorithm itself (config, loss, EMA teacher, rollouts) is ``sdft.trainer``.
"""

from __future__ import annotations

from pathlib import Path

from sdft.adapters import peft_config
from sdft.method import Method
from sdft.prompts import teacher_demonstration
from sdft.sdft_config import SelfDistillationConfig
from sdft.trainer import SelfDistillationTrainer
from sdft.training import final_train_metrics


def sdft_dataset(records: list[dict], teacher_context: str = "answer"):
    """TRL's columns: ``prompt`` (chat messages, the student's context) and ``privileged_context`` (what the teacher
    sees besides: :func:`sdft.prompts.teacher_demonstration` of ``teacher_context``)."""
    from datasets import Dataset

    return Dataset.from_list([{"prompt": r["prompt"], "privileged_context": teacher_demonstration(r, teacher_context)}
                              for r in records])


def build_sdft_trainer(cfg, records, run_dir, model=None, tokenizer=None, callbacks=None, checkpoint_dir=None,
                       args_overrides: dict | None = None) -> SelfDistillationTrainer:
    """The trainer of one run. ``checkpoint_dir`` defaults to ``<run_dir>/checkpoints`` (multi-stage methods give
    each stage its own); ``args_overrides`` sets fields of the run's ``SelfDistillationConfig`` for this trainer.
    With ``use_peft`` the trainer puts the run's LoRA adapter on ``model`` (unless it holds one already)."""
    from sdft.training import load_student, run_callbacks

    if model is None:
        model, tokenizer = load_student(cfg)
    args = cfg.trainer_args(checkpoint_dir or Path(run_dir) / "checkpoints", **(args_overrides or {}))
    return SelfDistillationTrainer(
        model=model,
        args=args,
        train_dataset=sdft_dataset(records, args.teacher_context),
        processing_class=tokenizer,
        callbacks=(callbacks if callbacks is not None else run_callbacks(run_dir, cfg=cfg)),
        peft_config=peft_config(cfg, model),
    )


def train_sdft(cfg, records, run_dir, resume_from_checkpoint=None):
    """SDFT (Algorithm 1): on-policy rollouts, demonstration-conditioned EMA teacher, per-token divergence."""
    trainer = build_sdft_trainer(cfg, records, run_dir)
    trainer.rollout_format_check = cfg.task_spec.format_check  # health/format_rate of the rollouts
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    return trainer, final_train_metrics(trainer)


METHODS = [Method(
    "sdft", train=train_sdft, config_class=SelfDistillationConfig, title="SDFT (ours)", distils=True,
    style={"color": "#1f77b4", "marker": "*"},
    description="on-policy self-distillation from the demonstration-conditioned EMA teacher (the paper)",
)]
