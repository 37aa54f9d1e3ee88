"""Pieces every method's training function shares: the student, its tokenizer, the run's callbacks."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from sdft.models import load_tokenizer, resolve_model_path
from sdft.run_io import JsonlMetricsCallback


def load_student(cfg, model_name: str | None = None):
    """The model to train (bf16 weights on GPU when the run trains in bf16, else float32) and its tokenizer,
    left-padded."""
    from transformers import AutoModelForCausalLM

    name = model_name or cfg.model
    cuda = torch.cuda.is_available()
    if not cuda and os.environ.get("SDFT_NUM_THREADS"):
        # On CPU cores shared with other jobs, fewer threads than cores can be much faster (experiments/bench_cost.py).
        torch.set_num_threads(int(os.environ["SDFT_NUM_THREADS"]))
    dtype = torch.bfloat16 if (cuda and cfg.bf16) else torch.float32
    model = AutoModelForCausalLM.from_pretrained(resolve_model_path(name), dtype=dtype)
    tokenizer = load_tokenizer(name)
    tokenizer.padding_side = "left"
    return model, tokenizer


def run_callbacks(run_dir: str | Path, stage: str | None = None) -> list:
    return [JsonlMetricsCallback(Path(run_dir) / "metrics.jsonl", stage=stage)]


def final_train_metrics(trainer) -> dict:
    """The last logged training values, for the manifest."""
    logs = [row for row in trainer.state.log_history if "loss" in row or "train_loss" in row]
    return {"global_step": trainer.state.global_step, "last_log": logs[-1] if logs else None}
