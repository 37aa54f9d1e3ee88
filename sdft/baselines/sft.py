"""SFT and DFT on TRL's ``SFTTrainer``.

* SFT: next-token cross-entropy on the demonstration, given the student's prompt. The dataset is in TRL's
  conversational prompt-completion format, ``{"prompt": messages, "completion": [assistant message]}``, with
  ``completion_only_loss=True``: the prompt tokens (system, user and the assistant header) carry label -100,
  so only the assistant's tokens -- the demonstration and the end-of-turn token -- are trained on.
* DFT (Wu et al., 2025, arXiv 2508.05629): the same token loss multiplied by the detached probability of the
  target token, ``-sg[p(y_t)] log p(y_t)``. TRL 1.16 implements it as ``SFTConfig(loss_type="dft")``; the tests
  check it against ``sdft.losses.dft_loss`` and a hand computation.

Every knob is a field of TRL's ``SFTConfig`` (the sequence limit is ``max_length``: TRL truncates longer sequences
at the end; the presets set it to the SDFT runs' prompt + completion lengths).
"""

from __future__ import annotations

from pathlib import Path

from trl import SFTConfig
from trl import SFTTrainer as _TRLSFTTrainer

from sdft.checkpoints import CompleteCheckpoints
from sdft.method import Method
from sdft.prompts import student_messages
from sdft.timing import TimedSteps

# The data order of every method is shuffled (TRL's SFTConfig does not shuffle by default); loss on the
# assistant turn only. With several processes the token mean is taken over the tokens of all processes
# (transformers' default, pinned here): each process divides its token sum by the global token count
# (num_items_in_batch, gathered), so N processes x batch b train exactly as 1 process x batch N*b; with it off,
# each process averages over its own tokens and processes with more tokens weigh less
# (tests/sdft/test_multiprocess.py).
SFT_DEFAULTS = {"shuffle_dataset": True, "completion_only_loss": True, "average_tokens_across_devices": True}


class SFTTrainer(TimedSteps, CompleteCheckpoints, _TRLSFTTrainer):
    """TRL's ``SFTTrainer`` whose checkpoints are complete or ignored (``sdft.checkpoints``) and whose logged steps
    carry their phases' seconds (``sdft.timing``: forward-backward, optimizer, checkpoint)."""


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


def build_sft_trainer(cfg, records: list[dict], run_dir, model=None, tokenizer=None,
                      completions: list[str] | None = None, callbacks=None, checkpoint_dir=None,
                      stage: str | None = None, args=None, select: bool = True):
    """An ``SFTTrainer`` on (student prompt, target) conversations, loss on the assistant tokens only.

    ``args`` (an ``SFTConfig``) defaults to the run's own trainer config, writing to ``checkpoint_dir``; ``select``:
    whether its checkpoints are candidates of the checkpoint selection (``sdft.training.run_callbacks``). With
    ``use_peft``, TRL's trainer puts the run's LoRA adapter on the model.
    """
    from datasets import Dataset

    from sdft.adapters import peft_config
    from sdft.training import load_student, run_callbacks

    if model is None:
        model, tokenizer = load_student(cfg)
    # SFT needs no left padding (nothing is generated); TRL's collator pads on the right.
    if args is None:
        args = cfg.trainer_args(checkpoint_dir or Path(run_dir) / "checkpoints")
    return SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(sft_examples(records, completions)),
        processing_class=tokenizer,
        callbacks=callbacks if callbacks is not None else run_callbacks(run_dir, stage=stage, cfg=cfg, select=select),
        peft_config=peft_config(cfg, model),
    )


def train_sft(cfg, records: list[dict], run_dir, resume_from_checkpoint=None):
    """SFT (``loss_type="nll"``) or DFT (``loss_type="dft"``): the loss type is the run's config."""
    from sdft.training import final_train_metrics

    trainer = build_sft_trainer(cfg, records, run_dir)
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    info = final_train_metrics(trainer)
    info.update(loss_type=trainer.args.loss_type, n_examples=len(trainer.train_dataset),
                max_length=trainer.args.max_length)
    return trainer, info


METHODS = [
    Method("sft", train=train_sft, config_class=SFTConfig, title="SFT", defaults={**SFT_DEFAULTS, "loss_type": "nll"},
           style={"color": "#d62728", "marker": "s"},
           description="cross-entropy on the demonstration (TRL SFTTrainer)"),
    Method("dft", train=train_sft, config_class=SFTConfig, title="DFT", defaults={**SFT_DEFAULTS, "loss_type": "dft"},
           style={"color": "#9467bd", "marker": "^"},
           description="SFT's token loss weighted by the detached target-token probability (Wu et al., 2025)"),
]
