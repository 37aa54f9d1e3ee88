"""Train one method on one task and write its run directory.

    python -m sdft.train --method sdft --task embedded_tool --preset mini --output-dir runs/x [key=value ...]
    python -m sdft.train --config experiments/recipes/qwen2.5-7b-instruct/sdft_science.yaml --preset paper \
        --output-dir runs/sdft_science
    python -m sdft.train --method sft --help-config      # every key of that method, with its default and meaning
    python -m sdft.train --include examples/my_plugin.py --method mine --task mine_task --output-dir runs/mine

``--include MODULE_OR_PATH`` (repeatable; also the config key ``include`` and ``$SDFT_INCLUDE``) imports a module
of your own that registers a task or method (``sdft.plugins``), before any name is looked up; a run directory that
recorded plugins has them imported again when a run is made into it (unless ``--force``).

Any field of the method's configs is a key, as ``key=value`` (YAML value) or ``--key value`` (see
``sdft.config``). The run directory is required: ``--output-dir DIR`` (or ``output_dir`` in a recipe). A run whose
directory holds checkpoints resumes from the newest complete one; a completed run is skipped. Either only with the
config that produced the directory (``sdft.run_dir``: else the run is refused, naming the changed keys), and only
when no other run holds the directory. ``--force`` deletes the directory first, when ``sdft.train`` created it.

Several processes (data parallel, one replica per process; tests/sdft/test_multiprocess.py):

    accelerate launch --multi_gpu --num_processes 2 -m sdft.train ...   # GPUs; on a CPU-only machine: gloo, CPU
    torchrun --nproc_per_node 2 -m sdft.train ...                       # the same, without accelerate's launcher

Every process trains; only the main one writes the run directory (lock, config, splits, manifest, metrics,
checkpoint markers, ``model/``), and it loads the data and builds an embedded model first, the others after it.
``accelerate launch --cpu --num_processes N`` starts ONE process (accelerate's CPU launcher runs N only through
mpirun, ``--mpirun_hostfile``); ``sdft.train`` says so when it sees that launch.

DeepSpeed ZeRO-2 / ZeRO-3 (``pip install -e ".[deepspeed]"``; tests/sdft/test_deepspeed.py runs both on 2 CPU processes):

    accelerate launch --config_file experiments/accelerate/zero3.yaml -m sdft.train ...   # or zero2.yaml
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

from data_prep.schema import SplitReport
from data_prep.task import load_records
from sdft import plugins
from sdft.checkpoints import resume_point
from sdft.config import RunConfig, build_config, describe_fields
from sdft.config_layers import PRESETS, parse_overrides
from sdft.errors import ConfigError, reported_as_one_line
from sdft.interrupts import RunInterrupted, catch_stop_signals
from sdft.plugins import import_plugins
from sdft.run_dir import CREATED_BY, open_run_dir, run_is_complete
from sdft.run_io import RunManifest
from sdft.timing import RUN_CLOCK

# the options read before the method's parser is built (everything else goes to it)
_PRE_OPTIONS = ("method", "task", "model", "preset", "output_dir", "config", "seed")


def load_train_records(cfg: RunConfig, report=None) -> list[dict]:
    return load_records(cfg.task_spec, "train", seed=cfg.seed, n=cfg.n_train, data_dir=cfg.data_dir,
                        skip_invalid=cfg.skip_invalid, report=report)


def run_training(cfg: RunConfig, force: bool = False) -> Path:
    """Train ``cfg.method`` and write the run directory (on the main process only); return its path.

    The directory is taken with ``sdft.run_dir.open_run_dir`` (``RunDirRefused`` when it is foreign, in use or of
    another config; a missing local model is a ``ModelNotFoundError``, both before anything is written). A
    completed run is skipped; otherwise training resumes from the newest complete checkpoint, if any.
    """
    from sdft.models import is_embedded, resolve_model_path
    from sdft.run_io import apply_thread_setting

    apply_thread_setting()  # before the manifest, which records the thread count
    state = process_state(cfg)
    main_process = state.is_main_process
    method = cfg.method_spec
    if method.train is None:
        raise ValueError(f"method {cfg.method!r} is evaluated only; it has nothing to train")
    if main_process:
        for line in launch_warnings(state):
            print(f"[sdft.train] warning: {line}", file=sys.stderr, flush=True)
    if is_embedded(cfg.model):
        with state.main_process_first():  # built into the cache once, by the main process; the others read it
            resolve_model_path(cfg.model)
    else:
        resolve_model_path(cfg.model)  # a path that names no model directory fails here, not in the hub client
    run_dir = Path(cfg.output_dir)
    claim = open_run_dir(run_dir, cfg.to_dict(), force, cfg.field_defaults()) if main_process else contextlib.nullcontext()
    with claim as fingerprint:
        state.wait_for_everyone()  # the other processes read the directory once the main one has taken it
        if run_is_complete(run_dir):
            if main_process:
                print(f"[sdft.train] {run_dir} is complete; skipping (use --force to retrain)", flush=True)
            return run_dir
        return _train(cfg, method, run_dir, fingerprint, main_process, state)


def process_state(cfg: RunConfig):
    """This process's place among the training processes, as the trainer will see it.

    The trainer config sets up the distributed state itself (``TrainingArguments``' device set-up: on a machine
    without CUDA ``use_cpu`` is true, and under ``torchrun`` / ``accelerate launch --multi_gpu`` that is a gloo
    process group on the CPU). A bare ``PartialState()`` made before it would see one process there.
    """
    from accelerate import PartialState

    _ = cfg.training.device  # TrainingArguments._setup_devices: the PartialState the trainer uses
    return PartialState()


def launch_warnings(state, environ=None) -> list[str]:
    """What the launch asked for and this run does not do (printed by the main process)."""
    env = os.environ if environ is None else environ
    out = []
    # accelerate's simple launcher (``--cpu``) exports MASTER_ADDR when asked for more than one process, but starts
    # one process without mpirun; torchrun / mpirun export WORLD_SIZE / PMI_SIZE.
    if (env.get("ACCELERATE_USE_CPU", "").lower() == "true" and "MASTER_ADDR" in env and state.num_processes == 1
            and not any(k in env for k in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "LOCAL_RANK"))):
        out.append("`accelerate launch --cpu --num_processes N` started ONE process (accelerate runs N CPU processes "
                   "only through mpirun, --mpirun_hostfile): this run trains on 1 process with the per-device batch. "
                   "For N processes on CPU: `accelerate launch --multi_gpu --num_processes N` on a machine without "
                   "CUDA, or `torchrun --nproc_per_node N`.")
    if env.get("ACCELERATE_USE_FSDP", "").lower() == "true" and state.distributed_type.value == "MULTI_CPU":
        out.append("FSDP was asked for, but accelerate enables FSDP on accelerators only: on the CPU these processes "
                   "train as plain data parallel (DDP, every process holds the whole model).")
    return out


def distributed_kind(state, environ=None) -> str:
    """How the processes train, for the run's banner: accelerate's distributed type, or under DeepSpeed its ZeRO
    stage (the process state made before the trainer's accelerator still says MULTI_CPU / MULTI_GPU there)."""
    env = os.environ if environ is None else environ
    if env.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        return f"DeepSpeed ZeRO-{env.get('ACCELERATE_DEEPSPEED_ZERO_STAGE', '?')}"
    return state.distributed_type.value


def _train(cfg: RunConfig, method, run_dir: Path, fingerprint: str | None, main_process: bool, state) -> Path:
    data_report = SplitReport()  # skipped / de-duplicated counts, for splits.json and the manifest
    with state.main_process_first():  # downloads and caches are written once, by the main process
        records = load_train_records(cfg, data_report)
    resume = resume_point(run_dir / "checkpoints", report=main_process)
    manifest = None
    if main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg.save(run_dir / "config.yaml")
        (run_dir / "splits.json").write_text(
            json.dumps({"task": cfg.task, "train": [r["id"] for r in records], "data": data_report.to_dict()}, indent=1))
        manifest = RunManifest(run_dir, cfg.to_dict(), extra={
            "created_by": CREATED_BY, "config_fingerprint": fingerprint,
            "divergence": getattr(cfg, "divergence", None) if method.distils else None,
            "teacher_template": getattr(cfg, "teacher_template", None),
            "n_train_records": len(records), "resumed_from": resume, "data": data_report.to_dict(),
        })
    RUN_CLOCK.start(at=manifest.t0 if manifest is not None else None)  # the run's start-up (sdft.timing)
    if main_process:
        procs = f", {state.num_processes} processes ({distributed_kind(state)})" if state.num_processes > 1 else ""
        print(f"[sdft.train] {cfg.method} on {cfg.task} ({len(records)} records), model {cfg.model}, "
              f"preset {cfg.preset}{procs} -> {run_dir.resolve()}" + (f" (resuming from {resume})" if resume else ""),
              flush=True)
    t0 = time.time()
    with catch_stop_signals() as stop:  # SIGTERM / Ctrl-C: finish the step, checkpoint it (sdft.interrupts)
        try:
            trainer, info = method.train(cfg, records, run_dir, resume_from_checkpoint=resume)
        except KeyboardInterrupt:  # Ctrl-C twice: stopped at once, wherever it was
            if manifest is not None:
                manifest.finish(status="interrupted", signal="SIGINT", error="KeyboardInterrupt (stopped at once)",
                                startup=RUN_CLOCK.startup())
            raise
        except BaseException as err:
            if manifest is not None:
                manifest.finish(status="failed", error=f"{type(err).__name__}: {err}", startup=RUN_CLOCK.startup())
            raise
        if stop.stopped:
            if manifest is not None:
                manifest.finish(status="interrupted", signal=stop.signal_name, stopped_at_step=stop.stopped_at,
                                train_seconds=round(time.time() - t0, 2), startup=RUN_CLOCK.startup())
            raise RunInterrupted(stop.signum, stop.stopped_at, run_dir)
        # a signal from here on: the model is written and the run completed first (seconds)
        if cfg.save_model:
            trainer.save_model(str(run_dir / "model"))  # gathers ZeRO-3 / FSDP shards; writes on the main process
            if cfg.merge and main_process:  # the adapter merged into its base (sdft.adapters)
                _write_merged(cfg, run_dir)
        if manifest is not None:
            from sdft.adapters import saved_model_entry

            saved = saved_model_entry(cfg, merged=cfg.merge) if cfg.save_model else None
            manifest.finish(status="completed", train_seconds=round(time.time() - t0, 2), saved_model=saved,
                            startup=RUN_CLOCK.startup(), **(info or {}))
            if cfg.save_model and not cfg.keep_checkpoints and (run_dir / "checkpoints").is_dir():
                shutil.rmtree(run_dir / "checkpoints")  # resume points are not needed once model/ is written
    if main_process:
        print(f"[sdft.train] done in {time.time() - t0:.1f}s: {run_dir}", flush=True)
    return run_dir


USAGE = """\
usage: python -m sdft.train --output-dir DIR [--method M] [--task T] [--preset smoke|mini|paper]
                            [--config RECIPE.yaml] [--model NAME] [--seed N] [--force] [--debug]
                            [key=value ...] [--key value ...]

Train one method on one task and write its run directory (the module's docstring: `pydoc sdft.train`).

options:
  --output-dir DIR     the run directory (required; a recipe's output_dir also counts). A directory with
                       checkpoints resumes; a completed one is skipped.
  --method M           sdft (default), sft, dft, reinvoke, cpt, offline_distill, sft_from_teacher, or a method
                       of your own, registered by its module
  --task T             a registered task (default: the preset's)
  --preset P           smoke (the default here: a tiny random model, seconds), mini (SmolLM2-135M on the CPU,
                       minutes; the section scripts' default) or paper (the paper's settings, GPUs)
  --config FILE        a recipe (YAML of config keys), e.g. experiments/recipes/qwen2.5-7b-instruct/*.yaml
  --model NAME         embedded:NAME, a local folder or a hub id (default: the preset's)
  --seed N             the run's seed
  --force              delete the run directory first (only one sdft.train created)
  --debug              print the traceback of a user error too (or set SDFT_DEBUG=1)
  key=value, --key v   any config key of the method (YAML values)
  --help-config        every config key of the method with its meaning and the value it resolves to for the
                       given --preset / --task / --config, and the layer each value came from
"""


def _write_merged(cfg: RunConfig, run_dir: Path) -> None:
    """``<run_dir>/model_merged``: the run's base with its trained adapter (``model/``) merged in, in the dtype the
    run loaded its model in (a QLoRA base unquantized), on the CPU."""
    import torch

    from sdft.adapters import write_merged
    from sdft.models import resolve_model_path

    dtype = torch.bfloat16 if (torch.cuda.is_available() and cfg.bf16) else torch.float32
    out = write_merged(run_dir / "model", run_dir / "model_merged", dtype, base_name=resolve_model_path(cfg.model))
    print(f"[sdft.train] merged the adapter into its base: {out}", flush=True)


def split_argv(argv: list[str]) -> tuple[argparse.Namespace, dict, list[str]]:
    """(the options read first, the ``key=value`` overrides, the ``--key value`` tokens for the method's parser)."""
    pre = argparse.ArgumentParser(add_help=False)
    for name in _PRE_OPTIONS:
        pre.add_argument(f"--{name}", f"--{name.replace('_', '-')}", dest=name)
    pre.add_argument("--include", action="append", default=None, metavar="MODULE_OR_PATH")
    pre.add_argument("--force", action="store_true")
    pre.add_argument("--debug", action="store_true")
    pre.add_argument("--help-config", "--help_config", dest="help_config", action="store_true")
    pre.add_argument("-h", "--help", action="store_true")
    args, rest = pre.parse_known_args(argv)
    pairs = [a for a in rest if "=" in a and not a.startswith("-")]
    tokens = [a for a in rest if a not in pairs]
    return args, parse_overrides(pairs), tokens


def include_specs(args: argparse.Namespace, overrides: dict) -> list[str]:
    """The plugins a command line names (``include=`` and ``--include``) and those its existing run directory
    recorded (``--output-dir``; not with ``--force``, which deletes it), normalized, each once."""
    run_dir = None if args.force else (args.output_dir or overrides.get("output_dir"))
    return plugins.merge(plugins.as_list(overrides.get("include"), "command line: include"), args.include or [],
                         plugins.recorded(run_dir))


def main(argv: list[str] | None = None) -> Path | None:
    argv = sys.argv[1:] if argv is None else list(argv)
    with reported_as_one_line(argv):  # a user's mistake is one line: error: <file or key>: <what> (sdft.errors)
        return _main(argv)


def _main(argv: list[str]) -> Path | None:
    args, overrides, tokens = split_argv(argv)
    if args.help:
        print(USAGE)
        return None
    if args.preset is not None and args.preset not in PRESETS:
        raise ConfigError(f"--preset must be one of {PRESETS}, got {args.preset!r}")
    include = include_specs(args, overrides)  # before any method or task name is looked up
    import_plugins(include)
    if include:
        overrides["include"] = include
    method = args.method or overrides.get("method")
    for key in ("task", "model", "seed", "output_dir"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    cfg = build_config(args.preset, method, args.config, overrides, argv=tokens,
                       require_output_dir=not args.help_config)
    if args.help_config:
        print(describe_fields(cfg.method, cfg))
        return None
    return run_training(cfg, force=args.force)  # RunInterrupted: one line, exit 128 + signal (sdft.errors)


if __name__ == "__main__":
    main(sys.argv[1:])
