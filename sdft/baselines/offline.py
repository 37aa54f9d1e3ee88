"""Offline distillation from the teacher, and SFT on the teacher's samples (Fig. 6: what "on-policy" buys).

Both start by sampling the teacher once, before any training, and caching the samples to disk:

* the teacher is the initial model conditioned on the demonstration, ``teacher_messages(record,
  teacher_template)`` -- the same context as SDFT's teacher;
* ``offline_num_samples`` samples per prompt, temperature ``temperature``, top-p ``top_p``, at most
  ``max_completion_length`` new tokens, seeded by the run's ``seed`` (``TeacherSamplingArguments``);
* written to ``<run_dir>/teacher_samples.jsonl`` (one line per sample: record id, sample index, the teacher
  prompt, the completion's token ids and text) with ``teacher_samples.meta.json`` beside it. A rerun with the
  same settings reuses the cache, so a resumed run trains on exactly the same sequences.

Then
* ``offline_distill``: for every cached completion ``y``, the student sees (student prompt, ``y``) and the
  FROZEN teacher (a separate copy of the initial model) sees (teacher prompt, ``y``); the loss is our per-token
  divergence ``sdft.losses.self_distillation_loss`` (``divergence``, full vocabulary) at the completion
  positions, averaged per sequence then over the batch, like SDFT. The gradient estimator is the analytic one:
  the token-level and Rao-Blackwellized estimators assume ``y`` is sampled from the student, which it is not here.
  TRL's ``GKDTrainer`` does not fit: it feeds the teacher the student's prompt, and the teacher's context here
  holds the demonstration. So this is a small ``transformers.Trainer`` subclass with our loss.
* ``sft_from_teacher``: TRL's ``SFTTrainer`` (``sdft.baselines.sft``) on (student prompt, cached completion text).

Neither calls generation after the cache is written.

With ``use_peft`` the student is a LoRA adapter on the initial model, and offline distillation's frozen teacher is
that same model with the adapter disabled -- the initial model, without a second copy of its weights.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate.utils import is_peft_model
from transformers import Trainer, TrainingArguments
from trl import SFTConfig

from sdft.adapters import adapters_off, attach_adapter
from sdft.baselines.sft import SFT_DEFAULTS, build_sft_trainer
from sdft.checkpoints import CompleteCheckpoints
from sdft.losses import divergence_alpha, self_distillation_loss
from sdft.method import Method
from sdft.prompts import get_template, student_messages, teacher_messages
from sdft.sequences import eos_token_ids, left_padded_position_ids, lengths_to_first_eos, pad_sequences
from sdft.timing import TimedSteps
from sdft.training import final_train_metrics, load_student

CACHE_FILE = "teacher_samples.jsonl"
CACHE_META = "teacher_samples.meta.json"


@dataclass
class TeacherSamplingArguments:
    """How the teacher's samples are drawn, once, before training (both methods of this module)."""

    teacher_template: str = field(default="paper", metadata={"help": "the teacher's context: a name of "
                                                                     "sdft.prompts.TEACHER_TEMPLATES or a template"})
    offline_num_samples: int = field(default=1, metadata={"help": "teacher samples per prompt"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature of the teacher"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling of the teacher"})
    max_prompt_length: int = field(default=1024, metadata={"help": "prompts longer than this are cut on the left"})
    max_completion_length: int = field(default=2048, metadata={"help": "new tokens per teacher sample"})

    def __post_init__(self):
        get_template(self.teacher_template)


@dataclass
class OfflineDistillConfig(TrainingArguments):
    """``TrainingArguments`` plus the loss of offline distillation."""

    divergence: str = field(
        default="forward", metadata={"help": "per-token divergence to the frozen teacher: forward, reverse or a "
                                             "number in [0, 1] (generalized JSD; see SelfDistillationConfig)"})
    num_loss_tokens_to_skip: int = field(default=0, metadata={"help": "mask the loss on the first k completion "
                                                                      "tokens"})
    remove_unused_columns: bool = field(default=False, metadata={"help": "keep the collator's columns"})

    def __post_init__(self):
        divergence_alpha(self.divergence)
        super().__post_init__()


# ------------------------------------------------------------------------------------------------ teacher cache
def _prompt_ids(tokenizer, messages, max_prompt_length: int) -> list[int]:
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    return list(ids["input_ids"])[-max_prompt_length:]


def cache_settings(cfg, records: list[dict]) -> dict:
    """What the cached samples depend on; a cache made with other settings is not reused."""
    return dict(model=cfg.model, teacher_template=cfg.teacher_template, temperature=cfg.temperature, top_p=cfg.top_p,
                num_samples=cfg.offline_num_samples, max_completion_length=cfg.max_completion_length,
                max_prompt_length=cfg.max_prompt_length, seed=cfg.seed, record_ids=[r["id"] for r in records])


def read_cache(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def generate_teacher_cache(cfg, records: list[dict], model, tokenizer, run_dir) -> list[dict]:
    """Sample the demonstration-conditioned initial model once per (record, sample) and cache it; return the rows.

    With several processes the main one samples and writes the cache; the others then read it."""
    from accelerate import PartialState

    with PartialState().main_process_first():
        return _teacher_cache(cfg, records, model, tokenizer, run_dir)


@torch.no_grad()
def _teacher_cache(cfg, records: list[dict], model, tokenizer, run_dir) -> list[dict]:
    run_dir = Path(run_dir)
    path, meta_path = run_dir / CACHE_FILE, run_dir / CACHE_META
    settings = cache_settings(cfg, records)
    if path.exists() and meta_path.exists() and json.loads(meta_path.read_text()).get("settings") == settings:
        return read_cache(path)

    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id
    eos = eos_token_ids(model, tokenizer)
    was_training = model.training
    model.eval()
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(cfg.seed)
    rows: list[dict] = []
    batch_size = max(1, cfg.per_device_train_batch_size)
    try:
        for start in range(0, len(records), batch_size):
            batch = records[start:start + batch_size]
            prompts = [teacher_messages(r, cfg.teacher_template) for r in batch]
            ids = [_prompt_ids(tokenizer, p, cfg.max_prompt_length) for p in prompts]
            input_ids, attention = pad_sequences(ids, pad_id, side="left")
            out = model.generate(
                input_ids=input_ids.to(device), attention_mask=attention.to(device), do_sample=True,
                temperature=cfg.temperature, top_p=cfg.top_p, top_k=0, max_new_tokens=cfg.max_completion_length,
                num_return_sequences=cfg.offline_num_samples, pad_token_id=pad_id,
            )[:, input_ids.size(1):]
            lengths, ended = lengths_to_first_eos(out, eos)
            for j, completion in enumerate(out.tolist()):
                rec, prompt = batch[j // cfg.offline_num_samples], prompts[j // cfg.offline_num_samples]
                kept = completion[:lengths[j]]  # keep the end token, as SDFT does
                text_ids = kept[:-1] if ended[j] else kept
                rows.append({
                    "record_id": rec["id"], "sample": j % cfg.offline_num_samples, "teacher_prompt": prompt,
                    "completion_ids": kept, "completion": tokenizer.decode(text_ids, skip_special_tokens=True),
                    "finished": ended[j],
                })
    finally:
        torch.random.set_rng_state(generator_state)
        model.train(was_training)

    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.replace(tmp, path)
    meta_path.write_text(json.dumps({"settings": settings, "rows": len(rows)}, indent=1))
    return rows


# ------------------------------------------------------------------------------------------------ distillation
def distillation_examples(records: list[dict], cache: list[dict], tokenizer, cfg) -> list[dict]:
    """Token ids of (student prompt, teacher prompt, completion) for every cached sample."""
    by_id = {r["id"]: r for r in records}
    out = []
    for row in cache:
        rec = by_id[row["record_id"]]
        out.append({
            "student_prompt_ids": _prompt_ids(tokenizer, student_messages(rec), cfg.max_prompt_length),
            "teacher_prompt_ids": _prompt_ids(tokenizer, row["teacher_prompt"], cfg.max_prompt_length),
            "completion_ids": list(row["completion_ids"]),
        })
    return [e for e in out if e["completion_ids"]]


class OfflineDistillationCollator:
    """Left-pads the prompts and right-pads the completions, so the completion starts at the same column."""

    def __init__(self, pad_token_id: int):
        self.pad = pad_token_id

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        completion_ids, completion_mask = pad_sequences([e["completion_ids"] for e in examples], self.pad, side="right")
        student_ids, student_mask = pad_sequences([e["student_prompt_ids"] for e in examples], self.pad, side="left")
        teacher_ids, teacher_mask = pad_sequences([e["teacher_prompt_ids"] for e in examples], self.pad, side="left")
        return {
            "input_ids": torch.cat([student_ids, completion_ids], dim=1),
            "attention_mask": torch.cat([student_mask, completion_mask], dim=1),
            "teacher_input_ids": torch.cat([teacher_ids, completion_ids], dim=1),
            "teacher_attention_mask": torch.cat([teacher_mask, completion_mask], dim=1),
            "completion_ids": completion_ids, "completion_mask": completion_mask,
        }


def completion_logits(model, input_ids, attention_mask, completion_length: int) -> torch.Tensor:
    """Logits ``[B, C, V]`` whose position t predicts completion token t (the completion fills the last C columns)."""
    position_ids = left_padded_position_ids(attention_mask)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                   logits_to_keep=completion_length + 1).logits
    return logits[:, :-1]


class OfflineDistillationTrainer(TimedSteps, CompleteCheckpoints, Trainer):
    """``Trainer`` whose loss is the per-token divergence to a frozen teacher on fixed (cached) sequences; its logged
    steps carry their phases' seconds (``sdft.timing``).

    ``teacher_model=None`` (a PEFT student): the teacher is the student with its adapter disabled."""

    def __init__(self, *args, teacher_model, divergence="forward", skip_first_tokens: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        if teacher_model is None:
            if not is_peft_model(self.model):
                raise ValueError("offline distillation without a teacher model needs a PEFT student (its base is "
                                 "the teacher)")
        else:
            self.teacher_model = teacher_model.to(self.args.device)
            self.teacher_model.requires_grad_(False)
            self.teacher_model.eval()
        self.shares_base = teacher_model is None
        self.divergence, self.skip_first_tokens = divergence, skip_first_tokens
        self.model_accepts_loss_kwargs = False  # the loss is a per-batch mean: let Trainer scale it for accumulation

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        c_len = inputs["completion_ids"].size(1)
        student = completion_logits(model, inputs["input_ids"], inputs["attention_mask"], c_len)
        with torch.no_grad():
            if self.shares_base:
                with adapters_off(self.accelerator.unwrap_model(self.model)) as base:
                    teacher = completion_logits(base, inputs["teacher_input_ids"], inputs["teacher_attention_mask"],
                                                c_len)
            else:
                teacher = completion_logits(self.teacher_model, inputs["teacher_input_ids"],
                                            inputs["teacher_attention_mask"], c_len)
        loss = self_distillation_loss(
            student, teacher, inputs["completion_ids"], inputs["completion_mask"], divergence=self.divergence,
            estimator="analytic", skip_first=self.skip_first_tokens, reduction="sequence_mean",
        )
        return (loss, {"student_logits": student}) if return_outputs else loss


def build_offline_distill_trainer(cfg, records: list[dict], run_dir, model=None, tokenizer=None,
                                  teacher_model=None, callbacks=None):
    """Make (or reuse) the teacher cache with the initial model, then a trainer on the cached sequences only (with
    ``use_peft``: the student a LoRA adapter on the initial model, which is also the teacher with it disabled)."""
    from datasets import Dataset

    from sdft.training import load_student, run_callbacks

    if model is None:
        model, tokenizer = load_student(cfg)
    cache = generate_teacher_cache(cfg, records, model, tokenizer, run_dir)
    args = cfg.trainer_args(Path(run_dir) / "checkpoints")
    if cfg.use_peft:  # the teacher: the one given, else the student with its adapter disabled
        model = attach_adapter(model, cfg, args)
    elif teacher_model is None:
        teacher_model, _ = load_student(cfg)  # a separate copy of the initial model, frozen by the trainer
    examples = distillation_examples(records, cache, tokenizer, cfg)
    trainer = OfflineDistillationTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(examples),
        data_collator=OfflineDistillationCollator(tokenizer.pad_token_id), processing_class=tokenizer,
        callbacks=callbacks if callbacks is not None else run_callbacks(run_dir, cfg=cfg),
        teacher_model=teacher_model, divergence=args.divergence, skip_first_tokens=args.num_loss_tokens_to_skip,
    )
    trainer.cache_rows = cache
    return trainer


def _cache_info(cache: list[dict]) -> dict:
    return {"teacher_samples": len(cache), "teacher_samples_file": CACHE_FILE,
            "teacher_samples_finished": sum(r["finished"] for r in cache)}


def train_offline_distill(cfg, records: list[dict], run_dir, resume_from_checkpoint=None):
    """Minimize the per-token divergence to the frozen demonstration-conditioned teacher on cached teacher samples."""
    trainer = build_offline_distill_trainer(cfg, records, run_dir)
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    info = {**final_train_metrics(trainer), **_cache_info(trainer.cache_rows), "estimator": "analytic"}
    return trainer, info


def train_sft_from_teacher(cfg, records: list[dict], run_dir, resume_from_checkpoint=None):
    """SFT (student prompt -> cached teacher sample), on the same cached samples as offline distillation."""
    model, tokenizer = load_student(cfg)
    cache = generate_teacher_cache(cfg, records, model, tokenizer, run_dir)
    by_id = {r["id"]: r for r in records}
    rows = [row for row in cache if row["completion"].strip()]
    trainer = build_sft_trainer(cfg, [by_id[row["record_id"]] for row in rows], run_dir, model=model,
                                tokenizer=tokenizer, completions=[row["completion"] for row in rows])
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    info = {**final_train_metrics(trainer), **_cache_info(cache), "n_examples": len(rows)}
    return trainer, info


METHODS = [
    Method("offline_distill", train=train_offline_distill, config_class=OfflineDistillConfig,
           args_class=TeacherSamplingArguments, title="Offline distillation", distils=True,
           style={"color": "#2ca02c", "marker": "P"},
           description="SDFT's per-token divergence on teacher samples generated once before training"),
    Method("sft_from_teacher", train=train_sft_from_teacher, config_class=SFTConfig,
           args_class=TeacherSamplingArguments, title="SFT on teacher samples",
           defaults={**SFT_DEFAULTS, "loss_type": "nll"}, style={"color": "#e377c2", "marker": "X"},
           description="SFT on the same cached teacher samples"),
]
