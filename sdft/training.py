"""Pieces every method's training function shares: the student, its tokenizer, the run's callbacks, the config of
another stage."""

from __future__ import annotations

import enum
import json
import math
import os
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback, TrainingArguments

from data_prep.schema import SplitReport
from data_prep.task import Task, load_records
from sdft.adapters import is_adapter_dir, load_adapter_model, quantization_kwargs
from sdft.distributed import any_process
from sdft.health import CollapseWatch
from sdft.interrupts import active_request
from sdft.models import load_tokenizer, resolve_model_path
from sdft.run_io import apply_thread_setting, write_text_atomic
from sdft.selection import BestValidationCheckpoint
from sdft.timing import RUN_CLOCK


def load_student(cfg, model_name: str | None = None):
    """The model to train (bf16 weights on GPU when the run trains in bf16, else float32; quantized with
    ``load_in_4bit`` / ``load_in_8bit``) and its tokenizer, left-padded. Its seconds count in the run's
    ``model_load_s`` (``sdft.timing.RUN_CLOCK``).

    ``model_name`` may name a saved adapter (re-invoke's stage-1 model of an adapter run): then the run's base
    model with that adapter, trainable (a PEFT model; the trainer trains it on instead of adding one)."""
    from transformers import AutoModelForCausalLM

    name = model_name or cfg.model
    cuda = torch.cuda.is_available()
    apply_thread_setting()
    dtype = torch.bfloat16 if (cuda and cfg.bf16) else torch.float32
    adapter = model_name if model_name is not None and is_adapter_dir(model_name) else None
    with RUN_CLOCK.loading():
        model = AutoModelForCausalLM.from_pretrained(resolve_model_path(cfg.model if adapter else name), dtype=dtype,
                                                     **quantization_kwargs(cfg))
        if adapter:
            model = load_adapter_model(adapter, merge=False, trainable=True, base=model)
        tokenizer = load_tokenizer(name)
    tokenizer.padding_side = "left"
    return model, tokenizer


def run_callbacks(run_dir: str | Path, stage: str | None = None, cfg=None, select: bool = True) -> list:
    """The callbacks of a run's trainer: the clean stop on SIGTERM / SIGINT (``sdft.interrupts``), ``metrics.jsonl``;
    with the run's ``cfg``, the collapse watch
    (``sdft.health``) and, with ``checkpoint_selection=best_val`` and ``select``, the validation evaluations of the
    checkpoint protocol (``sdft.selection``; ``select=False`` for a stage whose model is not the run's result)."""
    callbacks = [StopOnSignal(), JsonlMetricsCallback(Path(run_dir) / "metrics.jsonl", stage=stage)]
    if cfg is None:
        return callbacks

    watch = CollapseWatch(run_dir, stop=cfg.stop_on_collapse, stage=stage)
    callbacks.append(watch)
    if select and cfg.checkpoint_selection == "best_val":
        selection = selection_callback(cfg, run_dir, stage, on_probe=watch.observe_probe)
        if selection is not None:
            callbacks.append(selection)
    return callbacks


def selection_judge(task: Task):
    """The judge the validation evaluations of a judge-scored task use (one per run): the task's local judge, else
    an LLM judge, which needs ``OPENAI_API_KEY``; ``(None, reason)`` when it cannot run here."""
    from eval.judge import LLMJudge, judge_for

    if task.judge is None:
        return None, None
    judge = judge_for(task)
    if isinstance(judge, LLMJudge) and not os.environ.get("OPENAI_API_KEY"):
        return None, f"task {task.name!r} is scored by an LLM judge and OPENAI_API_KEY is not set"
    return judge, None


def selection_callback(cfg, run_dir: str | Path, stage: str | None = None, on_probe=None):
    """``sdft.selection.BestValidationCheckpoint`` for a run: the task's validation split (``selection_records`` of
    it; default the preset's evaluation size, all of it on ``mini`` and ``paper``; scored by the task's judge where
    it has one, None -- the run then reports its final model, and says so -- when that judge cannot run), prompted
    as the method is evaluated, at the preset's evaluation length (the run's ``cfg.evaluation``), every
    ``selection_steps`` steps (default ``save_steps``)."""
    evaluation = cfg.evaluation
    judge, problem = selection_judge(cfg.task_spec)
    if problem:  # said, never silent: the run then reports its final model
        print(f"[selection] checkpoint_selection=best_val is off for this run: {problem}; the final model is "
              "reported", flush=True)
        return None
    report = SplitReport()
    records = load_records(cfg.task_spec, "val", seed=cfg.seed, n=cfg.selection_records or evaluation.n,
                           data_dir=cfg.data_dir, skip_invalid=cfg.skip_invalid, report=report)
    if report.skipped:  # as the training split's, never silently
        print(f"[selection] skipped {len(report.skipped)} malformed validation record(s) (skip_invalid), e.g. "
              f"{report.skipped[0]}", flush=True)
    every = cfg.selection_steps or int(cfg.save_steps)
    return BestValidationCheckpoint(
        run_dir, records, cfg.task_spec, every=every, variant=evaluation.variant, template=evaluation.template,
        max_new_tokens=evaluation.max_new_tokens, batch_size=evaluation.batch_size, seed=evaluation.seed, stage=stage,
        on_probe=on_probe, judge=judge)


def derive_args(source, config_class: type, **values: Any):
    """A ``config_class`` with the ``TrainingArguments`` fields of ``source`` (optimiser, schedule, precision,
    logging, seed...) and ``values``: the config of another stage of a multi-stage method, nothing translated."""
    shared = {f.name: getattr(source, f.name) for f in fields(TrainingArguments) if f.init}
    shared = {name: value.value if isinstance(value, enum.Enum) else value for name, value in shared.items()}
    if hasattr(source, "prompt_accumulation_steps"):  # SDFT's, before num_generations multiplied it
        shared["gradient_accumulation_steps"] = source.prompt_accumulation_steps
    return config_class(**{**shared, **values})


def final_train_metrics(trainer) -> dict:
    """The last logged training values, for the manifest."""
    logs = [row for row in trainer.state.log_history if "loss" in row or "train_loss" in row]
    return {"global_step": trainer.state.global_step, "last_log": logs[-1] if logs else None}


class JsonlMetricsCallback(TrainerCallback):
    """Appends every Trainer log (loss, learning rate, distillation loss, ...) to ``metrics.jsonl``."""

    def __init__(self, path: str | Path, stage: str | None = None):
        self.path = Path(path)
        self.stage = stage

    def on_train_begin(self, args, state, control, **kwargs):
        """A resumed run logs again the steps after its checkpoint, so the rows an earlier process wrote for them (it
        was killed before its next checkpoint) are dropped: each is logged once, by the process whose model goes on."""
        if state.global_step == 0 or not state.is_world_process_zero or not self.path.exists():
            return
        rows = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
        kept = [r for r in rows if r.get("stage") != self.stage or r.get("step", 0) <= state.global_step]
        if len(kept) < len(rows):
            write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or not state.is_world_process_zero:
            return
        row = {"step": state.global_step, "epoch": state.epoch, "time": round(time.time(), 3)}
        if self.stage:
            row["stage"] = self.stage
        for k, v in logs.items():
            row[k] = v if not isinstance(v, float) or math.isfinite(v) else str(v)
        with self.path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")


class StopOnSignal(TrainerCallback):
    """Ends training after the step in which a stop signal arrived, with a checkpoint of that step
    (``sdft.interrupts``). First among the callbacks: those after it read ``training_interrupted``."""

    def on_step_end(self, args, state, control, **kwargs):
        request = active_request()
        if request is None or request.stopped:
            return control
        if any_process(request.requested, args.device):
            request.stopped_at = state.global_step
            control.should_save = True
            control.should_training_stop = True
        return control
