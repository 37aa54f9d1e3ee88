"""Where the embedded prior suite's time goes, per benchmark, and what lm-eval's batch size buys on a CPU.

    OMP_NUM_THREADS=1 python -m experiments.bench_prior_batch --models embedded:smollm2-135m-instruct RUN/model \
        --batch-sizes 8 32 --output experiments/results/bench_prior_batch_cpu.md

For every model and batch size, each benchmark of the embedded suite runs alone (``eval.prior.evaluate_prior``
with ``benchmarks=[name]``), timed; the table gives its seconds and score, and whether every score equals the
first batch size's (the suite runs at batch 8 in ``eval.evaluation``). Timings depend on the machine and on what
else runs on it: the manifest records the thread count and the command.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from sdft.models import load_model_and_tokenizer


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", required=True, help="embedded names, local folders or hub ids")
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[8, 32])
    p.add_argument("--output", required=True, help="a .md file; a .csv and a .json manifest are written beside it")
    args = p.parse_args(argv)

    import pandas as pd
    import torch

    from eval.prior import evaluate_prior, select_benchmarks

    names = list(select_benchmarks("embedded")[0])  # the averaged suite, as Table 5 runs it (no extras, no code)
    rows = []
    t_start = time.time()
    for model_name in args.models:
        model, tok = load_model_and_tokenizer(model_name)
        model.eval()
        for bs in args.batch_sizes:
            for name in names:
                t0 = time.time()
                with torch.inference_mode():
                    res = evaluate_prior(model, tok, suite="embedded", benchmarks=[name], batch_size=bs)
                rows.append({"model": model_name, "batch_size": bs, "benchmark": name,
                             "seconds": round(time.time() - t0, 1), "value": res["benchmarks"][name]["value"],
                             "n": res["benchmarks"][name]["n"]})
                print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    first = args.batch_sizes[0]
    ref = table[table.batch_size == first].set_index(["model", "benchmark"])["value"]
    table["same_as_first"] = [v == ref[(m, b)] for m, b, v in zip(table.model, table.benchmark, table.value)]
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out.with_suffix(".csv"), index=False)
    totals = table.groupby(["model", "batch_size"]).agg(seconds=("seconds", "sum"), identical=("same_as_first", "all"))
    pivot = table.pivot_table(index=["model", "benchmark"], columns="batch_size", values="seconds")
    lines = ["# Embedded prior suite: seconds per benchmark by lm-eval batch size (CPU)", "",
             f"Threads: {torch.get_num_threads()} (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}); "
             f"command: `python -m experiments.bench_prior_batch {' '.join(sys.argv[1:] if argv is None else argv)}`", "",
             "## Per benchmark (seconds)", "", pivot.round(1).to_markdown(), "",
             f"## Per model: the suite's seconds, and whether every score equals batch {first}'s", "",
             totals.to_markdown(), ""]
    out.write_text("\n".join(lines))
    manifest = {"command": sys.argv, "wall_clock_s": round(time.time() - t_start, 1),
                "threads": torch.get_num_threads(), "torch": torch.__version__}
    out.with_suffix(".json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(out.read_text())


if __name__ == "__main__":
    main()
