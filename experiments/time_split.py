"""Where a section's time went: training, test-split evaluation and the prior suite, per method and per seed; with
``--profile``, each of those split into its parts.

    python -m experiments.time_split RESULTS_DIR [--output RESULTS_DIR/time_split.md]
    python -m experiments.time_split RESULTS_DIR --profile [--output RESULTS_DIR/time_profile.md]

Reads only the run directories' files: ``manifest.json`` (``wall_clock_s``: training, with its start and end
times) and ``eval.json`` (``evaluations.<variant>.wall_s``: the task's test split; ``prior.<suite>.wall_s``: the
prior-capability suite; a suite reused from the base model's cache counts 0). A run without a manifest (Base,
evaluated only) has no training time. Per seed, *sum* is the runs' seconds added up (what one process would take
running them one after another); *span* is from the first run's start to the last ``eval.json`` written (the
wall-clock of the seed, whatever ran beside it). Both tables and a CSV of the runs are written.

The profile (``--profile``: ``time_profile.md``, and ``time_profile.csv`` with one row per run) is a table of parts
by method, seconds per run, mean over the method's runs that recorded the part (``–``: none did; runs written before
a part was recorded lack it, which is never read as 0):

  * process start-up: ``manifest.json`` ``startup.process_to_run_s``, the process's creation to the run's start
    (interpreter, imports, config, data; recorded for the first run of a process only);
  * training: ``wall_clock_s``, split into
      - set-up to the first step, ``startup.run_to_first_step_s`` (model loading, the trainer's set-up, the
        teacher's copy, a resumed checkpoint), of which model loading, ``startup.model_load_s`` (every load of the
        run: re-invoke's second stage and offline distillation's teacher too; not added into the sums);
      - each step phase, the sum over the run's training lines of ``metrics.jsonl`` of its ``time/<phase>_s``
        (``sdft.timing``: SDFT's rollout, teacher, student, backward, optimizer, ema, checkpoint; the SFT family's
        forward_backward, optimizer, checkpoint; re-invoke has both stages'); a run any of whose training lines has
        no ``time/`` key has none;
      - validation probes, the sum of ``wall_s`` of ``selection/step<S>.json`` (the checkpoint protocol; 0 without
        it);
      - other, training less the parts above: the data loader, the learning-rate schedule, logging, saving the
        final model, Trainer bookkeeping;
  * test split, as above;
  * prior suite, and each benchmark's ``prior.<suite>.benchmarks.<name>.wall_s`` (one lm-eval call per benchmark,
    ``eval.prior``; 0 for a suite reused from the cache, as the suite);
  * total: process start-up (where recorded), training, test split and prior suite.

A resumed run's manifest counts its last process only, while its ``metrics.jsonl`` keeps the earlier process's
steps: its phases can then exceed its training time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
from pathlib import Path

import pandas as pd

from sdft.run_io import read_metrics, read_step_files
from sdft.timing import PREFIX, SUFFIX

NAN = float("nan")
# the step phases in the order the profile lists them (sdft.timing); a phase not named here comes after them
PHASE_ORDER = ("rollout", "teacher", "student", "forward_backward", "backward", "optimizer", "ema", "checkpoint")


def _seconds(value) -> float:
    return float(value) if isinstance(value, (int, float)) else 0.0


def run_times(run_dir: Path) -> dict:
    """The seconds of one run: ``train``, ``task_eval``, ``prior`` and ``total`` (their sum), with its start (the
    manifest's, if any) and end (``eval.json``'s modification time) as POSIX times."""
    result = json.loads((run_dir / "eval.json").read_text())
    manifest_path = run_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    train = _seconds(manifest.get("wall_clock_s"))
    task_eval = sum(_seconds(ev.get("wall_s")) for ev in result.get("evaluations", {}).values())
    prior = sum(0.0 if p.get("reused_from_cache") else _seconds(p.get("wall_s"))
                for p in result.get("prior", {}).values())
    started = manifest.get("started")
    start = dt.datetime.strptime(started, "%Y-%m-%dT%H:%M:%S%z").timestamp() if started else None
    return {"train": train, "task_eval": task_eval, "prior": prior, "total": train + task_eval + prior,
            "start": start, "end": (run_dir / "eval.json").stat().st_mtime}


def collect(results_dir: str | Path) -> pd.DataFrame:
    """One row per run directory (``<task>/<method>/<run_id>/eval.json``) with its times and seed."""
    rows = []
    for eval_path in sorted(Path(results_dir).glob("*/*/*/eval.json")):
        run_dir = eval_path.parent
        seed = run_dir.name.rsplit("seed", 1)[-1]
        rows.append({"task": run_dir.parts[-3], "method": run_dir.parts[-2], "run_id": run_dir.name,
                     "seed": int(seed) if seed.isdigit() else None, **run_times(run_dir)})
    if not rows:
        raise SystemExit(f"no eval.json under {results_dir}")
    return pd.DataFrame(rows)


def per_method(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean seconds per run of each method (over tasks and seeds), with the number of runs."""
    table = runs.groupby("method", sort=False)[["train", "task_eval", "prior", "total"]].mean()
    return table.assign(runs=runs.groupby("method", sort=False).size()).reset_index()


def per_seed(runs: pd.DataFrame) -> pd.DataFrame:
    """Per seed: runs, the sum of their seconds, and the span from the first start to the last end."""
    rows = []
    for seed, group in runs.groupby("seed", sort=True):
        starts = group["start"].dropna()
        span = group["end"].max() - starts.min() if len(starts) else float("nan")
        rows.append({"seed": seed, "runs": len(group), "sum_s": group["total"].sum(), "span_s": span,
                     "train_s": group["train"].sum(), "task_eval_s": group["task_eval"].sum(),
                     "prior_s": group["prior"].sum()})
    return pd.DataFrame(rows)


def to_markdown(runs: pd.DataFrame, title: str) -> str:
    methods, seeds = per_method(runs), per_seed(runs)
    lines = [f"# {title}", "", "Seconds per run, mean over tasks and seeds (one thread per run unless the run said "
             "otherwise).", "", "| method | runs | training | test split | prior suite | total |",
             "|---|---|---|---|---|---|"]
    for r in methods.itertuples():
        lines.append(f"| {r.method} | {r.runs} | {r.train:.0f} | {r.task_eval:.0f} | {r.prior:.0f} | {r.total:.0f} |")
    lines += ["", "Per seed: *sum* = the runs' seconds added up; *span* = first start to last result written.", "",
              "| seed | runs | training | test split | prior suite | sum | span |", "|---|---|---|---|---|---|---|"]
    for r in seeds.itertuples():
        span = "–" if pd.isna(r.span_s) else f"{r.span_s / 60:.1f} min"
        lines.append(f"| {r.seed} | {r.runs} | {r.train_s / 60:.1f} min | {r.task_eval_s / 60:.1f} min | "
                     f"{r.prior_s / 60:.1f} min | {r.sum_s / 60:.1f} min | {span} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ the profile
def _number(value) -> float:
    """A recorded number of seconds, or NaN where the file has none (never 0)."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else NAN


def step_phases(rows: list[dict]) -> dict[str, float]:
    """``{phase: seconds}`` summed over the training lines (those with ``loss``) of ``metrics.jsonl``; ``{}`` when
    any training line has no ``time/`` key (a run written before the phases were logged)."""
    lines = [r for r in rows if "loss" in r]
    keys = [[k for k in r if k.startswith(PREFIX) and k.endswith(SUFFIX)] for r in lines]
    if not lines or not all(keys):
        return {}
    out: dict[str, float] = {}
    for row, names in zip(lines, keys):
        for key in names:
            phase = key[len(PREFIX):-len(SUFFIX)]
            out[phase] = out.get(phase, 0.0) + _number(row[key])
    return out


def probe_seconds(run_dir: Path) -> float:
    """The validation probes' seconds (``wall_s`` of every ``selection/step<S>.json``): 0 without probes, NaN when
    a probe file has no ``wall_s``."""
    return sum((_number(row.get("wall_s")) for row in read_step_files(run_dir).values()), 0.0)


def run_profile(run_dir: Path) -> dict[str, float]:
    """The parts of one run (module docstring), flat: ``startup``, ``train``, ``train/setup``,
    ``train/model_load``, ``train/<phase>``, ``train/probes``, ``train/other``, ``task_eval``, ``prior``,
    ``prior/<benchmark>``, ``total``; NaN where the run's files do not record a part."""
    times = run_times(run_dir)
    manifest_path = run_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else None
    out = {"startup": NAN, "train": NAN, "task_eval": times["task_eval"], "prior": times["prior"]}
    if manifest is not None:
        startup = manifest.get("startup") or {}
        out["startup"] = _number(startup.get("process_to_run_s"))
        out["train"] = _number(manifest.get("wall_clock_s"))
        out["train/setup"] = _number(startup.get("run_to_first_step_s"))
        out["train/model_load"] = _number(startup.get("model_load_s"))
        phases = step_phases(read_metrics(run_dir))
        out.update({f"train/{name}": seconds for name, seconds in phases.items()})
        out["train/probes"] = probe_seconds(run_dir)
        # NaN unless every part was recorded (a run without phases has no "other")
        out["train/other"] = out["train"] - out["train/setup"] - sum(phases.values()) - out["train/probes"] \
            if phases else NAN
    result = json.loads((run_dir / "eval.json").read_text())
    for prior in result.get("prior", {}).values():
        cached = prior.get("reused_from_cache")
        for name, bench in prior.get("benchmarks", {}).items():
            seconds = _number(bench.get("wall_s"))  # reused from the cache: 0, as the suite (where recorded)
            out[f"prior/{name}"] = 0.0 if cached and not math.isnan(seconds) else seconds
    out["total"] = sum(v for k, v in out.items() if k in ("startup", "train", "task_eval", "prior")
                       and not math.isnan(v))
    return out


def collect_profiles(results_dir: str | Path) -> pd.DataFrame:
    """One row per run directory (``<task>/<method>/<run_id>/eval.json``) with its parts (``run_profile``)."""
    rows = []
    for eval_path in sorted(Path(results_dir).glob("*/*/*/eval.json")):
        run_dir = eval_path.parent
        rows.append({"task": run_dir.parts[-3], "method": run_dir.parts[-2], "run_id": run_dir.name,
                     **run_profile(run_dir)})
    if not rows:
        raise SystemExit(f"no eval.json under {results_dir}")
    return pd.DataFrame(rows)


def _parts(columns) -> list[str]:
    """The profile's parts in the table's order."""
    phases = sorted((c for c in columns if c.startswith("train/") and c[6:] not in
                     ("setup", "model_load", "probes", "other")),
                    key=lambda c: (PHASE_ORDER.index(c[6:]) if c[6:] in PHASE_ORDER else len(PHASE_ORDER), c))
    prior = [c for c in columns if c.startswith("prior/")]
    return ["startup", "train", "train/setup", "train/model_load", *phases, "train/probes", "train/other",
            "task_eval", "prior", *prior, "total"]


def profile_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Parts (rows, in the table's order) by method (columns, in order of appearance): the mean seconds per run over
    the method's runs that recorded the part (NaN: none did); the last row, ``runs``, counts each method's runs."""
    parts = [p for p in _parts(runs.columns) if p in runs.columns]
    table = runs.groupby("method", sort=False)[parts].mean().T
    table.loc["runs"] = runs.groupby("method", sort=False).size()
    return table


_LABELS = {"startup": "process start-up (before the run)", "train": "**training**",
           "train/setup": "· set-up to the first step", "train/model_load": "· · of which model loading",
           "train/probes": "· validation probes", "train/other": "· other (data, schedule, logging, final save)",
           "task_eval": "**test split**", "prior": "**prior suite**", "total": "**total**", "runs": "runs"}


def profile_markdown(runs: pd.DataFrame, title: str) -> str:
    table = profile_table(runs)
    methods = list(table.columns)
    lines = [f"# {title}", "",
             "Seconds per run, mean over each method's runs that recorded the part (–: none did). Training is its "
             "set-up, the step phases (metrics.jsonl's time/*), the validation probes and the rest; the model "
             "loading is part of the set-up. experiments/time_split.py's docstring says where each part comes from.",
             "", "| part | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for part, row in table.iterrows():
        label = _LABELS.get(part) or f"· {part.split('/', 1)[1]}"  # a step phase or a prior benchmark
        cells = ["–" if pd.isna(v) else (f"{v:.0f}" if part == "runs" else f"{v:.1f}") for v in row]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results_dir", type=Path)
    ap.add_argument("--profile", action="store_true", help="the parts of every run's time (module docstring)")
    ap.add_argument("--output", type=Path,
                    help="default: RESULTS_DIR/time_split.md (with --profile: RESULTS_DIR/time_profile.md)")
    args = ap.parse_args(argv)
    if args.profile:
        runs = collect_profiles(args.results_dir)
        out = args.output or args.results_dir / "time_profile.md"
        out.write_text(profile_markdown(runs, f"Time profile of {args.results_dir}"))
    else:
        runs = collect(args.results_dir)
        out = args.output or args.results_dir / "time_split.md"
        out.write_text(to_markdown(runs, f"Time split of {args.results_dir}"))
    runs.to_csv(out.with_suffix(".csv"), index=False)
    print(out.read_text())
    return out


if __name__ == "__main__":
    main()
