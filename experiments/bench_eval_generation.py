"""What the task evaluation's greedy decoding costs on a CPU, by batch size and decoder, and whether the answers
stay the same.

    OMP_NUM_THREADS=1 python -m experiments.bench_eval_generation --models embedded:smollm2-135m-instruct RUN/model \
        --task embedded_tool --splits val test --output experiments/results/eval_batch_mini.md

For every model and split, the split's greedy answers (``eval.generation.generate``, the preset's chat prompts,
``--max-new-tokens``) are made by HF ``generate`` at the first batch size (the reference: ``--reference-batch``,
mini's value before) and by :func:`sdft.sampling.greedy_decode` (rows leaving the batch as they end) at each of
``--batch-sizes``, one after the other, so that all share the machine's load. The table gives the seconds, the mean
answer length and whether every record's tokens (and whether it ended) equal the reference's. Timings depend on the
machine and on what else runs on it; the file records the thread count, the command and the load.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

from data_prep.registry import get_task
from data_prep.task import load_records
from eval.generation import generate
from eval.task_eval import build_conversations
from sdft.models import load_model, load_tokenizer


def measure(model, tokenizer, conversations, max_new_tokens: int, reference_batch: int,
            batch_sizes: list[int]) -> list[dict]:
    """One row per decoder and batch size: seconds, mean answer tokens, same answers as the reference (first row)."""
    rows, reference = [], None
    for label, batch, fast in [("generate", reference_batch, False)] + [("greedy_decode", b, True)
                                                                         for b in batch_sizes]:
        began = time.perf_counter()
        out = generate(model, tokenizer, conversations, greedy=True, max_new_tokens=max_new_tokens,
                       batch_size=batch, backend="hf", fast_greedy=fast)
        seconds = time.perf_counter() - began
        reference = reference or out
        rows.append({"decoder": label, "batch": batch, "seconds": round(seconds, 1),
                     "mean_tokens": round(out.mean_tokens(), 2),
                     "same_answers": out.token_ids == reference.token_ids and out.finished == reference.finished})
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", required=True, help="model names or run model folders")
    p.add_argument("--tokenizer", default="embedded:smollm2-135m-instruct",
                   help="the tokenizer (a run's model folder holds one too)")
    p.add_argument("--task", default="embedded_tool")
    p.add_argument("--splits", nargs="+", default=["val", "test"])
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--reference-batch", type=int, default=8)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32, 64])
    p.add_argument("--output", required=True, help="markdown file to write (a .csv beside it)")
    args = p.parse_args(argv)

    import pandas as pd

    tokenizer = load_tokenizer(args.tokenizer)
    task = get_task(args.task)
    load, started = os.getloadavg()[0], time.strftime("%Y-%m-%d %H:%M:%S")
    rows = []
    for name in args.models:
        model = load_model(name, dtype=torch.float32)
        for split in args.splits:
            records = load_records(task, split)
            for row in measure(model, tokenizer, build_conversations(records), args.max_new_tokens,
                               args.reference_batch, args.batch_sizes):
                rows.append({"model": name, "split": split, "n": len(records), **row})
                print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out.with_suffix(".csv"), index=False)
    command = "python -m experiments.bench_eval_generation " + " ".join(sys.argv[1:] if argv is None else argv)
    out.write_text(
        "# Greedy evaluation on a CPU: HF generate against sdft.sampling.greedy_decode, by batch size\n\n"
        f"Command: `{command}`\n\n"
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}, "
        f"1-minute load average {load:.2f} at the start; torch {torch.__version__}; "
        f"started {started}. Task `{args.task}`, {args.max_new_tokens} new tokens at most, "
        "float32.\n\n"
        "`same_answers`: every record's tokens and end equal the first row's (generate at the reference batch).\n\n"
        + table.to_markdown(index=False) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
