"""A learning-rate sweep selected on the validation split, as the paper chooses its hyper-parameters (Tables 3-4).

Each (task, method, learning rate) trains once with the preset's step budget and evaluates the final model on
``--split`` (val: the test split stays for the tables); the runs are ``experiments.learning_curve`` runs with one
point at the end (``--every`` = ``--steps``), kept under ``<output>/<task>/<method>/lr<value>/``. A point whose
``curves.csv`` exists is not run again, so two processes with disjoint ``--learning-rates`` can share the work and a
last ``--aggregate-only`` writes the table.

    python -m experiments.lr_sweep [--preset mini] [--tasks embedded_tool,...] [--methods sdft,sft]
        [--learning-rates 5e-5,2e-4] [--steps 32] [--seed 1] [--split val] [--output DIR]
        [--reuse LR=CURVES_CSV ...] [--aggregate-only] [key=value ...]

``--reuse 1e-4=.../curves.csv`` adds the points of curves already drawn at that learning rate (e.g. the preset's
own value, from ``learning_curve --from-runs`` over Table 5's runs of the same seed): their last step per (task,
method) must be ``--steps`` and their seed ``--seed``.

Writes ``sweep.csv`` (task, method, learning_rate, value %, Wilson 95% interval, n, source) and ``sweep.md`` (one
row per task and method, one column per learning rate, the selected value in bold: the highest validation score, a
tie going to the preset's value, else to the smaller rate) and ``manifest.json`` (command, wall-clock).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from experiments import learning_curve
from sdft.config import build_config
from sdft.run_io import write_json_atomic, write_text_atomic

SWEEP_DIR = "lr{}"


def _lr_name(lr: float) -> str:
    return f"{lr:g}"


def run_point(preset: str, task: str, method: str, lr: float, steps: int, seed: int, split: str, out: Path,
              overrides: list[str]) -> Path:
    """Train ``method`` on ``task`` at ``lr`` and evaluate its final model; skipped when done."""
    folder = out / task / method / SWEEP_DIR.format(_lr_name(lr))
    if (folder / "curves.csv").exists():
        print(f"[lr_sweep] {folder} is done; skipping", flush=True)
        return folder
    learning_curve.main(["--preset", preset, "--task", task, "--methods", method, "--steps", str(steps), "--every",
                         str(steps), "--split", split, "--seed", str(seed), "--output", str(folder),
                         f"learning_rate={lr}", *overrides])
    return folder


def final_points(curves: pd.DataFrame, steps: int, source: str) -> pd.DataFrame:
    """The last step of every trained (task, method) of a curves table; an error unless it is ``steps``."""
    trained = curves[curves["method"] != "base"]
    last = trained.loc[trained.groupby(["task", "method", "metric"])["step"].idxmax()]
    short = last[last["step"] != steps]
    if not short.empty:
        row = short.iloc[0]
        raise SystemExit(f"error: {source}: {row['task']}/{row['method']} ends at step {row['step']}, not {steps}")
    return last.assign(source=source)


def collect(out: Path, reuse: dict[float, Path], steps: int, seed: int) -> pd.DataFrame:
    """Every sweep point under ``out`` and in the reused curve files, one row per (task, method, lr)."""
    frames = []
    for csv in sorted(out.glob(f"*/*/{SWEEP_DIR.format('*')}/curves.csv")):
        lr = float(csv.parent.name[len(SWEEP_DIR.format("")):])
        curves = pd.read_csv(csv).assign(task=csv.parent.parent.parent.name)
        frames.append(final_points(curves, steps, str(csv)).assign(learning_rate=lr))
    for lr, csv in reuse.items():
        curves = pd.read_csv(csv)
        seeds = set(curves.loc[curves["method"] != "base", "seed"].dropna().astype(int))
        if seeds != {seed}:
            raise SystemExit(f"error: {csv}: its runs are of seeds {sorted(seeds)}, the sweep's of seed {seed}")
        frames.append(final_points(curves, steps, str(csv)).assign(learning_rate=lr))
    if not frames:
        raise SystemExit(f"error: no sweep point under {out} and nothing reused")
    table = pd.concat(frames, ignore_index=True)
    dup = table[table.duplicated(["task", "method", "learning_rate"], keep=False)]
    if not dup.empty:
        row = dup.iloc[0]
        raise SystemExit(f"error: {row['task']}/{row['method']} at lr {row['learning_rate']:g} is in "
                         f"{sorted(set(dup['source']))}: keep one")
    cols = ["task", "method", "learning_rate", "metric", "value", "ci_low", "ci_high", "n", "source"]
    return table[cols].sort_values(["task", "method", "learning_rate"]).reset_index(drop=True)


def select(table: pd.DataFrame, preset_lr: dict[tuple[str, str], float]) -> pd.DataFrame:
    """The selected learning rate per (task, method): the highest value; a tie goes to the preset's value for that
    task and method (``preset_lr[(task, method)]``: a task may set its own rate inside a preset), else to the
    smaller rate."""
    rows = []
    for (task, method), group in table.groupby(["task", "method"], sort=True):
        best = set(group.loc[group["value"] == group["value"].max(), "learning_rate"])
        preset = preset_lr.get((task, method))
        pick = preset if preset in best else min(best)
        rows.append({"task": task, "method": method, "selected_lr": float(pick)})
    return pd.DataFrame(rows)


def to_markdown(table: pd.DataFrame, chosen: pd.DataFrame, title: str) -> str:
    rates = sorted(table["learning_rate"].unique())
    lines = [f"# {title}", "", "Final-step validation score, % [Wilson 95% interval] (n); bold: selected.", "",
             "| Task | Method | Metric | " + " | ".join(f"lr {r:g}" for r in rates) + " | Selected |",
             "|---|---|---|" + "---|" * len(rates) + "---|"]
    picks = {(r.task, r.method): r.selected_lr for r in chosen.itertuples()}
    for (task, method), rows in table.groupby(["task", "method"], sort=True):
        cells = []
        for rate in rates:
            hit = rows[rows["learning_rate"] == rate]
            if hit.empty:
                cells.append("-")
                continue
            r = hit.iloc[0]
            cell = f"{r['value']:.1f} [{r['ci_low']:.1f}, {r['ci_high']:.1f}] ({int(r['n'])})"
            cells.append(f"**{cell}**" if rate == picks[(task, method)] else cell)
        lines.append(f"| {task} | {method} | {rows['metric'].iloc[0]} | " + " | ".join(cells)
                     + f" | {picks[(task, method)]:g} |")
    return "\n".join(lines) + "\n"


def _reuse(values: list[str]) -> dict[float, Path]:
    out = {}
    for item in values:
        lr, sep, path = item.partition("=")
        if not sep or not Path(path).is_file():
            raise SystemExit(f"error: --reuse {item!r}: expected LR=CURVES_CSV naming an existing file")
        out[float(lr)] = Path(path)
    return out


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="mini", choices=["smoke", "mini", "paper"])
    ap.add_argument("--tasks", default="embedded_tool,embedded_science,embedded_medical")
    ap.add_argument("--methods", default="sdft,sft")
    ap.add_argument("--learning-rates", default="5e-5,2e-4", help="comma-separated; each trains every method once")
    ap.add_argument("--steps", type=int, default=32, help="optimizer steps per run (mini: 128 records / batch 4)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--split", default="val")
    ap.add_argument("--output", type=Path, default=Path("results/lr_sweep"))
    ap.add_argument("--reuse", nargs="*", default=[], metavar="LR=CURVES_CSV")
    ap.add_argument("--aggregate-only", action="store_true")
    ap.add_argument("overrides", nargs="*", metavar="key=value")
    args = ap.parse_args(argv)
    reuse = _reuse(args.reuse)
    started = time.time()
    if not args.aggregate_only:
        for task in args.tasks.split(","):
            for method in args.methods.split(","):
                for lr in (float(v) for v in args.learning_rates.split(",")):
                    run_point(args.preset, task, method, lr, args.steps, args.seed, args.split, args.output,
                              args.overrides)
    table = collect(args.output, reuse, args.steps, args.seed)
    preset_lr = {(t, m): build_config(args.preset, m, overrides={"task": t}).learning_rate
                 for t, m in sorted(set(zip(table["task"], table["method"])))}
    chosen = select(table, preset_lr)
    table.to_csv(args.output / "sweep.csv", index=False)
    rates = ", ".join(f"{t}/{m} {lr:g}" for (t, m), lr in preset_lr.items())
    title = (f"Learning-rate sweep: {args.preset} preset, {args.steps} steps, {args.split} split, seed {args.seed} "
             f"(the preset's rates: {rates})")
    write_text_atomic(args.output / "sweep.md", to_markdown(table, chosen, title))
    name = ("manifest_aggregate.json" if args.aggregate_only else
            f"manifest_{args.methods.replace(',', '+')}_{args.tasks.replace(',', '+')}_lr{args.learning_rates}.json")
    write_json_atomic(args.output / name, {
        "command": "python -m experiments.lr_sweep " + " ".join(sys.argv[1:] if argv is None else argv),
        "wall_clock_s": round(time.time() - started, 1), "preset_learning_rates": {f"{t}/{m}": lr for (t, m), lr in preset_lr.items()},
        "selected": chosen.to_dict(orient="records")})
    print(f"wrote {args.output / 'sweep.md'}")
    return args.output


if __name__ == "__main__":
    main()
