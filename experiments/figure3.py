"""Figure 3: continual learning -- one model learns three skills in sequence, with SDFT and with SFT.

    bash experiments/run_figure3.sh [--preset smoke|mini|paper] [--seeds N] [--methods sdft,sft]
        [--phases a,b,c] [--every N] [--n-eval N] [--jobs N] [--results-dir DIR] [--dry-run] [--aggregate-only]
        [key=value ...]

Each (method, seed) is one *sequence*: the preset's model is trained on Tool Use, the result on Science Q&A, that
result on Medical (the paper's order; ``--phases`` changes it). Each phase is an ordinary ``sdft.train`` run
directory, ``<results>/<method>/seed<k>/phase<i>_<task>/``, whose ``model`` is the previous phase's ``model/``:

  * Resumable. A killed sequence restarts in the phase it was in (a completed phase is skipped, a phase killed
    mid-training resumes from its last complete checkpoint, as ``sdft.train`` does), with the previous phase's
    weights; a point already evaluated is not evaluated again.
  * Evaluated every ``--every`` optimizer steps on the test split of *every* phase's task (greedy; at most
    ``--n-eval`` records each), from the phase's checkpoints; the phase's checkpoints are deleted once evaluated
    (its ``model/`` stays: the next phase starts from it). The prior-capability suite is evaluated at the end of
    every phase. The untrained model is step 0 of both methods (``<results>/base/seed<k>/``).
  * ``--jobs 2`` runs two sequences at a time, each its own process (log ``<results>/<method>/seed<k>.log``).

Results are files beside the run directories, under ``<results>/<method>/seed<k>/curve/phase<i>_<task>/``:
``step<s>/<task>/eval.json`` per point, ``step<s>/prior/eval.json`` at the phase's end and ``phase.json`` (phase
index, task, the global step it starts at, the model it starts from). :func:`aggregate` reads only
them and writes

  * ``figure3_raw.csv``: every point of every seed, unnormalized (method, seed, phase, global step, task, value, n);
  * ``figure3.csv`` / ``figure3.md``: mean over seeds with a 95% t-interval, and the paper's normalization per task:
    0 = the base model's accuracy on the task, 1 = the highest accuracy on it at any point of either method
    (:func:`normalize`); the prior-suite average at each phase end;
  * ``figure3.png`` / ``.pdf``: one panel per method, one normalized curve per task, the phases shaded.

The paper prints no numbers for Figure 3 (curves only), so none are drawn beside ours.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from eval.stats import mean_ci
from experiments.evaluation import evaluate_model
from experiments.learning_curve import checkpoints
from experiments.section import preset_seeds, preset_setting, preset_tasks
from figures.sequential import plot_sequential
from sdft.config import build_config, config_keys
from sdft.config_layers import PRESETS, parse_overrides
from sdft.run_io import read_json, read_json_or_none, write_json_atomic, write_text_atomic

EXPERIMENT = "figure3"
METHODS = ("sdft", "sft")
PRIOR_FOLDER = "prior"


# ------------------------------------------------------------------------------------------------ the sequence
def sequence_dir(results_dir: Path, method: str, seed: int) -> Path:
    return Path(results_dir) / method / f"seed{seed}"


def phase_dir(results_dir: Path, method: str, seed: int, index: int, task: str) -> Path:
    return sequence_dir(results_dir, method, seed) / f"phase{index + 1}_{task}"


def points_dir(results_dir: Path, method: str, seed: int, index: int, task: str) -> Path:
    """Where a phase's evaluated points and ``phase.json`` live: beside its run directory, not in it (the run
    directory holds what ``sdft.train`` wrote and nothing else)."""
    return sequence_dir(results_dir, method, seed) / "curve" / f"phase{index + 1}_{task}"


def base_dir(results_dir: Path, seed: int) -> Path:
    return Path(results_dir) / "base" / f"seed{seed}"


def _checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    return checkpoints(run_dir)


def evaluate_point(model: str, point_dir: Path, tasks: list[str], preset: str, seed: int, n_eval: int | None,
                   prior_suite: str) -> None:
    """Evaluate ``model`` on every task's test split (and the prior suite unless ``none``) into ``point_dir``;
    an evaluation whose ``eval.json`` exists is skipped."""
    for task in tasks:
        out = point_dir / task
        if not (out / "eval.json").exists():
            evaluate_model(model, task, out, split="test", n=n_eval, preset=preset, seed=seed)
    if prior_suite != "none" and not (point_dir / PRIOR_FOLDER / "eval.json").exists():
        evaluate_model(model, tasks[0], point_dir / PRIOR_FOLDER, preset=preset, seed=seed, prior_suite=prior_suite,
                       skip_task=True)


def _preset_model(preset: str, method: str, overrides: dict[str, Any]) -> str:
    """The model the first phase starts from: the preset's, or ``model=`` among the overrides."""
    keys = config_keys(method)
    return build_config(preset, method, overrides={k: v for k, v in overrides.items() if k in keys}).model


def run_sequence(preset: str, method: str, seed: int, phases: list[str], results_dir: Path, every: int,
                 n_eval: int | None, prior_suite: str, overrides: dict[str, Any],
                 keep_checkpoints: bool = False) -> list[Path]:
    """Train and evaluate one sequence (see the module's docstring); returns its phase directories."""
    from sdft.train import run_training

    keys = config_keys(method)
    model = _preset_model(preset, method, overrides)
    base = base_dir(results_dir, seed) / "curve" / "step0"
    evaluate_point(model, base, phases, preset, seed, n_eval, prior_suite)
    offset, dirs = 0, []
    for index, task in enumerate(phases):
        run_dir = phase_dir(results_dir, method, seed, index, task)
        curve = points_dir(results_dir, method, seed, index, task)
        dirs.append(run_dir)
        values = {**{k: v for k, v in overrides.items() if k in keys}, "task": task, "seed": seed, "model": model,
                  "output_dir": str(run_dir), "save_steps": every, "save_total_limit": None,
                  "keep_checkpoints": True}
        curve.mkdir(parents=True, exist_ok=True)
        write_json_atomic(curve / "phase.json", {"phase": index + 1, "task": task, "start_step": offset,
                                                   "previous_model": model})
        print(f"[figure3] {method} seed {seed}: phase {index + 1}/{len(phases)} {task} from {model}", flush=True)
        run_training(build_config(preset, method, overrides=values))
        final = (read_json_or_none(run_dir / "manifest.json") or {}).get("global_step")
        if not isinstance(final, int):
            raise RuntimeError(f"{run_dir / 'manifest.json'}: no global_step of the completed run")
        points = [(step, str(folder)) for step, folder in _checkpoints(run_dir) if step < final]
        points.append((final, str(run_dir)))  # the final model: model/ of the run directory
        for step, point_model in points:
            suite = prior_suite if step == final else "none"
            evaluate_point(point_model, curve / f"step{step}", phases, preset, seed, n_eval, suite)
        if not keep_checkpoints and (run_dir / "checkpoints").is_dir():
            shutil.rmtree(run_dir / "checkpoints")  # evaluated; model/ is what the next phase needs
        model, offset = str(run_dir / "model"), offset + final
    return dirs


# ------------------------------------------------------------------------------------------------ the results
def _headline(eval_json: Path) -> dict[str, Any]:
    score = read_json(eval_json)["evaluations"]["student"]["scores"][0]
    return {"metric": score["metric"], "value": float(score["value"]), "n": int(score["n"])}


def _prior_average(eval_json: Path) -> float:
    prior = read_json(eval_json)["prior"]
    return float(next(iter(prior.values()))["average"])


def _points(curve_dir: Path, start_step: int) -> list[dict[str, Any]]:
    rows = []
    for step_dir in sorted(curve_dir.glob("step*")):
        step = int(step_dir.name[len("step"):])
        for eval_json in sorted(step_dir.glob("*/eval.json")):
            name = eval_json.parent.name
            if name == PRIOR_FOLDER:
                rows.append({"step": step, "global_step": start_step + step, "task": PRIOR_FOLDER,
                             "metric": "prior_avg", "value": _prior_average(eval_json), "n": None})
            else:
                rows.append({"step": step, "global_step": start_step + step, "task": name, **_headline(eval_json)})
    return rows


def collect_points(results_dir: Path) -> pd.DataFrame:
    """Every evaluated point under ``results_dir``, one row per (method, seed, global step, task); the base
    model's points are step 0 of every method."""
    results_dir = Path(results_dir)
    base_rows: dict[int, list[dict]] = {}
    for seed_dir in sorted((results_dir / "base").glob("seed*")):
        seed = int(seed_dir.name[len("seed"):])
        base_rows[seed] = _points(seed_dir / "curve", 0)
    rows = []
    for method_dir in sorted(p for p in results_dir.iterdir() if p.is_dir() and p.name in METHODS):
        for seed_dir in sorted(method_dir.glob("seed*")):
            if not seed_dir.is_dir():
                continue
            seed = int(seed_dir.name[len("seed"):])
            meta = {"method": method_dir.name, "seed": seed}
            rows += [{**meta, "phase": 0, "phase_task": "base", **r} for r in base_rows.get(seed, [])]
            for phase_json in sorted(seed_dir.glob("curve/phase*/phase.json")):
                phase = read_json(phase_json)
                for r in _points(phase_json.parent, int(phase["start_step"])):
                    rows.append({**meta, "phase": int(phase["phase"]), "phase_task": phase["task"], **r})
    cols = ["method", "seed", "phase", "phase_task", "step", "global_step", "task", "metric", "value", "n"]
    if not rows:
        return pd.DataFrame(columns=cols)
    return pd.DataFrame(rows)[cols].sort_values(["method", "seed", "global_step", "task"]).reset_index(drop=True)


def mean_curves(raw: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds per (method, global step, task), with a 95% t-interval (``seeds`` of them)."""
    rows = []
    keys = ["method", "phase", "phase_task", "global_step", "task", "metric"]
    for key, group in raw.groupby(keys, sort=True, dropna=False):
        ci = mean_ci(list(group["value"]))
        rows.append({**dict(zip(keys, key)), "value": ci["mean"], "ci_low": ci["ci_low"], "ci_high": ci["ci_high"],
                     "seeds": len(group), "n": group["n"].iloc[0]})
    return pd.DataFrame(rows)


def normalize(curves: pd.DataFrame) -> pd.DataFrame:
    """The paper's per-task normalization of the (mean) curves: ``(value - base) / (best - base)``, where ``base``
    is the task's value at step 0 (the untrained model) and ``best`` the highest value on the task at any point of
    any method. A task on which no point beats the base gets no normalized value (NaN). Prior rows are left out."""
    out = curves[curves["task"] != PRIOR_FOLDER].copy()
    base = out[out["global_step"] == 0].groupby("task")["value"].first()
    best = out.groupby("task")["value"].max()
    span = (best - base).where(best > base)
    out["base_value"] = out["task"].map(base)
    out["best_value"] = out["task"].map(best)
    out["normalized"] = (out["value"] - out["base_value"]) / out["task"].map(span)
    return out


def task_order(curves: pd.DataFrame) -> list[str]:
    """The tasks in the order they were trained on (then any task no phase trained on)."""
    trained = curves[curves["phase"] > 0].sort_values("phase")["phase_task"]
    order = list(dict.fromkeys(trained))
    return order + sorted(set(curves["task"]) - set(order))


def to_markdown(curves: pd.DataFrame, prior: pd.DataFrame, summary: str) -> str:
    tasks = task_order(curves)
    lines = ["# Figure 3: learning skills in sequence", "", summary, "",
             "Accuracy on every task's test split at each evaluated step, % (mean over seeds [95% t-interval]); "
             "*norm*: the paper's normalization (0 = the base model, 1 = the best point of either method on that "
             "task). The paper prints no numbers for this figure.", ""]
    for method, rows in curves.groupby("method", sort=False):
        lines += [f"## {method.upper()}", "",
                  "| Step | Training on | " + " | ".join(f"{t} | norm" for t in tasks) + " | Prior avg |",
                  "|---|---|" + "---|---|" * len(tasks) + "---|"]
        for step, at in rows.groupby("global_step", sort=True):
            cells = []
            for task in tasks:
                hit = at[at["task"] == task]
                if hit.empty:
                    cells += ["-", "-"]
                    continue
                r = hit.iloc[0]
                ci = "" if r["seeds"] < 2 else f" [{r['ci_low']:.1f}, {r['ci_high']:.1f}]"
                cells += [f"{r['value']:.1f}{ci} (n={int(r['n'])})",
                          "-" if pd.isna(r["normalized"]) else f"{r['normalized']:.2f}"]
            p = prior[(prior["method"] == method) & (prior["global_step"] == step)]
            prior_cell = "-" if p.empty else f"{p['value'].iloc[0]:.1f}"
            lines.append(f"| {step} | {at['phase_task'].iloc[0]} | " + " | ".join(cells) + f" | {prior_cell} |")
        lines.append("")
    return "\n".join(lines)


def aggregate(results_dir: str | Path) -> pd.DataFrame:
    """Read the evaluated points under ``results_dir``; write figure3_raw.csv, figure3.csv / .md, figure3.png /
    .pdf (see the module's docstring). Returns the normalized mean curves."""
    results_dir = Path(results_dir)
    raw = collect_points(results_dir)
    if raw.empty:
        raise SystemExit(f"no evaluated point under {results_dir}: nothing to aggregate")
    raw.to_csv(results_dir / "figure3_raw.csv", index=False)
    curves = mean_curves(raw)
    normalized = normalize(curves)
    prior = curves[curves["task"] == PRIOR_FOLDER]
    table = pd.concat([normalized, prior], ignore_index=True)
    table.to_csv(results_dir / "figure3.csv", index=False)
    seeds = raw.groupby("method")["seed"].nunique()
    summary = "Seeds: " + ", ".join(f"{m} {n}" for m, n in seeds.items()) + "."
    write_text_atomic(results_dir / "figure3.md", to_markdown(normalized, prior, summary))
    plot_sequential(normalized, results_dir / "figure3", subtitle=summary)
    return normalized


# ------------------------------------------------------------------------------------------------ command line
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="mini")
    p.add_argument("--seeds", type=int, help="number of seeds (default: 1; 3 for paper)")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {','.join(METHODS)}")
    p.add_argument("--phases", help="comma-separated tasks in training order (default: the preset's)")
    p.add_argument("--every", type=int, help="evaluate every N optimizer steps (default: the preset's)")
    p.add_argument("--n-eval", type=int, help="records per task test split per point (default: the preset's)")
    p.add_argument("--prior-suite", choices=["embedded", "paper", "none"],
                   help="evaluated at every phase end (default: paper for the paper preset, else embedded)")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep each phase's checkpoints once evaluated")
    p.add_argument("--jobs", type=int, default=1, help="sequences at a time, each its own process")
    p.add_argument("--sequence", metavar="METHOD:SEED", help="run this one sequence only (what --jobs launches)")
    p.add_argument("--dry-run", action="store_true", help="print the sequences and their phases only")
    p.add_argument("--aggregate-only", action="store_true", help="only rebuild the table and figure")
    p.add_argument("--results-dir", default=f"results/{EXPERIMENT}")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every phase")
    return p


def _settings(args) -> dict[str, Any]:
    methods = args.methods.split(",")
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"error: unknown methods {unknown}; Figure 3 compares {list(METHODS)}")
    seeds = args.seeds if args.seeds is not None else preset_seeds(args.preset)
    return {"methods": methods, "seeds": list(range(seeds)),
            "phases": args.phases.split(",") if args.phases else preset_tasks(EXPERIMENT, args.preset),
            "every": args.every or preset_setting(EXPERIMENT, args.preset, "every"),
            "n_eval": args.n_eval if args.n_eval is not None else preset_setting(EXPERIMENT, args.preset, "n_eval"),
            "prior_suite": args.prior_suite or ("paper" if args.preset == "paper" else "embedded"),
            "overrides": parse_overrides(args.overrides)}


def _launch(argv: list[str], sequences: list[tuple[str, int]], results_dir: Path, jobs: int) -> None:
    """Run each sequence as ``python -m experiments.figure3 ... --sequence M:S``, ``jobs`` at a time, each its own
    process (:func:`experiments.processes.start`)."""
    base = [a for a in argv if a != "--jobs" and not a.startswith("--jobs=")]
    if "--jobs" in argv:  # drop the value after --jobs
        i = argv.index("--jobs")
        base = argv[:i] + argv[i + 2:]
    from experiments.processes import start

    threads = max(1, (os.cpu_count() or 1) // jobs)
    pending, running, failed = list(sequences), [], []
    started = time.time()
    while pending or running:
        while pending and len(running) < jobs:
            method, seed = pending.pop(0)
            log = sequence_dir(results_dir, method, seed).with_suffix(".log")
            log.parent.mkdir(parents=True, exist_ok=True)
            proc = start("experiments.figure3", [*base, "--sequence", f"{method}:{seed}"], log, dict(os.environ),
                         threads, append=True, own_session=False)  # a Ctrl-C reaches the sequences too
            running.append((method, seed, proc, log))
            print(f"[figure3] {method} seed {seed}: running ({threads} thread(s), log {log}) "
                  f"({time.time() - started:.0f}s elapsed)", flush=True)
        for item in list(running):
            method, seed, proc, log = item
            if proc.poll() is not None:
                running.remove(item)
                status = "finished" if proc.returncode == 0 else f"FAILED (exit {proc.returncode}, see {log})"
                print(f"[figure3] {method} seed {seed}: {status} ({time.time() - started:.0f}s elapsed)", flush=True)
                if proc.returncode:
                    failed.append(f"{method} seed {seed}")
        time.sleep(1)
    if failed:
        raise SystemExit(f"error: sequences failed: {', '.join(failed)}")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    results_dir = Path(args.results_dir)
    if args.aggregate_only:
        aggregate(results_dir)
        return
    s = _settings(args)
    sequences = [(m, k) for k in s["seeds"] for m in s["methods"]]
    if args.sequence:
        method, _, seed = args.sequence.partition(":")
        sequences = [(method, int(seed))]
    print(f"[figure3] preset {args.preset}: {len(sequences)} sequence(s) of {len(s['phases'])} phases "
          f"({' -> '.join(s['phases'])}), evaluated every {s['every']} steps on "
          f"{'all' if s['n_eval'] is None else s['n_eval']} records per task -> {results_dir}", flush=True)
    if args.dry_run:
        for method, seed in sequences:
            for i, task in enumerate(s["phases"]):
                print(f"  {method} seed {seed} phase {i + 1}: {task} -> {phase_dir(results_dir, method, seed, i, task)}")
        return
    t0 = time.time()
    if args.jobs > 1 and not args.sequence:
        for seed in s["seeds"]:  # the base model's points, once per seed, before the sequences share them
            model = _preset_model(args.preset, s["methods"][0], s["overrides"])
            evaluate_point(model, base_dir(results_dir, seed) / "curve" / "step0", s["phases"], args.preset, seed,
                           s["n_eval"], s["prior_suite"])
        _launch(argv, sequences, results_dir, args.jobs)
    else:
        for method, seed in sequences:
            run_sequence(args.preset, method, seed, s["phases"], results_dir, s["every"], s["n_eval"],
                         s["prior_suite"], s["overrides"], keep_checkpoints=args.keep_checkpoints)
    if args.sequence:
        return
    aggregate(results_dir)
    print(f"[figure3] finished in {time.time() - t0:.0f}s. Outputs:\n  {results_dir / 'figure3.md'}\n  "
          f"{results_dir / 'figure3.csv'}\n  {results_dir / 'figure3_raw.csv'}\n  {results_dir / 'figure3.png'} "
          "(and .pdf)", flush=True)


if __name__ == "__main__":
    main()
