"""The experiment grid shared by every paper-section script: expand, run (locally or as a SLURM array), resume.

A grid is a list of :class:`RunSpec` (task x method x seed x sweep point). Each run lives in
``results/<experiment>/<task>/<method>/<run_id>/``: the training run directory of ``sdft.train`` plus the
evaluation files (``eval.json``, ``predictions*.jsonl``). A run whose ``eval.json`` exists (and is valid JSON) is
skipped unless ``force``; a run killed mid-training resumes from its last checkpoint.
"""

from __future__ import annotations

import itertools
import json
import shlex
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from eval.config import field_names as eval_field_names
from sdft.config import build_config, config_keys, load_recipe
from sdft.interrupts import RunInterrupted, catch_stop_signals
from sdft.plugins import as_list, import_plugins
from sdft.registry import get_method
from sdft.run_io import InvalidJSONFile, read_json
from sdft.validation import SourceError, SourceProblem, is_source_key, value_problem


@dataclass
class RunSpec:
    experiment: str
    task: str
    method: str
    seed: int
    preset: str
    run_dir: str
    recipe: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    sweep_point: dict[str, Any] = field(default_factory=dict)
    eval_options: dict[str, Any] = field(default_factory=dict)
    """``eval.config.EvalConfig`` values of every evaluation of the run (e.g. ``allow_code_execution``, a
    generation budget): above the preset's ``eval:`` block and the run's own values (``experiments.evaluation``)."""
    keep_evaluated_checkpoints: bool = False  # a curve's checkpoints stay once evaluated (checkpoint_curve)
    variant: str = ""  # a variable of the experiment besides task, method, seed and sweep (Table 1: teacher context)
    model_from: str = ""  # a finished run directory whose model/ is evaluated instead of training (icl_check --sft-run)

    @property
    def label(self) -> str:
        point = " ".join(f"{k}={v}" for k, v in self.sweep_point.items())
        name = f"{self.method} ({self.variant})" if self.variant else self.method
        return f"{self.task}/{name} seed {self.seed}" + (f" [{point}]" if point else "")

    def import_plugins(self) -> list[str]:
        """Import the plugins the grid's overrides name (``include``, ``sdft.plugins``): before this spec's task or
        method is looked up in a process of its own (``experiments.run_one``)."""
        return import_plugins(as_list(self.overrides.get("include"), f"grid {self.experiment}: include"))

    def config(self):
        """The RunConfig this spec trains with (the grid's overrides that are keys of this method's config)."""
        self.import_plugins()
        keys = config_keys(self.method)
        values = {**{k: v for k, v in self.overrides.items() if k in keys}, **self.sweep_point, "task": self.task,
                  "seed": self.seed, "output_dir": self.run_dir}
        return build_config(self.preset, self.method, self.recipe, values)


def _short(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def run_id(seed: int, sweep_point: dict[str, Any]) -> str:
    abbrev = {"learning_rate": "lr", "num_train_epochs": "ep", "gradient_accumulation_steps": "ga",
              "per_device_train_batch_size": "bs", "teacher_update_rate": "ema"}
    parts = [f"{abbrev.get(k, k)}{_short(v)}" for k, v in sweep_point.items()]
    return "_".join(parts + [f"seed{seed}"])


def expand(experiment: str, preset: str, tasks: list[str], methods: list[str], seeds: list[int],
           results_dir: str | Path, recipe_for: Callable[[str, str], str | None] | None = None,
           sweep: bool = False, overrides: dict[str, Any] | None = None,
           eval_options: dict[str, Any] | None = None) -> list[RunSpec]:
    """Every (seed, task, method, sweep point) of an experiment, in a stable order (seed-major).

    ``overrides`` apply to every run whose method has those keys (``divergence=reverse`` reaches the distilling
    methods, not SFT); a key that no method of the grid has is an error, and which methods skip which key is printed.
    """
    check_overrides(overrides or {}, methods)
    check_eval_options(eval_options or {})
    specs = []
    for seed, task, method in itertools.product(seeds, tasks, methods):  # seed-major: a partial grid holds whole seeds
        recipe = recipe_for(task, method) if (recipe_for and trains(method)) else None
        grid = load_recipe(recipe)[1] if (recipe and sweep) else {}
        keys = list(grid)
        for values in itertools.product(*(grid[k] for k in keys)) if keys else [()]:
            point = dict(zip(keys, values))
            run_dir = Path(results_dir) / task / method / run_id(seed, point)
            specs.append(RunSpec(experiment, task, method, seed, preset, str(run_dir), recipe,
                                 dict(overrides or {}), point, dict(eval_options or {})))
    return specs


def validate_grid(specs: list[RunSpec]) -> None:
    """Check a grid before any of its runs trains: build the config of one run per (preset, task, method, recipe,
    overrides) -- which validates its data sources (``sdft.validation``) -- and check every sweep value of a source
    key (``reinvoke_prompts``, ``data_dir``, ...). Raises ``ValueError`` naming the key, the value and the file."""
    built: set[str] = set()
    problems: list[SourceProblem] = []
    for spec in specs:
        group = json.dumps([spec.preset, spec.task, spec.method, spec.recipe, spec.overrides], sort_keys=True,
                           default=str)
        if group not in built:
            built.add(group)
            spec.config()
        for key, value in spec.sweep_point.items():
            problem = value_problem(key, value) if is_source_key(key) else None
            found = SourceProblem(key, value, f"{spec.recipe} (sweep)", problem) if problem else None
            if found and found not in problems:
                problems.append(found)
    if problems:
        raise SourceError(problems)


def trains(method: str) -> bool:
    """Whether a method trains (``base``, the untrained model, is evaluated only)."""
    return get_method(method).train is not None


def comma_subset(text: str, allowed, option: str) -> list[str]:
    """The names of a comma-separated option value, each one of ``allowed``; exits naming ``option`` otherwise."""
    chosen = [name for name in text.split(",") if name]
    if not chosen or set(chosen) - set(allowed):
        raise SystemExit(f"error: {option} {text!r}: expected a comma-separated subset of {','.join(allowed)}")
    return chosen


def as_variant(spec: RunSpec, run_id: str, overrides: dict[str, Any], variant: str) -> RunSpec:
    """A copy of ``spec`` as one variant of its experiment (a teacher kind, an estimator row, a teacher context): its
    run folder ``run_id`` beside the spec's, ``overrides`` on top of the spec's, ``variant`` in its label."""
    return replace(spec, run_dir=str(Path(spec.run_dir).parent / run_id), overrides={**spec.overrides, **overrides},
                   sweep_point=dict(spec.sweep_point), eval_options=dict(spec.eval_options), variant=variant)


def check_eval_options(options: dict[str, Any]) -> None:
    """Every key a field of ``eval.config.EvalConfig`` (a ``ValueError`` naming the others)."""
    unknown = sorted(set(options) - eval_field_names())
    if unknown:
        raise ValueError(f"unknown evaluation options {unknown}; the fields of eval.config.EvalConfig: "
                         f"{sorted(eval_field_names())}")


def check_overrides(overrides: dict[str, Any], methods: list[str]) -> None:
    """Raise for keys no method has; print, per key, the methods it does not apply to."""
    keys = {m: config_keys(m) for m in methods}
    for key in overrides:
        skipped = [m for m in methods if key not in keys[m]]
        if len(skipped) == len(methods):
            raise SystemExit(f"error: {key!r} is a config key of none of the methods {methods}; see "
                             "`python -m sdft.train --method M --help-config`")
        if skipped:
            print(f"[grid] {key}={overrides[key]!r} applies to {', '.join(m for m in methods if m not in skipped)}; "
                  f"not a key of {', '.join(skipped)}", flush=True)


def grid_summary(specs: list[RunSpec]) -> str:
    counts: dict[str, int] = {}
    for s in specs:
        counts[s.method] = counts.get(s.method, 0) + 1
    per_method = ", ".join(f"{m}: {n}" for m, n in counts.items())
    return f"{len(specs)} runs ({per_method})"


def is_done(spec: RunSpec) -> bool:
    """Whether the run's ``eval.json`` exists and is valid JSON. An eval.json (or ``val/eval.json``) that is not is
    reported and moved aside to ``<name>.invalid``, so that the run is evaluated again."""
    run_dir = Path(spec.run_dir)
    if not (run_dir / "eval.json").exists():
        return False
    done = True
    for path in (run_dir / "eval.json", run_dir / "val" / "eval.json"):
        try:
            if path.exists():
                read_json(path)
        except InvalidJSONFile as err:
            aside = path.with_name(path.name + ".invalid")
            path.replace(aside)
            print(f"[grid] {spec.label}: {path} is not valid JSON ({err.reason}); moved to {aside.name}, evaluating "
                  "the run again", flush=True)
            done = False
    return done


def progress_line(i: int, n: int, spec: RunSpec, status: str, started: float) -> str:
    return f"[{i + 1}/{n}] {spec.label}: {status} ({time.time() - started:.0f}s elapsed)"


_SAY_LOCK = threading.Lock()


def say(line: str) -> None:
    """Print one whole line to stdout, from any thread. (``print`` writes the text and its newline as two writes, so
    two threads printing at once could join two lines and leave an empty one.)"""
    with _SAY_LOCK:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def run_local(specs: list[RunSpec], execute: Callable[[RunSpec], None], force: bool = False) -> None:
    """Run every spec in this process, one progress line each; completed runs are skipped."""
    t0 = time.time()
    for i, spec in enumerate(specs):
        if is_done(spec) and not force:
            print(progress_line(i, len(specs), spec, "done before, skipped", t0), flush=True)
            continue
        print(progress_line(i, len(specs), spec, "running", t0), flush=True)
        t = time.time()
        execute(spec)
        print(progress_line(i, len(specs), spec, f"finished in {time.time() - t:.0f}s", t0), flush=True)


def run_log(spec: RunSpec) -> Path:
    """Where :func:`run_parallel` writes a run's output: ``<method>/<run_id>.log`` beside its run directory."""
    return Path(spec.run_dir).with_name(Path(spec.run_dir).name + ".log")


def expected_cost(spec: RunSpec) -> float:
    """A run's relative cost, to order the local launcher's queue longest first: its optimizer steps (``max_steps``,
    or ``n_train`` records x epochs / the batch), twice for a method that generates completions while training
    (``max_completion_length`` in its config: SDFT, re-invoke), 0 for one that does not train (Base). A guess for
    scheduling only: each run is its own process with the same thread count in any order, so no result changes;
    what it saves is the end of a grid where the longest run started last and runs alone on one core."""
    if get_method(spec.method).train is None:
        return 0.0
    cfg = spec.config()
    if cfg.max_steps and cfg.max_steps > 0:
        steps = float(cfg.max_steps)
    else:
        per_step = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps
        steps = (cfg.n_train or per_step) * cfg.num_train_epochs / per_step
    return steps * (2.0 if getattr(cfg, "max_completion_length", None) else 1.0)


def run_parallel(specs: list[RunSpec], grid_path: str | Path, jobs: int, force: bool = False,
                 cpus: int | None = None) -> None:
    """Run the specs ``jobs`` at a time, each in its own ``python -m experiments.run_one`` process, forked from a
    server that imported the libraries once (:mod:`experiments.processes`; ``SDFT_FRESH_PROCESSES=1``: a fresh
    interpreter per run). Runs start longest first (:func:`expected_cost`; grid order among equals).

    Each process gets ``cpus // jobs`` threads (at least 1) and writes its output to :func:`run_log` (beside the run
    directory: ``sdft.train`` refuses a run directory holding files it did not create). A failed run is reported with its log and the others go on; the call raises at the end if any
    failed. SIGTERM or Ctrl-C is passed on to the running runs, which finish their step and checkpoint
    (``sdft.interrupts``); no further run starts, and ``RunInterrupted`` is raised once they have stopped. Thread counts change floating-point reduction order: results match ``jobs=1`` up to that (README).
    """
    import os
    import signal
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    from experiments.processes import interrupted as stopped_by_signal
    from experiments.processes import start

    write_grid(specs, grid_path)
    threads = max(1, (cpus or os.cpu_count() or 1) // jobs)
    env = dict(os.environ)
    t0 = time.time()
    todo = []
    for i, spec in enumerate(specs):
        if is_done(spec) and not force:
            say(progress_line(i, len(specs), spec, "done before, skipped", t0))
        else:
            todo.append(i)
    todo.sort(key=lambda i: -expected_cost(specs[i]))  # stable: grid order among equal costs

    children: dict[int, Any] = {}

    def launch(i: int) -> tuple[int, int | None, float]:
        if stop.requested:  # stopping: runs not started are left for the rerun
            return i, None, 0.0
        log = run_log(specs[i])
        log.parent.mkdir(parents=True, exist_ok=True)
        say(progress_line(i, len(specs), specs[i], f"running ({threads} thread(s), log {log})", t0))
        started = time.time()
        argv = ["--grid", str(grid_path), "--index", str(i)] + (["--force"] if force else [])
        # its own session: a Ctrl-C at the terminal reaches the runs once, passed on by this process
        child = start("experiments.run_one", argv, log, env, threads)
        children[i] = child
        code = child.wait()
        children.pop(i, None)
        return i, code, time.time() - started

    failed, interrupted = [], []
    with catch_stop_signals() as stop, ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(launch, i) for i in todo]
        forwarded = False
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
            if stop.requested and not forwarded:  # each running run finishes its step and checkpoints
                forwarded = True
                for child in list(children.values()):
                    child.send_signal(stop.signum)
            for future in done:
                i, code, took = future.result()
                if code is None:
                    continue
                if stopped_by_signal(code):
                    status = f"INTERRUPTED (checkpointed; rerun the command to resume; {run_log(specs[i])})"
                    interrupted.append(specs[i].label)
                else:
                    status = f"finished in {took:.0f}s" if code == 0 else \
                        f"FAILED (exit {code}; see {run_log(specs[i])})"
                say(progress_line(i, len(specs), specs[i], status, t0))
                if code != 0 and not stopped_by_signal(code):
                    failed.append(f"{specs[i].label} ({run_log(specs[i])})")
    if stop.requested or interrupted:
        print(f"[grid] interrupted by {stop.signal_name or 'a signal'}: {len(interrupted)} run(s) checkpointed, "
              "the runs not started are left; rerun the same command to go on", flush=True)
        raise RunInterrupted(stop.signum or signal.SIGTERM, None, grid_path)
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(todo)} runs failed: {', '.join(failed)}")


def write_grid(specs: list[RunSpec], path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps([asdict(s) for s in specs], indent=1))


def read_grid(path: str | Path) -> list[RunSpec]:
    return [RunSpec(**row) for row in json.loads(Path(path).read_text())]


SBATCH_TEMPLATE = """#!/bin/bash
# {experiment}: {summary}. One array task = one run (train + evaluate) on one GPU, as in the paper.
# Edit the resources for your cluster, then: sbatch {script_path}
#SBATCH --job-name=sdft-{experiment}
#SBATCH --array=0-{last}%{parallel}
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=16
#SBATCH --mem=128G
#SBATCH --time={time_limit}
#SBATCH --output={log_dir}/%A_%a.out

#SBATCH --signal=B:TERM@300
# SIGTERM 5 minutes before the time limit (and on scancel / preemption): the run finishes its step, writes a
# checkpoint and exits (sdft.interrupts); resubmitting the array task resumes it (sbatch --array=<I> this script).

set -euo pipefail
cd {repo}
# Compute nodes without internet: point HF_HOME at a pre-filled cache and pass --data-dir mirrors (data_prep/README.md).
# exec: python is the batch shell's process, so the signal above reaches it
exec python -m experiments.run_one --grid {grid_path} --index "$SLURM_ARRAY_TASK_ID"
# When the array is done, collect the tables and figures (safe to rerun at any time):
#   {aggregate}
"""


def write_sbatch(specs: list[RunSpec], experiment: str, results_dir: str | Path, aggregate_cmd: str,
                 parallel: int = 16, time_limit: str = "24:00:00") -> tuple[Path, str]:
    """Write the grid file and an sbatch array script a user can read and edit; return (path, text)."""
    results_dir = Path(results_dir)
    grid_path = results_dir / "grid.json"
    write_grid(specs, grid_path)
    script_path = results_dir / f"{experiment}.sbatch"
    text = SBATCH_TEMPLATE.format(
        experiment=experiment, summary=grid_summary(specs), script_path=script_path, last=len(specs) - 1,
        parallel=parallel, time_limit=time_limit, log_dir=results_dir / "slurm_logs",
        repo=Path(__file__).resolve().parents[1], grid_path=grid_path, aggregate=aggregate_cmd,
    )
    script_path.write_text(text)
    return script_path, text


def submit_sbatch(script_path: Path) -> None:
    (script_path.parent / "slurm_logs").mkdir(parents=True, exist_ok=True)
    out = subprocess.run(["sbatch", str(script_path)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"sbatch failed: {out.stderr.strip()}")
    print(out.stdout.strip())


def shell_join(argv: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


def python_module_cmd(module: str, args: list[str]) -> str:
    return shell_join(["python", "-m", module, *args])
