"""Do two result folders hold the same numbers? Every run's ``eval.json`` in one, matched with the same run in the
other: its scores, its prior-suite metrics and its checkpoint selection, compared exactly.

    python -m experiments.compare_runs RESULTS_A RESULTS_B [--output compare.md]

Runs are matched by their path under each folder (``<task>/<method>/<run_id>/eval.json``); the numbers compared are
those a table is made from -- each score's value and n (``scores``), each prior benchmark's metrics
(``prior.<suite>.benchmarks.<name>.all_metrics``) and the checkpoint protocol's choice (``checkpoint``: the chosen
and final steps, the validation score of every evaluated step, the final model's test scores). Wall-clock seconds,
paths and settings are not compared. What it is for: checking that a change made for speed left the results as they
were (a rerun of committed runs), or how far two machines' runs differ. Exits with status 1 when any matched run
differs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sdft.run_io import read_json


def numbers(evaluation: dict) -> dict[str, Any]:
    """The numbers of one ``eval.json`` that a table is made from, as a flat ``{key: value}``."""
    out: dict[str, Any] = {}
    for score in evaluation.get("scores") or []:
        key = f"scores/{score.get('source')}/{score.get('metric')}"
        out[key] = score.get("value")
        out[key + "/n"] = score.get("n")
    for suite, block in (evaluation.get("prior") or {}).items():
        for name, bench in ((block or {}).get("benchmarks") or {}).items():
            for metric, value in (bench.get("all_metrics") or {"value": bench.get("value")}).items():
                out[f"prior/{suite}/{name}/{metric}"] = value
    checkpoint = evaluation.get("checkpoint") or {}
    for field in ("chosen_step", "chosen_val", "final_step", "final_val"):
        if field in checkpoint:
            out[f"checkpoint/{field}"] = checkpoint[field]
    for step, value in (checkpoint.get("steps") or {}).items():
        out[f"checkpoint/val@{step}"] = value
    final = checkpoint.get("final_test")
    if isinstance(final, dict):  # {variant: {"scores": [...]}}
        for variant, block in final.items():
            for score in (block or {}).get("scores") or []:
                out[f"checkpoint/final/{variant}/{score.get('metric')}"] = score.get("value")
    return out


def compare(a: Path, b: Path) -> tuple[list[dict], list[str], list[str]]:
    """Per run found in both: how many numbers were compared and which differ; then the runs only in ``a``, only
    in ``b``."""
    runs_a = {p.relative_to(a).parent.as_posix() for p in a.rglob("eval.json")}
    runs_b = {p.relative_to(b).parent.as_posix() for p in b.rglob("eval.json")}
    rows = []
    for run in sorted(runs_a & runs_b):
        x, y = numbers(read_json(a / run / "eval.json")), numbers(read_json(b / run / "eval.json"))
        differ = sorted(k for k in x.keys() | y.keys() if x.get(k) != y.get(k))
        rows.append({"run": run, "numbers": len(x.keys() | y.keys()), "differ": differ,
                     "detail": [f"{k}: {x.get(k)} vs {y.get(k)}" for k in differ[:4]]})
    return rows, sorted(runs_a - runs_b), sorted(runs_b - runs_a)


def report(a: Path, b: Path, rows: list[dict], only_a: list[str], only_b: list[str]) -> str:
    same = sum(not r["differ"] for r in rows)
    lines = [f"# `{a}` against `{b}`", "",
             f"{same} of {len(rows)} runs found in both hold the same numbers "
             f"({sum(r['numbers'] for r in rows)} numbers compared: scores, prior-suite metrics, checkpoint "
             "selection; `python -m experiments.compare_runs`).", "",
             "| run | numbers | same | first differences |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['numbers']} | {'yes' if not r['differ'] else 'no'} | "
                     f"{'; '.join(r['detail']) or '—'} |")
    for label, runs in (("only in the first", only_a), ("only in the second", only_b)):
        if runs:
            more = f" and {len(runs) - 10} more" if len(runs) > 10 else ""
            lines += ["", f"{len(runs)} run(s) {label}: " + ", ".join(f"`{r}`" for r in runs[:10]) + more]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("first", type=Path)
    p.add_argument("second", type=Path)
    p.add_argument("--output", type=Path, help="also write the report here (markdown)")
    args = p.parse_args(argv)
    for folder in (args.first, args.second):
        if not folder.is_dir():
            raise SystemExit(f"error: {folder} is not a folder")
    rows, only_a, only_b = compare(args.first, args.second)
    if not rows:
        raise SystemExit(f"error: no run's eval.json is in both {args.first} and {args.second}")
    text = report(args.first, args.second, rows, only_a, only_b)
    print(text, end="")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    if any(r["differ"] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
