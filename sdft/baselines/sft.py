"""SFT and DFT on TRL's ``SFTTrainer``.

* SFT: next-token cross-entropy on the demonstration, given the student's prompt. The dataset is in TRL's
  conversational prompt-completion format, ``{"prompt": messages, "completion": [assistant message]}``, with
  ``completion_only_loss=True``: the prompt tokens (system, user and the assistant header) carry label -100,
  so only the assistant's tokens -- the demonstration and the end-of-turn token -- are trained on.
* DFT (Wu et al., 2025, arXiv 2508.05629): the same token loss multiplied by the detached probability of the
  target token, ``-sg[p(y_t)] log p(y_t)``. TRL 1.16 implements it as ``SFTConfig(loss_type="dft")``; the tests
  check it against ``sdft.losses.dft_loss`` and a hand computation.

The optimiser settings are the shared ones of ``sdft.config.trainer_kwargs``. The sequence limit is
``max_prompt_length + max_completion_length`` (TRL truncates longer sequences at the end).
"""

from __future__ import annotations

from pathlib import Path

from sdft.config import RunConfig, trainer_kwargs
from sdft.prompts import student_messages


def sft_config_from(cfg: RunConfig, output_dir, loss_type: str = "nll", **overrides):
    """TRL's ``SFTConfig`` with the shared optimiser settings of every method."""
    from trl import SFTConfig

    values = dict(
        **trainer_kwargs(cfg, output_dir),
        max_length=cfg.max_prompt_length + cfg.max_completion_length,
        completion_only_loss=True,
        loss_type=loss_type,
        shuffle_dataset=True,
        dataset_num_proc=None,
    )
    values.update(overrides)
    return SFTConfig(**values)


def sft_examples(records: list[dict], completions: list[str] | None = None) -> list[dict]:
    """Conversational prompt-completion rows: the student's prompt and, as the assistant turn, the target text.

    ``completions`` defaults to each record's demonstration (SFT); SFT-from-teacher passes teacher samples
    (one row per sample, ``records`` then repeated accordingly).
    """
    targets = [r["demonstration"] for r in records] if completions is None else completions
    if len(targets) != len(records):
        raise ValueError(f"{len(records)} records but {len(targets)} completions")
    return [{"prompt": student_messages(r), "completion": [{"role": "assistant", "content": t}]}
            for r, t in zip(records, targets)]


def build_sft_trainer(cfg: RunConfig, records: list[dict], run_dir, loss_type: str = "nll", model=None,
                      tokenizer=None, completions: list[str] | None = None, callbacks=None,
                      checkpoint_dir=None, stage: str | None = None):
    """An ``SFTTrainer`` on (student prompt, target) conversations, loss on the assistant tokens only."""
    from datasets import Dataset
    from trl import SFTTrainer

    from sdft.training import load_student, run_callbacks

    if model is None:
        model, tokenizer = load_student(cfg)
    # SFT needs no left padding (nothing is generated); TRL's collator pads on the right.
    args = sft_config_from(cfg, checkpoint_dir or Path(run_dir) / "checkpoints", loss_type=loss_type)
    return SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(sft_examples(records, completions)),
        processing_class=tokenizer,
        callbacks=callbacks if callbacks is not None else run_callbacks(run_dir, stage=stage),
    )


def _train(cfg, records, run_dir, loss_type, resume_from_checkpoint=None):
    from sdft.training import final_train_metrics

    trainer = build_sft_trainer(cfg, records, run_dir, loss_type=loss_type)
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    info = final_train_metrics(trainer)
    info.update(loss_type=loss_type, n_examples=len(trainer.train_dataset), max_length=trainer.args.max_length)
    return trainer.model, trainer.processing_class, info


def train_sft(cfg: RunConfig, records: list[dict], run_dir, resume_from_checkpoint=None):
    """SFT: cross-entropy on the demonstration tokens given the student prompt."""
    return _train(cfg, records, run_dir, "nll", resume_from_checkpoint)


def train_dft(cfg: RunConfig, records: list[dict], run_dir, resume_from_checkpoint=None):
    """DFT: SFT's token loss scaled by the detached target-token probability (TRL ``loss_type='dft'``)."""
    return _train(cfg, records, run_dir, "dft", resume_from_checkpoint)
