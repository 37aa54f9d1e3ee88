"""Training runs on several processes, for tests/sdft/test_multiprocess.py (not a test module itself).

    accelerate launch --multi_gpu --num_processes 2 tests/sdft/mp_worker.py OUT MODEL

(on a machine without CUDA that is a gloo process group on the CPU; ``use_cpu=true`` keeps it there on any
machine). Every run goes through ``sdft.train.main`` -- what ``python -m sdft.train`` calls -- into
``OUT/runs/<name>``; the runs are the ``RUNS`` below. Besides what the runs write themselves, each process leaves:

  * ``OUT/dumps/<name>/<trainer>-rank<r>.safetensors``: its own student and (SDFT trainers) teacher weights at the
    end of each ``train()`` (the test compares the ranks' teachers);
  * ``OUT/writes-rank<r>.json``: every file-system write it made under ``OUT/runs`` -- open for writing, mkdir,
    rename, remove (an audit hook), ``torch.save`` and safetensors' ``save_file`` (wrapped) -- for the test's check
    that only the main process writes run files.

Nothing here changes what is trained: ``train()`` is wrapped to dump weights after it returns.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

# (name, method, key=value overrides): every method of the command line, two optimizer steps, checkpoints kept;
# then one optimizer step of batch 2 per process, compared with one process of batch 4 in the test. SDFT's
# rollouts are greedy there, so both sides train on the same rollouts.
COMMON = ["use_cpu=true", "max_steps=2", "save_steps=2", "keep_checkpoints=true"]
# SGD at lr 1 for the equivalence step (see tests/sdft/test_multiprocess.py: EQUIVALENCE_STEP)
ONE_STEP = ["use_cpu=true", "max_steps=1", "save_steps=1000", "per_device_train_batch_size=2", "optim=sgd",
            "learning_rate=1.0", "warmup_steps=0"]
GREEDY = ["generation_kwargs={do_sample: false}"]
RUNS = [
    ("sdft", "sdft", COMMON),
    ("sft", "sft", COMMON),
    ("dft", "dft", COMMON),
    ("reinvoke", "reinvoke", COMMON),
    ("eq_sft", "sft", ONE_STEP),
    ("eq_sft_local_mean", "sft", ONE_STEP + ["average_tokens_across_devices=false"]),
    ("eq_sdft", "sdft", ONE_STEP + GREEDY),
]

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_WRITE_EVENTS = ("os.mkdir", "os.rename", "os.remove", "os.rmdir", "shutil.rmtree", "os.truncate")


def audit_writes(root: Path, into: list) -> None:
    """Record into ``into`` every write under ``root`` this process makes from now on."""
    root_s = str(root.resolve()) + os.sep

    def under(path) -> str | None:
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if not isinstance(path, str):
            return None
        full = os.path.abspath(path)
        return full[len(root_s):] if full.startswith(root_s) else None

    def hook(event, args):
        if event == "open":
            path, _mode, flags = args
            if isinstance(flags, int) and flags & _WRITE_FLAGS and (rel := under(path)) is not None:
                into.append(["open", rel])
        elif event in _WRITE_EVENTS:
            for path in args[:2] if event == "os.rename" else args[:1]:
                if (rel := under(path)) is not None:
                    into.append([event, rel])

    sys.addaudithook(hook)

    # torch.save and safetensors write from C / Rust, which the audit hook does not see: record their paths too
    # (patched before transformers binds safetensors' save_file).
    import safetensors.torch
    import torch

    def recording(fn, event):
        def wrapper(obj, path, *args, **kwargs):
            if (rel := under(os.fspath(path) if isinstance(path, (str, os.PathLike)) else None)) is not None:
                into.append([event, rel])
            return fn(obj, path, *args, **kwargs)
        return wrapper

    torch.save = recording(torch.save, "torch.save")
    safetensors.torch.save_file = recording(safetensors.torch.save_file, "safetensors.save_file")


def dump_after_train(dumps: Path, runs: Path) -> None:
    """Wrap the trainers' ``train`` so that each process saves its student and teacher weights after it."""
    import torch
    from safetensors.torch import save_file

    from sdft.baselines.sft import SFTTrainer
    from sdft.teacher_checkpoint import untie
    from sdft.trainer import SelfDistillationTrainer

    def wrap(cls):
        original = cls.train

        def train(self, *args, **kwargs):
            out = original(self, *args, **kwargs)
            rank = self.accelerator.process_index
            run = Path(self.args.output_dir).resolve().relative_to(runs.resolve()).parts[0]
            stage = Path(self.args.output_dir).name  # checkpoints, or the stage's folder (re-invoke)
            folder = dumps / run
            folder.mkdir(parents=True, exist_ok=True)
            parts = {"student": self.accelerator.unwrap_model(self.model)}
            teacher = getattr(self, "teacher_model", None)
            if teacher is not None and teacher is not self.model:
                parts["teacher"] = self.accelerator.unwrap_model(teacher)
            for name, module in parts.items():
                state = {k: v.detach().to(torch.float32).contiguous().cpu() for k, v in module.state_dict().items()}
                save_file(untie(state), str(folder / f"{stage}-{name}-rank{rank}.safetensors"))
            return out

        cls.train = train

    wrap(SFTTrainer)
    wrap(SelfDistillationTrainer)


def main(out: str, model: str) -> None:
    out = Path(out)
    runs, dumps = out / "runs", out / "dumps"
    writes: list = []
    rank = int(os.environ.get("RANK", "0"))
    if rank != 0:
        runs.mkdir(parents=True, exist_ok=True)  # (before the audit: the main process makes it too)
    audit_writes(runs, writes)
    dump_after_train(dumps, runs)

    from sdft.train import main as train_main

    for name, method, overrides in RUNS:
        train_main(["--method", method, "--preset", "smoke", "--output-dir", str(runs / name), f"model={model}",
                    *overrides])
    (out / f"writes-rank{rank}.json").write_text(json.dumps(list(writes), indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:3])
