"""Peak memory and time of the loss with the full vocabulary vs the teacher's top K (``distillation_topk``).

    python -m experiments.bench_topk_loss                  # B=4, T=256, V=49152 (SmolLM2's), H=576, K=20, 2 threads

Measured region, as in the trainer's step: the teacher's output head on its last hidden states (the full-vocabulary
run keeps its ``[B, T, V]`` logits; the top-K run reduces them chunk by chunk, ``sdft.losses.head_top_k``, as
``sdft.speedups.teacher_logits`` does), then the loss (``analytic``, forward KL, ``loss_chunk_size`` positions at a
time) and its backward. The student is either its ``[B, T, V]`` logits (a leaf: TRL's hook path, the logits and
their gradient whole) or its hidden states and output head (``sdft.losses.head_token_terms``: the fused head).
Every variant runs in its own process; peak memory is the process's peak RSS during the region above its RSS
before it (``VmHWM`` reset through ``/proc/self/clear_refs``), so the inputs (hidden states, weights, the student's
logits) are not counted. Random float32 inputs; times are the best and the median of all runs (``--reps`` per
process, ``--rounds`` processes per variant, the variants alternating): on a shared machine the best is the one to
compare.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from sdft.losses import head_token_terms, head_top_k, loss_from_terms, token_terms


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(key)


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def run_variant(student: str, k: int, args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    B, T, V, H = args.batch, args.length, args.vocab, args.hidden
    t_hidden = torch.randn(B, T, H)
    t_weight = torch.randn(V, H) / H ** 0.5
    s_hidden = torch.randn(B, T, H)
    s_weight = (t_weight + 0.1 * torch.randn(V, H) / H ** 0.5).requires_grad_(True)
    ids = torch.randint(0, V, (B, T))
    mask = torch.ones(B, T)
    s_logits = torch.nn.functional.linear(s_hidden, s_weight.detach()) if student == "logits" else None

    def step():
        with torch.no_grad():  # the teacher: a constant
            teacher = (head_top_k(t_hidden, t_weight, None, k, ids, args.chunk) if k
                       else torch.nn.functional.linear(t_hidden, t_weight))
        if student == "logits":
            leaf = s_logits.detach().requires_grad_(True)
            div, s_tok, t_tok = token_terms(leaf, teacher, ids, "forward", args.chunk)
        else:
            div, s_tok, t_tok = head_token_terms(s_hidden, s_weight, None, teacher, ids, "forward",
                                                 chunk_size=args.chunk)
        loss = loss_from_terms(div, s_tok, t_tok, mask)
        loss.backward()
        s_weight.grad = None
        return loss.item()

    step()  # warm-up
    times, peaks = [], []
    for _ in range(args.reps):
        before = _status_mb("VmRSS")
        _reset_peak()
        t0 = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t0)
        peaks.append(_status_mb("VmHWM") - before)
    return {"student": student, "k": k, "loss": loss, "times": times, "peak_mb": max(peaks)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--length", type=int, default=256)
    p.add_argument("--vocab", type=int, default=49152)
    p.add_argument("--hidden", type=int, default=576)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--chunk", type=int, default=64)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=1, help="repeat the four variants in turn (shared machines)")
    p.add_argument("--variant", help=argparse.SUPPRESS)  # "<student>:<k>", run in this process
    args = p.parse_args(argv)
    if args.variant:
        student, k = args.variant.split(":")
        print(json.dumps(run_variant(student, int(k), args)))
        return
    passed = list(argv if argv is not None else sys.argv[1:])
    results: dict[tuple[str, int], list[dict]] = {}
    for _ in range(args.rounds):  # alternating, so that a changing load affects every variant alike
        for student in ("logits", "head"):
            for k in (0, args.k):
                out = subprocess.run([sys.executable, "-m", "experiments.bench_topk_loss", *passed,
                                      "--variant", f"{student}:{k}"], capture_output=True, text=True, check=True)
                results.setdefault((student, k), []).append(json.loads(out.stdout.strip().splitlines()[-1]))
    rows = [{"student": s_, "k": k_, "best": min(t for r in rs for t in r["times"]),
             "median": statistics.median(t for r in rs for t in r["times"]),
             "peak_mb": [round(r["peak_mb"]) for r in rs]} for (s_, k_), rs in results.items()]
    print(f"B={args.batch} T={args.length} V={args.vocab} H={args.hidden} chunk={args.chunk} "
          f"threads={args.threads}, {args.reps} runs per process, {args.rounds} round(s)")
    print("| student | teacher | teacher head + loss + backward, s: best (median) | peak memory above inputs, MB "
          "(per round) |")
    print("|---|---|---|---|")
    for r in rows:
        teacher = "full vocabulary" if r["k"] == 0 else f"top {r['k']} + tail"
        print(f"| {r['student']} | {teacher} | {r['best']:.2f} ({r['median']:.2f}) | "
              f"{', '.join(map(str, r['peak_mb']))} |")


if __name__ == "__main__":
    main()
