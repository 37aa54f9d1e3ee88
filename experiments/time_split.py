"""Where a section's time went: training, test-split evaluation and the prior suite, per method and per seed.

    python -m experiments.time_split RESULTS_DIR [--output RESULTS_DIR/time_split.md]

Reads only the run directories' files: ``manifest.json`` (``wall_clock_s``: training, with its start and end
times) and ``eval.json`` (``evaluations.<variant>.wall_s``: the task's test split; ``prior.<suite>.wall_s``: the
prior-capability suite; a suite reused from the base model's cache counts 0). A run without a manifest (Base,
evaluated only) has no training time. Per seed, *sum* is the runs' seconds added up (what one process would take
running them one after another); *span* is from the first run's start to the last ``eval.json`` written (the
wall-clock of the seed, whatever ran beside it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

import pandas as pd


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


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results_dir", type=Path)
    ap.add_argument("--output", type=Path, help="default: RESULTS_DIR/time_split.md")
    args = ap.parse_args(argv)
    runs = collect(args.results_dir)
    out = args.output or args.results_dir / "time_split.md"
    out.write_text(to_markdown(runs, f"Time split of {args.results_dir}"))
    runs.to_csv(out.with_suffix(".csv"), index=False)
    print(out.read_text())
    return out


if __name__ == "__main__":
    main()
