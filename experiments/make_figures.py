"""Redraw the paper's figures from result files, without training:
``python -m experiments.make_figures [--all | NAME ...]``.

Each figure is drawn by its section's ``aggregate(results_dir)``, which reads only the result files of that
section's runs (``eval.json``, curve points, CSVs) and writes the figure beside its table; the paper's values are
drawn beside ours wherever the paper prints numbers. A figure whose results are missing is named and skipped, with
the command that makes them; nothing is drawn from numbers that are not on disk.

    python -m experiments.make_figures --all           # every figure whose results are under results/
    python -m experiments.make_figures 3 7 --results-root experiments/results          # some, from another root
    python -m experiments.make_figures 4 --results 4=experiments/results/table5_mini   # one figure's results folder

Names: 2R (Figure 2 right, Section 3.2), 3, 4, 5 (5L and 5R: both panels, one section), 6, 7, 8, A1.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from experiments import estimators, figure3, figure5, figure6, figure8, icl_check, table1, table5


@dataclass(frozen=True)
class FigureSpec:
    name: str
    title: str
    experiment: str  # results under <root>/<experiment>
    aggregate: Callable[[Path], Any]  # the section's aggregate: reads the results, writes the table and figure
    outputs: tuple[str, ...]
    script: str


FIGURES = {f.name: f for f in (
    FigureSpec("2R", "Figure 2 (right): the teacher's accuracy and KL to the base", "icl_check", icl_check.aggregate,
               ("figure2_icl.png",), "run_icl_check.sh"),
    FigureSpec("3", "Figure 3: skills learned in sequence", "figure3", figure3.aggregate, ("figure3.png",),
               "run_figure3.sh"),
    FigureSpec("4", "Figure 4: new task vs prior capabilities", "table5", table5.aggregate, ("figure4_pareto.png",),
               "run_table5.sh"),
    FigureSpec("5", "Figure 5: SDFT - SFT by model size (left), pass@k (right)", "figure5", figure5.aggregate,
               ("figure5_scale.png", "figure5_passk.png"), "run_figure5.sh"),
    FigureSpec("6", "Figure 6: on-policy vs offline", "figure6", figure6.aggregate, ("figure6_onpolicy.png",),
               "run_figure6.sh"),
    FigureSpec("7", "Figure 7: SDFT by teacher context", "table1", table1.aggregate, ("figure7_teacher_context.png",),
               "run_table1.sh"),
    FigureSpec("8", "Figure 8: teacher weights", "figure8", figure8.aggregate, ("figure8_teacher.png",),
               "run_figure8.sh"),
    FigureSpec("A1", "Appendix A.1: gradient estimators", "estimators", estimators.aggregate, ("estimators.png",),
               "run_estimators.sh"),
)}
ALIASES = {"5L": "5", "5R": "5", "2": "2R"}


def make(spec: FigureSpec, results_dir: Path) -> tuple[str, str]:
    """(``written`` | ``skipped``, what) for one figure from ``results_dir``."""
    if not results_dir.is_dir():
        return "skipped", f"no results at {results_dir} (bash experiments/{spec.script} --results-dir {results_dir})"
    try:
        spec.aggregate(results_dir)
    except SystemExit as err:  # the section's own "nothing to aggregate" message
        return "skipped", f"{err} (bash experiments/{spec.script} --results-dir {results_dir})"
    missing = [name for name in spec.outputs if not (results_dir / name).exists()]
    if missing:
        return "skipped", f"{results_dir} holds too few results for {', '.join(missing)}"
    return "written", ", ".join(str(results_dir / name) for name in spec.outputs)


def main(argv: list[str] | None = None) -> dict[str, tuple[str, str]]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", metavar="NAME", help=f"figures to draw: {', '.join(FIGURES)}")
    ap.add_argument("--all", action="store_true", help="every figure")
    ap.add_argument("--results-root", type=Path, default=Path("results"),
                    help="folder holding one results folder per section (<root>/table5, <root>/figure3, ...)")
    ap.add_argument("--results", nargs="*", default=[], metavar="NAME=DIR", help="one figure's results folder")
    args = ap.parse_args(argv)
    names = list(FIGURES) if args.all else [ALIASES.get(n, n) for n in args.names]
    unknown = [n for n in names if n not in FIGURES]
    if unknown or not names:
        raise SystemExit(f"error: name figures ({', '.join(FIGURES)}) or pass --all" +
                         (f"; unknown: {unknown}" if unknown else ""))
    folders = {}
    for item in args.results:
        name, sep, folder = item.partition("=")
        if not sep or ALIASES.get(name, name) not in FIGURES:
            raise SystemExit(f"error: --results {item!r}: expected NAME=DIR with NAME one of {', '.join(FIGURES)}")
        folders[ALIASES.get(name, name)] = Path(folder)
    report = {}
    for name in dict.fromkeys(names):
        spec = FIGURES[name]
        status, what = make(spec, folders.get(name, args.results_root / spec.experiment))
        report[name] = (status, what)
        print(f"[make_figures] {spec.title}: {status}: {what}", flush=True)
    written = sum(status == "written" for status, _ in report.values())
    print(f"[make_figures] {written} written, {len(report) - written} skipped", flush=True)
    return report


if __name__ == "__main__":
    main()
