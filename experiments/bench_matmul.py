"""How close a `mini` training step runs to this machine's matrix-multiply rate: the floor under its time.

    python -m experiments.bench_matmul --threads 1 --output experiments/results/bench_matmul_cpu.md

Three measurements, each the median of ``--repeats`` timed calls after one warm-up, at ``--threads`` torch threads
(1: what each run of ``run_table5.sh --jobs 2`` has):

1. a large square product (``--square`` cubed), float32 and bfloat16: the machine's matmul rate;
2. the products of one step of the model at the step's shape: every linear layer of one decoder layer and the
   output head, forward, with ``tokens`` rows (``--batch`` x ``--length``, the SFT step of
   ``experiments/results/bench_cost_cpu_mini.md``: 4 sequences of ~110 tokens), float32 and bfloat16;
3. the model's own float32 forward + backward on a ``[batch, length]`` batch (the step without its optimizer),
   and its rate in matmul FLOPs: ``6 x tokens x`` the linear layers' weights (head included), attention's
   ``QK^T`` and ``AV`` added.

The ratio of 3 to 2's float32 rate is how much a float32 step could still gain by better kernels, not by less
work; 2's bfloat16 rate bounds what bfloat16 training could gain. Timings depend on the machine and on what else
runs on it (the file records the load average and the command).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch


def timed(fn, *args, repeats: int) -> float:
    """Median seconds of ``repeats`` calls of ``fn(*args)`` after one warm-up call."""
    fn(*args)
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def linear_shapes(config) -> list[tuple[str, int, int, int]]:
    """(name, in, out, count) of the model's linear layers: one decoder layer's (times its layer count) and the
    head. A Llama-style model: q / k / v / o projections and a gated MLP."""
    hidden, inter, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    head_dim = getattr(config, "head_dim", None) or hidden // config.num_attention_heads
    q, kv = config.num_attention_heads * head_dim, config.num_key_value_heads * head_dim
    return [("q_proj", hidden, q, layers), ("k_proj", hidden, kv, layers), ("v_proj", hidden, kv, layers),
            ("o_proj", q, hidden, layers), ("gate_proj", hidden, inter, layers), ("up_proj", hidden, inter, layers),
            ("down_proj", inter, hidden, layers), ("lm_head", hidden, config.vocab_size, 1)]


def linear_flops(config, tokens: int) -> float:
    """Matmul FLOPs of the linear layers (head included) in one forward of ``tokens`` tokens: 2 per weight."""
    return 2 * tokens * sum(i * o * n for _, i, o, n in linear_shapes(config))


def attention_flops(config, batch: int, length: int) -> float:
    """Matmul FLOPs of attention's two products (``QK^T`` and ``AV``) in one forward of ``[batch, length]``, full
    square: what an unmasked kernel computes."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return 2 * 2 * batch * length * length * config.num_attention_heads * head_dim * config.num_hidden_layers


def forward_flops(config, batch: int, length: int) -> float:
    """Matmul FLOPs of one forward of ``[batch, length]``: the linear layers' and attention's."""
    return linear_flops(config, batch * length) + attention_flops(config, batch, length)


def measure(model_name: str, threads: int, batch: int, length: int, square: int, repeats: int) -> dict:
    from sdft.models import load_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    out: dict = {"square": {}, "layers": {}}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(square, square, dtype=dtype), torch.randn(square, square, dtype=dtype)
        out["square"][str(dtype)] = 2 * square ** 3 / timed(torch.matmul, a, b, repeats=repeats) / 1e9
    model = load_model(model_name, dtype=torch.float32)
    config = model.config
    tokens = batch * length
    for dtype in (torch.float32, torch.bfloat16):
        total_flops, total_s = 0.0, 0.0
        for name, i, o, n in linear_shapes(config):
            x, w = torch.randn(tokens, i, dtype=dtype), torch.randn(o, i, dtype=dtype)
            s = timed(torch.nn.functional.linear, x, w, repeats=repeats)
            out["layers"].setdefault(name, {"in": i, "out": o, "count": n})[str(dtype)] = 2 * tokens * i * o / s / 1e9
            total_flops += 2 * tokens * i * o * n
            total_s += s * n
        out["layers_rate_" + str(dtype)] = total_flops / total_s / 1e9
    ids = torch.randint(0, config.vocab_size, (batch, length))
    model.train()

    def step():
        model.zero_grad(set_to_none=True)
        model(input_ids=ids, labels=ids).loss.backward()

    seconds = timed(step, repeats=repeats)
    flops = 3 * forward_flops(config, batch, length)
    out["step"] = {"seconds": seconds, "gflop": flops / 1e9, "rate": flops / seconds / 1e9}
    return out


def write_markdown(result: dict, command: str) -> str:
    s, m = result["settings"], result["measured"]
    f32, bf16 = "torch.float32", "torch.bfloat16"
    lines = [
        "# Matmul rate and a `mini` step (`experiments/bench_matmul.py`)", "",
        f"Command: `{command}`", "",
        f"Machine: {result['machine']}; torch {result['torch']}; {result['date']}. Torch threads {s['threads']}; "
        f"median of {s['repeats']} timed calls after one warm-up.", "",
        "| product | GFLOP/s float32 | GFLOP/s bfloat16 |", "|---|---|---|",
        f"| square {s['square']}^3 | {m['square'][f32]:.1f} | {m['square'][bf16]:.1f} |",
    ]
    for name, row in m["layers"].items():
        lines.append(f"| {name} ({s['batch'] * s['length']} x {row['in']} -> {row['out']}, x{row['count']}) | "
                     f"{row[f32]:.1f} | {row[bf16]:.1f} |")
    lines += [
        f"| **all of a step's linear layers, forward** | **{m['layers_rate_' + f32]:.1f}** | "
        f"**{m['layers_rate_' + bf16]:.1f}** |", "",
        f"The model `{s['model']}`, float32 forward + backward on `[{s['batch']}, {s['length']}]` (no optimizer): "
        f"{m['step']['seconds']:.2f} s for {m['step']['gflop']:.0f} GFLOP of matmuls, "
        f"**{m['step']['rate']:.1f} GFLOP/s = {100 * m['step']['rate'] / m['layers_rate_' + f32]:.0f} %** of the "
        f"float32 rate of its own linear layers (forward). At their bfloat16 rate the same work would take "
        f"{m['step']['gflop'] / m['layers_rate_' + bf16]:.2f} s.", "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="embedded:smollm2-135m-instruct")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=4, help="sequences per step (mini: 4)")
    p.add_argument("--length", type=int, default=110, help="tokens per sequence (mini's SFT step: ~110)")
    p.add_argument("--square", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--output", default=None, help="the markdown's path (default: printed only)")
    args = p.parse_args(argv)
    command = "python -m experiments.bench_matmul " + " ".join(argv if argv is not None else sys.argv[1:])
    load = os.getloadavg()[0]
    measured = measure(args.model, args.threads, args.batch, args.length, args.square, args.repeats)
    result = {
        "settings": vars(args), "measured": measured, "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, 1-minute load average {load:.2f} at the start",
    }
    md = write_markdown(result, command)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(md)
    print(md)
    return result


if __name__ == "__main__":
    main()
