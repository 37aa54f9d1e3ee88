"""Training runs under DeepSpeed ZeRO-2 / ZeRO-3 (or plain DDP), for tests/sdft/test_deepspeed.py (not a test module itself).

    DS_ACCELERATOR=cpu accelerate launch --config_file CPU_CONFIG tests/sdft/ds_worker.py OUT MODEL [RUNS [KEY=VALUE ...]]

CPU_CONFIG is one of experiments/accelerate/zero{2,3}.yaml with 2 CPU processes and no mixed precision (the test's
``cpu_launch_config``); ``--multi_gpu --num_processes 2`` instead runs the same runs as plain DDP, the layout the
test compares with. RUNS (comma-separated names) picks some of the runs, and KEY=VALUE overrides are added to each
(experiments/results/deepspeed_cpu/ times ``sdft`` with SmolLM2 so). Every run goes through ``sdft.train.main`` into ``OUT/runs/<name>`` (the ``RUNS`` below);
``sdft_resumed`` is stopped by a SIGTERM each process sends itself at the end of step 1 (so training stops after
step 2, with its checkpoint, as on a scheduler's signal) and then run again, which resumes it -- under DeepSpeed
only: resuming a DDP run on the CPU fails in transformers' optimizer loading (``torch.load(map_location=args.device)``
with the device ``cpu:0``: "don't know how to restore data location of torch.storage.UntypedStorage (tagged with
cpu:0)"), a limit of the CPU test bed, not of DeepSpeed. Besides what the runs write themselves, each process
leaves:

  * ``OUT/dumps/<name>/<part>-rank<r>.safetensors``: the student's and (SDFT) the separate teacher's weights at the
    end of each ``train()``, gathered with ``accelerator.get_state_dict`` (under ZeRO-3 the whole weights exist
    on the main process only, so only rank 0 writes them there);
  * ``OUT/report-rank<r>.json``: per run, the seconds of every teacher update (TRL's ``SyncTeacherModelCallback``
    or ``sdft.ema.FusedEMATeacherCallback``), the seconds of every optimizer step (``on_step_begin`` to
    ``on_step_end``, the update not included), the process's peak resident memory after the run, and what the
    SDFT teacher was (its type, whether its parameters are ZeRO-3 partitions and how many of its elements this
    process holds, the EMA callbacks);
  * ``OUT/writes-rank<r>.json``: every file-system write under ``OUT/runs`` (``tests/mp_worker.audit_writes``).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mp_worker import GREEDY, ONE_STEP, audit_writes  # noqa: E402

# 4 optimizer steps (AdamW, sampled rollouts), checkpoints at 2 and 4 kept; an EMA teacher that moves
FOUR = ["use_cpu=true", "max_steps=4", "save_steps=2", "keep_checkpoints=true", "learning_rate=0.01",
        "teacher_update_rate=0.3"]
RUNS = [
    ("eq_sft", "sft", ONE_STEP),
    ("eq_sdft", "sdft", ONE_STEP + GREEDY),
    ("sdft", "sdft", FOUR),
    ("sdft_resumed", "sdft", FOUR),
]
INTERRUPTED = "sdft_resumed"


def describe_teacher(trainer) -> dict:
    """The SDFT trainer's teacher: its type, whether its parameters are ZeRO-3 partitions, the EMA callbacks."""
    from trl.experimental.sdft.teacher_sync import SyncTeacherModelCallback

    from sdft.ema import FusedEMATeacherCallback

    teacher = trainer.teacher_model
    module = trainer.accelerator.unwrap_model(teacher)
    ema = [{"callback": type(cb).__name__, "sharded": getattr(cb, "sharded", None)}
           for cb in trainer.callback_handler.callbacks
           if isinstance(cb, (SyncTeacherModelCallback, FusedEMATeacherCallback))]
    return {"type": type(teacher).__name__, "is_student": teacher is trainer.model,
            "partitioned": all(hasattr(p, "ds_id") for p in module.parameters()),
            "local_elements": sum(p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel()
                                  for p in module.parameters()),
            "elements": sum(getattr(p, "ds_numel", p.numel()) for p in module.parameters()), "ema": ema}


def dump_after_train(dumps: Path, runs: Path, report: dict) -> None:
    """Wrap the trainers' ``train`` so that each process saves the whole student and teacher weights it can see."""
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
            folder = dumps / run
            folder.mkdir(parents=True, exist_ok=True)
            parts = {"student": self.model_wrapped}
            teacher = getattr(self, "teacher_model", None)
            if teacher is not None:
                report.setdefault(run, {})["teacher"] = describe_teacher(self)
            if teacher is not None and teacher is not self.model:
                parts["teacher"] = teacher
            for name, module in parts.items():
                state = self.accelerator.get_state_dict(module)  # every process takes part (ZeRO-3 gathers)
                if state:
                    state = {k: v.detach().to(torch.float32).contiguous().cpu() for k, v in state.items()}
                    save_file(untie(state), str(folder / f"{name}-rank{rank}.safetensors"))
            return out

        cls.train = train

    wrap(SFTTrainer)
    wrap(SelfDistillationTrainer)


def time_callbacks(timings: dict, current: list) -> None:
    """Record the seconds of each teacher update and of each optimizer step into ``timings[current[0]]``."""
    from transformers import TrainerCallback
    from trl.experimental.sdft.teacher_sync import SyncTeacherModelCallback

    from sdft import training
    from sdft.ema import FusedEMATeacherCallback

    def wrap(cls):
        original = cls.on_step_end

        def on_step_end(self, *args, **kwargs):
            t0 = time.perf_counter()
            out = original(self, *args, **kwargs)
            timings.setdefault(current[0], {}).setdefault("teacher_update_s", []).append(time.perf_counter() - t0)
            return out

        cls.on_step_end = on_step_end

    wrap(SyncTeacherModelCallback)
    wrap(FusedEMATeacherCallback)

    class StepClock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            timings.setdefault(current[0], {}).setdefault("step_s", []).append(time.perf_counter() - self.t0)

    class StopAfterStepOne(TrainerCallback):
        """SIGTERM to this process at the end of step 1 of the first attempt of the interrupted run."""

        def on_step_end(self, args, state, control, **kwargs):
            if current[0] == INTERRUPTED and current[1] == 0 and state.global_step == 1:
                os.kill(os.getpid(), signal.SIGTERM)

    original = training.run_callbacks
    training.run_callbacks = lambda *a, **k: [StepClock(), *original(*a, **k), StopAfterStepOne()]


def main(out: str, model: str, runs_wanted: str = "", *extra: str) -> None:
    out = Path(out)
    runs, dumps = out / "runs", out / "dumps"
    writes: list = []
    rank = int(os.environ.get("RANK", "0"))
    if rank != 0:
        runs.mkdir(parents=True, exist_ok=True)  # (before the audit: the main process makes it too)
    audit_writes(runs, writes)
    timings: dict = {}
    dump_after_train(dumps, runs, timings)
    current = [None, 0]  # the run, and its attempt
    time_callbacks(timings, current)

    from sdft.train import main as train_main

    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true"
    for name, method, overrides in RUNS:
        if (name == INTERRUPTED and not deepspeed) or (runs_wanted and name not in runs_wanted.split(",")):
            continue
        args = ["--method", method, "--preset", "smoke", "--output-dir", str(runs / name), f"model={model}",
                *overrides, *extra]
        current[:] = [name, 0]
        try:
            train_main(args)
        except SystemExit as stop:  # the interrupted run: exit status 128 + SIGTERM, then resumed
            if name != INTERRUPTED or stop.code != 128 + signal.SIGTERM:
                raise
            timings[name]["interrupted_exit"] = stop.code
            current[1] = 1
            train_main(args)
        timings.setdefault(name, {})["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    (out / f"writes-rank{rank}.json").write_text(json.dumps(list(writes), indent=1))
    (out / f"report-rank{rank}.json").write_text(json.dumps(timings, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:])
