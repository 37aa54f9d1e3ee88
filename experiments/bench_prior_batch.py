"""Where the embedded prior suite's time goes, per benchmark, and what lm-eval's batch size and the loglikelihood
path buy on a CPU.

    OMP_NUM_THREADS=1 python -m experiments.bench_prior_batch --models embedded:smollm2-135m-instruct RUN/model \
        --batch-sizes 8 32 --output experiments/results/bench_prior_batch_cpu.md
    OMP_NUM_THREADS=1 python -m experiments.bench_prior_batch --models embedded:smollm2-135m-instruct \
        --batch-sizes 32 --loglikelihood lm_eval shared_context --benchmarks commonsense winograd facts truthful \
        --output experiments/results/bench_prior_fast_cpu.md

For every model and batch size, each benchmark of the embedded suite runs alone (``eval.prior.evaluate_prior``
with ``benchmarks=[name]``), once per loglikelihood path (``--loglikelihood``, one after the other for each
benchmark, so that the paths share the machine's load), timed; the tables give its seconds and score, and
whether every metric of every benchmark equals the first batch size's with the first path (the reference).
Timings depend on the machine and on what else runs on it: the manifest records the thread count and the
command.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from eval.prior import LOGLIKELIHOOD
from sdft.models import load_model_and_tokenizer


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", required=True, help="embedded names, local folders or hub ids")
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[8, 32])
    p.add_argument("--loglikelihood", nargs="+", choices=LOGLIKELIHOOD, default=["lm_eval"],
                   help="loglikelihood paths of the hf backend (eval.prior.LOGLIKELIHOOD); the first is the reference")
    p.add_argument("--benchmarks", nargs="+", default=None,
                   help="embedded benchmarks (default: the averaged suite, as Table 5 runs it)")
    p.add_argument("--output", required=True, help="a .md file; a .csv and a .json manifest are written beside it")
    args = p.parse_args(argv)

    import pandas as pd
    import torch

    from eval.prior import evaluate_prior, select_benchmarks

    names = list(select_benchmarks("embedded", args.benchmarks)[0])
    rows = []
    t_start = time.time()
    for model_name in args.models:
        model, tok = load_model_and_tokenizer(model_name)
        model.eval()
        for bs in args.batch_sizes:
            for name in names:
                for path in args.loglikelihood:
                    t0 = time.time()
                    with torch.inference_mode():
                        res = evaluate_prior(model, tok, suite="embedded", benchmarks=[name], batch_size=bs,
                                             loglikelihood=path)
                    bench = res["benchmarks"][name]
                    rows.append({"model": model_name, "batch_size": bs, "loglikelihood": res["loglikelihood"],
                                 "benchmark": name, "seconds": round(time.time() - t0, 1), "value": bench["value"],
                                 "n": bench["n"], "metrics": json.dumps(bench["all_metrics"], sort_keys=True)})
                    print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    first = (args.batch_sizes[0], args.loglikelihood[0])
    ref = table[(table.batch_size == first[0]) & (table.loglikelihood == first[1])].set_index(
        ["model", "benchmark"])["metrics"]
    table["same_as_first"] = [v == ref[(m, b)] for m, b, v in zip(table.model, table.benchmark, table.metrics)]
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out.with_suffix(".csv"), index=False)
    totals = table.groupby(["model", "batch_size", "loglikelihood"]).agg(
        seconds=("seconds", "sum"), identical=("same_as_first", "all"))
    pivot = table.pivot_table(index=["model", "benchmark"], columns=["batch_size", "loglikelihood"], values="seconds")
    lines = ["# Embedded prior suite: seconds per benchmark by lm-eval batch size and loglikelihood path (CPU)", "",
             f"Threads: {torch.get_num_threads()} (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}); "
             f"command: `python -m experiments.bench_prior_batch {' '.join(sys.argv[1:] if argv is None else argv)}`", "",
             "## Per benchmark (seconds)", "", pivot.round(1).to_markdown(), "",
             f"## Per model: the suite's seconds, and whether every metric equals batch {first[0]}'s with "
             f"{first[1]}", "", totals.to_markdown(), ""]
    if len(args.loglikelihood) > 1:
        by_path = table.pivot_table(index=["model", "batch_size", "benchmark"], columns="loglikelihood",
                                    values="seconds")
        speedup = by_path[args.loglikelihood[1:]].rdiv(by_path[first[1]], axis=0)
        lines += [f"## Speed-up: {first[1]}'s seconds / each path's", "", speedup.round(2).to_markdown(), ""]
    out.write_text("\n".join(lines))
    manifest = {"command": sys.argv, "wall_clock_s": round(time.time() - t_start, 1),
                "threads": torch.get_num_threads(), "torch": torch.__version__}
    out.with_suffix(".json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(out.read_text())


if __name__ == "__main__":
    main()
