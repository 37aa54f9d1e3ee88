"""Run one element of a written grid (a SLURM array task): ``python -m experiments.run_one --grid G --index I``.

The plugins the grid names (``include`` in its overrides: a section's ``--include``) are imported first."""

from __future__ import annotations

import argparse
import importlib

from experiments.grid import is_done, read_grid
from sdft.errors import reported_as_one_line


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--grid", required=True)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    specs = read_grid(args.grid)
    spec = specs[args.index]
    try:  # a task or method of the user's own (the section's --include, kept in the grid file)
        spec.import_plugins()
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    if is_done(spec) and not args.force:
        print(f"{spec.label}: done before, skipped")
        return
    print(f"[{args.index + 1}/{len(specs)}] {spec.label} -> {spec.run_dir}", flush=True)

    # a user's mistake, or a stop on SIGTERM / Ctrl-C (the run checkpointed; rerunning resumes it): one line
    with reported_as_one_line([]):
        importlib.import_module(f"experiments.{spec.experiment}").execute(spec)


if __name__ == "__main__":
    main()
