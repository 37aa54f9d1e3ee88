"""Learning curves: new-task accuracy (and optionally the prior suite) of each method every N optimizer steps.

To choose a preset's step budget by measurement: where has SDFT learned the task, where has SFT started to forget?
Each method trains once with a checkpoint every ``--every`` steps (all kept); every checkpoint, and the base model
at step 0, is evaluated greedily on ``--split`` (val by default: the test split stays for the tables).

    python -m experiments.learning_curve [--preset mini] [--task embedded_tool] [--methods sdft,sft]
        [--steps 64] [--every 16] [--split val] [--n N] [--prior-suite embedded|none] [--seed 0]
        [--output experiments/results/curves/<task>] [key=value ...]
    python -m experiments.learning_curve --from-runs RUN_DIR [RUN_DIR ...] [--split val] [--prior-suite embedded]
        --output OUT

``--from-runs`` trains nothing: it evaluates the kept checkpoints of finished runs (a grid run with
``save_total_limit=null keep_checkpoints=true``, e.g. Table 5's), so the curves of several seeds cost only their
evaluation; task, method and seed come from each run's ``config.yaml``, and the base model is evaluated once per task
as step 0. The plotted line is the mean over seeds, each seed a faint marker.

Writes ``curves.csv`` / ``curves.md`` (method, step, metric, value %, Wilson 95% interval, n), ``curves.png`` /
``.pdf``, ``manifest.json`` (command, wall-clock), and keeps each method's run directory under ``runs/``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd

from eval.stats import proportion_ci
from experiments.evaluation import evaluate_model
from sdft.config import build_config, config_keys
from sdft.config_layers import parse_overrides
from sdft.run_io import read_yaml, write_json_atomic, write_text_atomic

CURVE_METHODS = ("sdft", "sft", "dft")  # single-stage methods: one optimizer-step axis


def checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every kept checkpoint of a run, in step order."""
    found = []
    for path in (Path(run_dir) / "checkpoints").glob("checkpoint-*"):
        if path.is_dir() and path.name.split("-")[-1].isdigit():
            found.append((int(path.name.split("-")[-1]), path))
    return sorted(found)


def _point(model, task: str, split: str, n: int | None, preset: str, seed: int, prior_suite: str) -> list[dict]:
    """Rows of one evaluated point: the task's headline metric and, with a prior suite, its average."""
    result = evaluate_model(model, task, split=split, n=n, preset=preset, seed=seed, prior_suite=prior_suite)
    head = result["evaluations"]["student"]["scores"][0]
    ci = proportion_ci(round(head["value"] * head["n"] / 100), head["n"])
    rows = [{"metric": head["metric"], "value": head["value"], "ci_low": 100 * ci["ci_low"],
             "ci_high": 100 * ci["ci_high"], "n": head["n"]}]
    if prior_suite != "none":
        rows.append({"metric": "prior_avg", "value": result["prior"][prior_suite]["average"], "ci_low": None,
                     "ci_high": None, "n": None})
    return rows


def plot(table: pd.DataFrame, out_base: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(dict.fromkeys(table["metric"]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for method, rows in table[table["metric"] == metric].groupby("method", sort=False):
            if method == "base":  # --from-runs: the untrained model, one value per task
                ax.axhline(rows["value"].iloc[0], color="gray", linestyle="--", label="base (step 0)")
                continue
            seeds = rows["seed"].nunique() if "seed" in rows else 1
            if seeds > 1:  # the mean over seeds, each seed's points faint
                mean = rows.groupby("step", as_index=False)["value"].mean()
                line, = ax.plot(mean["step"], mean["value"], marker="o", label=f"{method} (mean of {seeds} seeds)")
                ax.scatter(rows["step"], rows["value"], color=line.get_color(), alpha=0.3, s=12)
                continue
            rows = rows.sort_values("step")
            ax.plot(rows["step"], rows["value"], marker="o", label=method)
            if rows["ci_low"].notna().all():
                ax.fill_between(rows["step"], rows["ci_low"], rows["ci_high"], alpha=0.15)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(f"{metric} (%)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    for suffix in (".png", ".pdf"):
        fig.savefig(str(out_base) + suffix, dpi=150)
    plt.close(fig)


def to_markdown(table: pd.DataFrame, title: str) -> str:
    seeded = "seed" in table
    lines = [f"# {title}", "", f"| method |{' seed |' if seeded else ''} step | metric | value % [95% CI] | n |",
             f"|---|{'---|' if seeded else ''}---|---|---|---|"]
    for r in table.itertuples():
        ci = "" if pd.isna(r.ci_low) else f" [{r.ci_low:.1f}, {r.ci_high:.1f}]"
        seed = f" {'base' if pd.isna(r.seed) else int(r.seed)} |" if seeded else ""
        lines.append(f"| {r.method} |{seed} {r.step} | {r.metric} | {r.value:.1f}{ci} | "
                     f"{'' if pd.isna(r.n) else int(r.n)} |")
    return "\n".join(lines) + "\n"


def from_runs(run_dirs: list[Path], split: str, n: int | None, prior_suite: str) -> pd.DataFrame:
    """Rows of every kept checkpoint of finished runs, and of each task's base model (step 0, ``seed`` empty)."""
    rows, based = [], set()
    for run_dir in run_dirs:
        config_path = Path(run_dir) / "config.yaml"
        if not config_path.exists():
            raise SystemExit(f"{run_dir}: no config.yaml -- not a run directory")
        cfg = read_yaml(config_path) or {}
        missing = [k for k in ("task", "method", "seed", "model", "preset") if k not in cfg]
        if missing:
            raise SystemExit(f"{config_path}: no field(s) {missing}")
        found = checkpoints(Path(run_dir))
        if not found:
            raise SystemExit(f"{run_dir}: no kept checkpoints (train with save_total_limit=null keep_checkpoints=true)")
        task, method, seed, preset = cfg["task"], cfg["method"], cfg["seed"], cfg["preset"]
        if task not in based:
            based.add(task)
            rows += [{"task": task, "method": "base", "seed": None, "step": 0, **r}
                     for r in _point(cfg["model"], task, split, n, preset, seed, prior_suite)]
        for step, folder in found:
            rows += [{"task": task, "method": method, "seed": seed, "step": step, **r}
                     for r in _point(str(folder), task, split, n, preset, seed, prior_suite)]
            print(json.dumps(rows[-1]), flush=True)
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> Path:
    from sdft.train import run_training

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="mini", choices=["smoke", "mini", "paper"])
    ap.add_argument("--task", default="embedded_tool")
    ap.add_argument("--methods", default="sdft,sft", help=f"comma-separated subset of {','.join(CURVE_METHODS)}")
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--every", type=int, default=16)
    ap.add_argument("--split", default="val")
    ap.add_argument("--n", type=int, help="records evaluated per point (default: the whole split)")
    ap.add_argument("--prior-suite", default="none", choices=["embedded", "paper", "none"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output", type=Path)
    ap.add_argument("--force", action="store_true", help="retrain runs that already exist")
    ap.add_argument("--from-runs", nargs="+", type=Path, metavar="RUN_DIR",
                    help="evaluate the kept checkpoints of these finished runs instead of training")
    ap.add_argument("overrides", nargs="*", metavar="key=value")
    args = ap.parse_args(argv)
    if args.from_runs:
        return _main_from_runs(args, argv)
    methods = args.methods.split(",")
    unknown = sorted(set(methods) - set(CURVE_METHODS))
    if unknown:
        raise SystemExit(f"unknown methods {unknown}; curves are drawn for {list(CURVE_METHODS)}")
    out = args.output or Path("experiments/results/curves") / args.task
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    overrides = {**parse_overrides(args.overrides), "task": args.task, "seed": args.seed, "max_steps": args.steps,
                 "save_steps": args.every, "save_total_limit": None, "keep_checkpoints": True}
    given = parse_overrides(args.overrides)
    unused = sorted(k for k in given if not any(k in config_keys(m) for m in methods))
    if unused:
        raise SystemExit(f"no method of {methods} has the config keys {unused}")

    def for_method(method: str) -> dict:  # a key=value applies to the methods that have the key
        keys = config_keys(method)
        return {k: v for k, v in overrides.items() if k in keys}

    base_model = build_config(args.preset, methods[0], overrides=for_method(methods[0])).model
    rows = [{"method": m, "step": 0, **r} for r in _point(base_model, args.task, args.split, args.n, args.preset,
                                                           args.seed, args.prior_suite) for m in methods]
    for method in methods:
        run_dir = out / "runs" / method
        cfg = build_config(args.preset, method, overrides={**for_method(method), "output_dir": str(run_dir)})
        run_training(cfg, force=args.force)
        for step, folder in checkpoints(run_dir):
            point = _point(str(folder), args.task, args.split, args.n, args.preset, args.seed, args.prior_suite)
            rows += [{"method": method, "step": step, **r} for r in point]
            print(json.dumps(rows[-1]), flush=True)
    table = pd.DataFrame(rows).sort_values(["metric", "method", "step"], kind="stable")
    table.to_csv(out / "curves.csv", index=False)
    title = f"{args.task}, {args.preset} preset, {args.split} split, seed {args.seed}"
    write_text_atomic(out / "curves.md", to_markdown(table, title))
    plot(table, out / "curves", title)
    write_json_atomic(out / "manifest.json", {
        "command": "python -m experiments.learning_curve " + " ".join(sys.argv[1:] if argv is None else argv),
        "preset": args.preset, "task": args.task, "methods": methods, "steps": args.steps, "every": args.every,
        "split": args.split, "n": args.n, "prior_suite": args.prior_suite, "seed": args.seed,
        "wall_clock_s": round(time.time() - started, 1)})
    print(f"wrote {out / 'curves.md'}")
    return out


def _main_from_runs(args: argparse.Namespace, argv: list[str] | None) -> Path:
    if args.output is None:
        raise SystemExit("--from-runs needs --output")
    args.output.mkdir(parents=True, exist_ok=True)
    started = time.time()
    table = from_runs(args.from_runs, args.split, args.n, args.prior_suite)
    table = table.sort_values(["task", "metric", "method", "seed", "step"], kind="stable", na_position="first")
    table.to_csv(args.output / "curves.csv", index=False)
    for task, rows in table.groupby("task", sort=False):
        seeds = sorted(int(s) for s in rows["seed"].dropna().unique())
        title = f"{task}, {args.split} split, seeds {', '.join(map(str, seeds))}"
        base = args.output / (f"curves_{task}" if table["task"].nunique() > 1 else "curves")
        write_text_atomic(base.with_suffix(".md"), to_markdown(rows, title))
        plot(rows, base, title)
    write_json_atomic(args.output / "manifest.json", {
        "command": "python -m experiments.learning_curve " + " ".join(sys.argv[1:] if argv is None else argv),
        "from_runs": [str(p) for p in args.from_runs], "split": args.split, "n": args.n,
        "prior_suite": args.prior_suite, "wall_clock_s": round(time.time() - started, 1)})
    print(f"wrote {args.output / 'curves.csv'}")
    return args.output


if __name__ == "__main__":
    main()
