"""Cost of SDFT against SFT, measured side by side (paper Sec. 5: ~2.5x FLOPs, ~4x wall-clock of SFT).

    python -m experiments.bench_cost                      # mini settings: SmolLM2-135M, batch 4, 128-token rollouts
    python -m experiments.bench_cost --model embedded:tiny-llama --steps 1 --warmup 0   # seconds

Every variant trains in its own subprocess (so that its peak memory is its own, and so that environment
switches such as ``OMP_WAIT_POLICY`` take effect before torch is imported), on the same model, data
(``data_prep.load_task(task, "train")``), seed and batch shape. Variants run in turn, SFT first, and the
sequence repeats ``--rounds`` times: the machine's load (shared cores) then affects them alike. Reported per
variant: the median over rounds of the mean measured step (after ``--warmup`` steps), per-example seconds,
tokens/s, peak memory (CPU: the process's peak RSS during training, ``VmHWM`` after resetting it through
``/proc/self/clear_refs``; GPU: ``torch.cuda.max_memory_allocated``) and the time split of a step, taken by timers
wrapped around the trainer's own methods (no reimplementation):

  generation       ``_generate`` (the on-policy rollouts: HF ``generate`` or vLLM)
  rollout_other    the rest of ``_prepare_training_batch`` (tokenisation, teacher prompts)
  teacher_forward  ``sdft.speedups.teacher_logits`` as the trainer calls it
  student_forward  ``_forward_logits`` on the student, or with the fused head the student's body (SFT:
                   ``compute_loss`` without its loss)
  loss             the rest of ``_sdft_loss`` (SFT: included in ``compute_loss``)
  backward         ``training_step`` minus ``_prepare_inputs`` and ``compute_loss``
  optimizer        from the end of ``training_step`` to ``on_optimizer_step`` (grad clipping + AdamW)
  ema              the EMA teacher callback's ``on_step_end``
  other            step wall-clock minus the above (scheduler, logging, Trainer bookkeeping)

Variants: ``sft``; ``sdft`` with every optimization on; ``sdft-no-<switch>`` with one switched off, for each
``--ablations`` switch (the before/after of each optimization, from the same invocation); ``sdft-trl`` with all of
them off (TRL 1.16's trainer as shipped, our loss); with ``--omp-passive-variant``, ``sft+omp_passive`` and
``sdft+omp_passive`` (``OMP_WAIT_POLICY=PASSIVE``, what ``SDFT_OMP_PASSIVE=1`` sets; every other run has the OpenMP
runtime's default policy); with ``--bf16-variant``, ``sft+bf16`` and ``sdft+bf16`` (``bf16=True``: the forward and
backward in bf16 autocast, float32 weights and optimizer; different numbers, so beside the float32 runs, not
instead of them); with ``--fp32-sampler-variant``, ``sdft+fp32_sampler`` (the sampler copy in float32:
``rollout_dtype="float32"``) and ``sdft+fp32`` (that and the teacher in float32: no bf16 product anywhere); with
``--sft-padding-free-variant``, ``sft-padding_free``: SFT with TRL's ``padding_free`` (a batch's sequences
concatenated into one row, the attention kept within each by its position ids), which computes no padding -- the
counterpart of SDFT's ``sequence_microbatches``, which ``sft`` (TRL's SFT as ``mini`` runs it: each batch padded to
its longest sequence) lacks. The worker refuses it when a record is longer than SFT's
``max_length`` (``padding_free`` does not truncate), so both SFT variants train on the same tokens.

Switches: ``chunked_loss`` (``loss_chunk_size``), ``fused_lm_head``, ``sequence_microbatches``,
``teacher_inference_mode``, ``lean_logits``, ``fused_ema``, ``bf16_rollouts`` (``rollout_dtype="bfloat16"``),
``fast_sampler`` (``fast_rollout_sampler``; acts with ``bf16_rollouts`` only), ``bf16_teacher``
(``teacher_dtype="bfloat16"``) (``SelfDistillationConfig`` fields). ``--threads`` sets ``torch.set_num_threads`` in every run. ``--equal-shape``
gives both methods batches of one shape (see ``equal_shape_records``).

``--start fork`` forks each variant from a server that imported the libraries once
(``experiments.processes``, as the launchers start runs) instead of a fresh interpreter: ~7 s less per variant, for
quick checks (the test suite); its peak RSS then includes the server's preloaded modules (~20 MB more), and a
variant that sets environment variables read when torch loads (``OMP_WAIT_POLICY``, ``--env``) is refused.

Writes ``<out-dir>/bench_cost.{json,md}`` (default ``results/bench``) and, with ``--copy-md``, a copy of the
markdown to a tracked path.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from data_prep.registry import load_task
from sdft.config import build_config
from sdft.config_layers import load_preset
from sdft.prompts import student_messages

SWITCHES = ("chunked_loss", "fused_lm_head", "sequence_microbatches", "teacher_inference_mode",
            "lean_logits", "fused_ema", "bf16_rollouts", "fast_sampler", "bf16_teacher")
SPLIT_KEYS = ("generation", "rollout_other", "teacher_forward", "student_forward", "loss", "backward", "optimizer",
              "ema", "other")


def _args_for(switches: dict[str, bool], chunk: int) -> dict:
    return {
        "loss_chunk_size": chunk if switches["chunked_loss"] else 0,
        "teacher_inference_mode": switches["teacher_inference_mode"],
        "lean_logits": switches["lean_logits"],
        "fused_lm_head": switches["fused_lm_head"],
        "sequence_microbatches": switches["sequence_microbatches"],
        "fused_ema": switches["fused_ema"],
        "rollout_dtype": "bfloat16" if switches["bf16_rollouts"] else None,
        "fast_rollout_sampler": switches["fast_sampler"],
        "teacher_dtype": "bfloat16" if switches["bf16_teacher"] else None,
    }


def equal_shape_records(records: list[dict], tokenizer, n_tokens: int) -> list[dict]:
    """Each demonstration repeated and cut to ``n_tokens`` tokens, so that SFT trains on completions as long as
    SDFT's rollouts (which ``--equal-shape`` forces to exactly ``n_tokens`` with ``min_new_tokens``); the teacher of
    SDFT sees the same lengthened demonstrations. Both methods then train on batches of the same shape."""
    out = []
    for r in records:
        ids = tokenizer(r["demonstration"], add_special_tokens=False)["input_ids"]
        reps = -(-n_tokens // max(len(ids), 1))
        out.append({**r, "demonstration": tokenizer.decode((ids * reps)[:n_tokens])})
    return out


# ------------------------------------------------------------------------------------------------ worker
def _read_status(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return float(line.split()[1]) / 1024.0  # kB -> MiB
    return float("nan")


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def worker(spec: dict) -> dict:
    import torch
    from transformers import TrainerCallback

    cuda = torch.cuda.is_available()
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])

    def sync():
        if cuda:
            torch.cuda.synchronize()

    records = load_task(spec["task"], "train")
    trainer_args = dict(spec.get("trainer_args") or {})
    if spec.get("equal_shape"):
        from sdft.models import load_tokenizer

        records = equal_shape_records(records, load_tokenizer(spec["model"]), spec["max_completion_length"])
        trainer_args["generation_kwargs"] = {"min_new_tokens": spec["max_completion_length"]}
    tmp = tempfile.mkdtemp(prefix="bench_cost_")
    total_steps = spec["warmup"] + spec["steps"]
    if spec["method"] == "sft":  # SFT's sequence limit: the mini SDFT runs' prompt limit + the completion length
        prompt_limit = load_preset("mini")["methods"]["sdft"]["max_prompt_length"]
        lengths = {"max_length": prompt_limit + spec["max_completion_length"]}
        if spec.get("padding_free"):  # TRL refuses a max_length it would not enforce: check it here instead
            _check_within(records, spec["model"], lengths["max_length"])
            lengths = {"max_length": None, "padding_free": True}
    else:
        lengths = {"max_completion_length": spec["max_completion_length"]}
    cfg = build_config("mini", spec["method"], overrides=dict(
        model=spec["model"], task=spec["task"], max_steps=total_steps, per_device_train_batch_size=spec["batch_size"],
        gradient_accumulation_steps=spec.get("accumulation", 1),
        output_dir=tmp, save_steps=10 ** 9, save_model=False, n_train=None, logging_steps=1, seed=spec["seed"],
        gradient_checkpointing=spec.get("gradient_checkpointing", False), bf16=spec.get("bf16", False), **lengths,
    ))
    if spec["method"] == "sft":
        from sdft.baselines.sft import build_sft_trainer

        trainer = build_sft_trainer(cfg, records, tmp, callbacks=[])
    else:
        from sdft.self_distillation import build_sdft_trainer

        trainer = build_sdft_trainer(cfg, records, tmp, callbacks=[], args_overrides=trainer_args)

    from transformers.trainer_utils import SaveStrategy

    trainer.args.save_strategy = SaveStrategy.NO  # no checkpoint (the final one would be GBs per run)
    flags = {"bf16": bool(trainer.args.bf16), "padding_free": bool(getattr(trainer.args, "padding_free", False)),
             "rollout_dtype": getattr(trainer.args, "rollout_dtype", None),
             "teacher_dtype": getattr(trainer.args, "teacher_dtype", None)}
    steps: list[dict] = []
    cur: dict = {}
    marks: dict = {}

    def timed(obj, name, key_fn):
        orig = getattr(obj, name)

        def wrapper(*a, **k):
            sync()
            t0 = time.perf_counter()
            try:
                return orig(*a, **k)
            finally:
                sync()
                key = key_fn(*a, **k)
                cur[key] = cur.get(key, 0.0) + time.perf_counter() - t0
                marks["end_" + key] = time.perf_counter()

        setattr(obj, name, wrapper)

    timed(trainer, "training_step", lambda *a, **k: "_training_step")
    timed(trainer, "compute_loss", lambda *a, **k: "_compute_loss")
    timed(trainer, "_prepare_inputs", lambda *a, **k: "_prepare_inputs")
    count_tokens = {}
    if spec["method"] == "sdft":
        teacher = trainer.teacher_model
        timed(trainer, "_generate", lambda *a, **k: "generation")
        timed(trainer, "_prepare_training_batch", lambda *a, **k: "_prepare_training_batch")
        import sdft.trainer as trainer_module

        timed(trainer_module, "teacher_logits", lambda *a, **k: "_teacher_logits")  # the name _sdft_loss calls
        timed(trainer, "_forward_logits", lambda model, *a, **k: "_teacher_forward_logits" if (
            model is teacher and teacher is not trainer.model) else "student_forward")
        # the loss of a batch or a rollout: teacher, student (with the fused head its body; the head inside the
        # loss terms) and the loss terms
        timed(trainer, "_sdft_loss", lambda *a, **k: "_sdft_loss")
        fused = trainer._fused_head_usable(trainer.model)
        import torch as _torch
        timed(trainer.model.model, "forward",
              lambda *a, **k: "_student_body" if _torch.is_grad_enabled() else "_student_body_nograd")
        ema_cb = [cb for cb in trainer.callback_handler.callbacks if type(cb).__name__ in
                  ("FusedEMATeacherCallback", "SyncTeacherModelCallback")]
        for cb in ema_cb:
            timed(cb, "on_step_end", lambda *a, **k: "ema")
        orig_loss = trainer.compute_loss
        orig_prepare = trainer._prepare_inputs

        def prepare_with_count(*a, **k):
            inputs = orig_prepare(*a, **k)
            count_tokens["tokens"] = count_tokens.get("tokens", 0) + int(inputs["prompt_mask"].sum() + inputs["completion_mask"].sum())
            count_tokens["completion_tokens"] = count_tokens.get("completion_tokens", 0) + int(inputs["completion_mask"].sum())
            return inputs

        trainer._prepare_inputs = prepare_with_count
        loss_with_count = orig_loss
    else:
        orig_loss = trainer.compute_loss

        def loss_with_count(model, inputs, *a, **k):
            mask = inputs.get("attention_mask")
            n = int(mask.sum()) if mask is not None else int(inputs["input_ids"].numel())
            count_tokens["tokens"] = count_tokens.get("tokens", 0) + n
            count_tokens["completion_tokens"] = count_tokens.get("completion_tokens", 0) + int((inputs["labels"] != -100).sum())
            count_tokens["computed_tokens"] = count_tokens.get("computed_tokens", 0) + int(inputs["input_ids"].numel())
            return orig_loss(model, inputs, *a, **k)
    trainer.compute_loss = loss_with_count

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            sync()
            cur.clear()
            count_tokens.clear()
            marks.clear()
            marks["begin"] = time.perf_counter()

        def on_optimizer_step(self, args, state, control, **kw):
            sync()
            cur["optimizer"] = time.perf_counter() - marks.get("end__training_step", marks["begin"])

        def on_step_end(self, args, state, control, **kw):  # added last: runs after the EMA callback
            sync()
            total = time.perf_counter() - marks["begin"]
            split = {k: cur.get(k, 0.0) for k in ("generation", "student_forward", "loss", "optimizer", "ema")}
            split["teacher_forward"] = cur.get("_teacher_logits", 0.0) or cur.get("_teacher_forward_logits", 0.0)
            split["rollout_other"] = cur.get("_prepare_training_batch", 0.0) - split["generation"]
            if spec["method"] == "sft":
                split["student_forward"] = cur.get("_compute_loss", 0.0)
                split["rollout_other"] = cur.get("_prepare_inputs", 0.0)
            else:
                split["rollout_other"] += cur.get("_prepare_inputs", 0.0) - cur.get("_prepare_training_batch", 0.0)
            if spec["method"] == "sdft":
                if fused:
                    split["student_forward"] = cur.get("_student_body", 0.0)
                split["loss"] = cur.get("_sdft_loss", 0.0) - split["student_forward"] - split["teacher_forward"]
            losses = cur.get("_compute_loss", 0.0) or cur.get("_sdft_loss", 0.0)  # sequence micro-batches: no compute_loss
            split["backward"] = cur.get("_training_step", 0.0) - cur.get("_prepare_inputs", 0.0) - losses
            split["other"] = total - sum(split[k] for k in SPLIT_KEYS if k != "other")
            steps.append({"total": total, "split": split, **count_tokens})

    trainer.add_callback(StepTimer())
    rss_reset = _reset_peak_rss()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    rss_before = _read_status("VmRSS")
    t0 = time.perf_counter()
    try:
        trainer.train()
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    wall = time.perf_counter() - t0
    measured = steps[spec["warmup"]:] or steps
    mean_total = statistics.mean(s["total"] for s in measured)
    examples = spec["batch_size"] * spec.get("accumulation", 1)  # an optimizer step's
    out = {
        "name": spec["name"], "method": spec["method"], "switches": spec["switches"],
        "trainer_args": spec.get("trainer_args"), "trainer_flags": flags, "steps_measured": len(measured),
        "wall_s": wall,
        "examples_per_step": examples,
        "sec_per_step": mean_total, "sec_per_example": mean_total / examples,
        "step_times": [s["total"] for s in steps],
        "tokens_per_step": statistics.mean(s.get("tokens", 0) for s in measured),
        "completion_tokens_per_step": statistics.mean(s.get("completion_tokens", 0) for s in measured),
        # SFT: the positions its forward computes, padding included (SDFT's student: its tokens, no padding)
        "computed_tokens_per_step": (statistics.mean(s["computed_tokens"] for s in measured)
                                     if all("computed_tokens" in s for s in measured) else None),
        "split": {k: statistics.mean(s["split"][k] for s in measured) for k in SPLIT_KEYS},
        "rss_before_train_mb": rss_before,
        "peak_rss_mb": _read_status("VmHWM") if rss_reset or not cuda else float("nan"),
        "peak_rss_includes_loading": not rss_reset,
        "cuda_max_allocated_mb": torch.cuda.max_memory_allocated() / 2 ** 20 if cuda else None,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "torch_threads": torch.get_num_threads(),
    }
    out["tokens_per_s"] = out["tokens_per_step"] / mean_total
    out["peak_memory_mb"] = out["cuda_max_allocated_mb"] if cuda else out["peak_rss_mb"]
    # a fresh interpreter is the launcher's child; a forked variant is the fork server's
    out["fresh_interpreter"] = os.getppid() == spec.get("launcher_pid")
    return out


def eval_worker(spec: dict) -> dict:
    """Greedy generation throughput through eval.generation (batched vs one prompt at a time) and the embedded
    lm-eval prior suite's wall-clock at a small limit."""
    import torch

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    from eval.generation import generate
    from sdft.models import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(spec["model"])
    convs = [student_messages(r) for r in load_task(spec["task"], "train")[: spec["eval_prompts"]]]
    out: dict = {"n_prompts": len(convs), "max_new_tokens": spec["eval_max_new_tokens"]}
    for bs in (1, spec["eval_batch_size"]):
        t0 = time.perf_counter()
        gens = generate(model, tok, convs, greedy=True, max_new_tokens=spec["eval_max_new_tokens"], batch_size=bs,
                        backend="hf")
        dt = time.perf_counter() - t0
        n = sum(c for per in gens.n_tokens for c in per)
        out[f"greedy_batch{bs}"] = {"wall_s": dt, "generated_tokens": n, "tokens_per_s": n / dt}
    if spec["eval_limit"] > 0:
        from eval.prior import evaluate_prior

        t0 = time.perf_counter()
        res = evaluate_prior(model, tok, suite="embedded", limit=spec["eval_limit"], punkt_fallback=True)
        out["prior_suite"] = {"suite": "embedded", "limit": spec["eval_limit"], "wall_s": time.perf_counter() - t0,
                              "benchmarks": sorted(res["benchmarks"]), "skipped": sorted(res["skipped"])}
    del torch
    return out


# ------------------------------------------------------------------------------------------------ parent
def _run_child(kind: str, spec: dict, env_extra: dict, timeout: int, start: str = "fresh") -> dict:
    """Run one variant (``kind``: worker or eval-worker) in a process of its own and return its result: a fresh
    interpreter, or with ``start="fork"`` a fork of the preloaded server (``experiments.processes``)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "SDFT_OMP_PASSIVE")}
    env.update(env_extra)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({**spec, "launcher_pid": os.getpid()}, f)
    out_path = f.name + ".out"
    argv = [f"--{kind}", f.name, "--result", out_path]
    if start == "fresh":
        proc = subprocess.run([sys.executable, "-m", "experiments.bench_cost", *argv], env=env, cwd=root,
                              capture_output=True, text=True, timeout=timeout)
        code, output = proc.returncode, proc.stdout[-2000:] + "\n" + proc.stderr[-4000:]
    else:
        from experiments.processes import run_to_end

        if env_extra:
            raise SystemExit(f"error: variant {spec.get('name')!r} sets {sorted(env_extra)}, read when torch loads: "
                             "a forked variant would not see them; use --start fresh")
        log = Path(f.name + ".log")
        code = run_to_end("experiments.bench_cost", argv, log, env, spec.get("threads") or os.cpu_count() or 1,
                          timeout=timeout, own_session=False)
        output = log.read_text()[-6000:]
    if code != 0:
        raise RuntimeError(f"{kind} {spec.get('name')} failed (exit {code}):\n{output}")
    return json.loads(Path(out_path).read_text())


def _check_within(records: list[dict], model: str, max_length: int) -> None:
    """Raise unless every record's SFT conversation (student prompt + demonstration, chat template) fits in
    ``max_length`` tokens: then SFT with and without padding train on the same tokens."""
    from sdft.baselines.sft import sft_examples
    from sdft.models import load_tokenizer

    tok = load_tokenizer(model)
    for i, ex in enumerate(sft_examples(records)):
        n = len(tok.apply_chat_template(ex["prompt"] + ex["completion"], tokenize=True, return_dict=False))
        if n > max_length:
            raise ValueError(f"sft-padding_free: training record {i} is {n} tokens, over SFT's max_length "
                             f"{max_length}; padding_free does not truncate, so the two SFT variants would differ")


def _variants(ablations: list[str], trl_baseline: bool, gradient_checkpointing: bool = False,
              omp_passive: bool = False, sft_padding_free: bool = False,
              bf16: bool = False, fp32_sampler: bool = False) -> list[tuple[str, str, dict, dict]]:
    """(name, method, switches, extra environment) of every variant, in running order."""
    on = {s: True for s in SWITCHES}
    out = [("sft", "sft", on, {})]
    if sft_padding_free:
        out.append(("sft-padding_free", "sft", on, {}))
    out.append(("sdft", "sdft", on, {}))
    for s in ablations:
        out.append((f"sdft-no-{s}", "sdft", {**on, s: False}, {}))
    if trl_baseline:
        out.append(("sdft-trl", "sdft", {s: False for s in SWITCHES}, {}))
    if omp_passive:
        passive = {"OMP_WAIT_POLICY": "PASSIVE"}
        out += [("sft+omp_passive", "sft", on, passive), ("sdft+omp_passive", "sdft", on, passive)]
    if gradient_checkpointing:  # a memory-for-time trade, not a free optimization: reported beside, not in "sdft"
        out.append(("sdft+gradient_checkpointing", "sdft", on, {}))
    if bf16:  # changes the numbers (bf16 autocast): reported beside, not in "sft" / "sdft"
        out += [("sft+bf16", "sft", on, {}), ("sdft+bf16", "sdft", on, {})]
    if fp32_sampler:  # other numbers too (float32 rollouts / teacher): for CPUs without native bf16 products
        out += [("sdft+fp32_sampler", "sdft", on, {}), ("sdft+fp32", "sdft", {**on, "bf16_teacher": False}, {})]
    return out


def _variant_args(name: str, switches: dict[str, bool], chunk: int) -> dict:
    """The trainer arguments of variant ``name``: its switches', and for the ``+fp32`` variants the sampler copy in
    float32 (``rollout_dtype="float32"``: the fast sampler's loop, no bf16 products)."""
    out = _args_for(switches, chunk)
    if name in ("sdft+fp32_sampler", "sdft+fp32"):
        out["rollout_dtype"] = "float32"
    return out


def _median_variant(runs: list[dict]) -> dict:
    """The run whose per-example time is the median (its own split and memory), with every round's values."""
    ordered = sorted(runs, key=lambda r: r["sec_per_example"])
    med = dict(ordered[(len(ordered) - 1) // 2])
    med["rounds"] = [{"sec_per_example": r["sec_per_example"], "peak_memory_mb": r["peak_memory_mb"]} for r in runs]
    med["peak_memory_mb"] = max(r["peak_memory_mb"] for r in runs)
    return med


def _fmt(x, nd=2):
    return "n/a" if x is None or x != x else f"{x:.{nd}f}"


def write_markdown(result: dict) -> str:
    v = {r["name"]: r for r in result["variants"]}
    s = result["settings"]
    lines = [
        "# SDFT vs SFT cost, side by side (`experiments/bench_cost.py`)", "",
        f"Command: `{result['command']}`", "",
        f"Machine: {result['machine']}; torch {result['versions']['torch']}, transformers "
        f"{result['versions']['transformers']}, trl {result['versions']['trl']}; {result['date']}.", "",
        f"Settings: model `{s['model']}`, task `{s['task']}`, batch {s['batch_size']}"
        + (f" x accumulation {s['accumulation']}" if s.get("accumulation", 1) > 1 else "") + ", max completion length "
        f"{s['max_completion_length']}, torch threads {s.get('threads') or 'default'}, extra env {s.get('env') or 'none'}, "
        + ("**equal shape** (demonstrations lengthened to the max completion length, SDFT rollouts forced to it), "
           if s.get("equal_shape") else "the task's own demonstrations, rollouts ending at EOS, ") +
        f"{s['warmup']} warm-up + {s['steps']} measured steps per run, {s['rounds']} "
        f"round(s), variants alternating within each round; median over rounds. Peak memory: "
        f"{'torch.cuda.max_memory_allocated' if result['cuda'] else 'process peak RSS (VmHWM) during training, after model loading; includes both models, optimizer state and the Python/torch runtime'}."
        + (" Each variant forked from a preloaded server (`--start fork`): its peak RSS includes the server's modules."
           if s.get("start") == "fork" else " Each variant a fresh interpreter."), "",
    ]
    if "sft" not in v or "sdft" not in v:  # a partial invocation (--only): the variants alone
        lines += ["| variant | s / example | peak MiB | " + " | ".join(SPLIT_KEYS) + " |",
                  "|---|---|---|" + "---|" * len(SPLIT_KEYS)]
        for r in result["variants"]:
            lines.append(f"| {r['name']} | {_fmt(r['sec_per_example'])} | {_fmt(r['peak_memory_mb'], 0)} | "
                         + " | ".join(_fmt(r["split"][k]) for k in SPLIT_KEYS) + " |")
        return "\n".join(lines + [""])
    a, b = v["sft"], v["sdft"]
    lines += ["## SDFT / SFT (all optimizations on)", "", "| | SFT | SDFT | SDFT / SFT |", "|---|---|---|---|"]
    lines += [
        f"| s / example | {_fmt(a['sec_per_example'])} | {_fmt(b['sec_per_example'])} | **{_fmt(result['ratios']['sec_per_example'])}** |",
        f"| s / step | {_fmt(a['sec_per_step'])} | {_fmt(b['sec_per_step'])} | {_fmt(b['sec_per_step'] / a['sec_per_step'])} |",
        f"| peak memory (MiB) | {_fmt(a['peak_memory_mb'], 0)} | {_fmt(b['peak_memory_mb'], 0)} | **{_fmt(result['ratios']['peak_memory'])}** |",
        f"| training tokens / step (student sequences) | {_fmt(a['tokens_per_step'], 0)} | {_fmt(b['tokens_per_step'], 0)} | |",
        f"| target / completion tokens per step | {_fmt(a['completion_tokens_per_step'], 0)} | {_fmt(b['completion_tokens_per_step'], 0)} | |",
        f"| tokens / s | {_fmt(a['tokens_per_s'], 1)} | {_fmt(b['tokens_per_s'], 1)} | |",
        f"| SFT: positions computed / step (padding included) | {_fmt(a.get('computed_tokens_per_step'), 0)} | | |",
    ]
    if "sec_per_example_vs_sft_padding_free" in result["ratios"]:
        c = v["sft-padding_free"]
        lines += [
            "", "Against SFT without padding (`sft-padding_free`: TRL's `padding_free`; SDFT's student computes no "
            "padding either, `sequence_microbatches`):", "",
            "| | SFT, no padding | SDFT | SDFT / SFT |", "|---|---|---|---|",
            f"| s / example | {_fmt(c['sec_per_example'])} | {_fmt(b['sec_per_example'])} | "
            f"**{_fmt(result['ratios']['sec_per_example_vs_sft_padding_free'])}** |",
            f"| peak memory (MiB) | {_fmt(c['peak_memory_mb'], 0)} | {_fmt(b['peak_memory_mb'], 0)} | "
            f"**{_fmt(result['ratios']['peak_memory_vs_sft_padding_free'])}** |",
            f"| positions computed / step | {_fmt(c.get('computed_tokens_per_step'), 0)} | | |",
        ]
    lines += [
        "",
        "## Every variant (before/after of each optimization: `sdft` vs `sdft-no-<switch>`)", "",
        "| variant | s / example | vs sdft | / sft | peak MiB | completion tokens / step | per-round s / example | "
        + " | ".join(SPLIT_KEYS) + " |",
        "|---|---|---|---|---|---|---|" + "---|" * len(SPLIT_KEYS),
    ]
    for r in result["variants"]:
        rounds = ", ".join(_fmt(x["sec_per_example"]) for x in r["rounds"])
        split = " | ".join(_fmt(r["split"][k]) for k in SPLIT_KEYS)
        lines.append(f"| {r['name']} | {_fmt(r['sec_per_example'])} | {_fmt(r['sec_per_example'] / b['sec_per_example'])}x "
                     f"| {_fmt(r['sec_per_example'] / a['sec_per_example'])}x | {_fmt(r['peak_memory_mb'], 0)} "
                     f"| {_fmt(r['completion_tokens_per_step'], 0)} | {rounds} | {split} |")
    lines += ["", "Split columns are seconds per step (mean over measured steps of the median run). Rollouts are "
              "sampled, so their lengths (completion tokens / step) differ between SDFT variants unless "
              "`--equal-shape` fixes them; generation, student forward and backward scale with them.", ""]
    if result.get("eval"):
        e = result["eval"]
        lines += ["## Evaluation throughput", "",
                  f"Greedy generation through `eval.generation.generate` (HF backend), {e['n_prompts']} prompts, "
                  f"at most {e['max_new_tokens']} new tokens:", "", "| batch size | wall s | generated tokens | tokens / s |",
                  "|---|---|---|---|"]
        for k, g in e.items():
            if k.startswith("greedy_batch"):
                lines.append(f"| {k[len('greedy_batch'):]} | {_fmt(g['wall_s'])} | {g['generated_tokens']} | {_fmt(g['tokens_per_s'], 1)} |")
        if "prior_suite" in e:
            p = e["prior_suite"]
            lines += ["", f"lm-eval embedded prior suite (`eval.prior.evaluate_prior`, limit {p['limit']} per task): "
                      f"{_fmt(p['wall_s'], 1)} s wall-clock ({', '.join(p['benchmarks'])}; skipped: {', '.join(p['skipped']) or 'none'})."]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict | None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="embedded:smollm2-135m-instruct")
    p.add_argument("--task", default="embedded_tool")
    p.add_argument("--steps", type=int, default=3, help="measured steps per run")
    p.add_argument("--warmup", type=int, default=1, help="unmeasured steps first")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--accumulation", type=int, default=1,
                   help="gradient_accumulation_steps: an optimizer step is batch x accumulation examples (SDFT samples "
                        "all of their rollouts at once, TRL's generation batch); the paper's recipe: batch 1 x 32")
    p.add_argument("--max-completion-length", type=int, default=None,
                   help="rollout / completion token limit (default: the mini preset's SDFT value, 64)")
    p.add_argument("--rounds", type=int, default=2, help="times the whole alternating sequence of variants runs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ablations", default=",".join(SWITCHES),
                   help=f"comma-separated switches to turn off one at a time (of {','.join(SWITCHES)}); '' for none")
    p.add_argument("--no-trl-baseline", action="store_true", help="skip the all-switches-off variant")
    p.add_argument("--gradient-checkpointing-variant", action="store_true",
                   help="also run SDFT with gradient checkpointing (less memory, more time)")
    p.add_argument("--omp-passive-variant", action="store_true",
                   help="also run SFT and SDFT with OMP_WAIT_POLICY=PASSIVE (for cores shared with other processes)")
    p.add_argument("--bf16-variant", action="store_true",
                   help="add sft+bf16 and sdft+bf16: training in bf16 autocast (TrainingArguments.bf16; on a CPU, "
                        "torch's CPU autocast), the float32 weights and optimizer kept")
    p.add_argument("--fp32-sampler-variant", action="store_true",
                   help="add sdft+fp32_sampler (the rollouts' sampler copy in float32: rollout_dtype=float32, the fast "
                        "sampler's loop) and sdft+fp32 (that and the teacher in float32 too): SDFT without bf16 "
                        "products, for CPUs that have none in hardware (AVX2: no AVX512-BF16 or AMX)")
    p.add_argument("--sft-padding-free-variant", action="store_true",
                   help="add SFT with TRL's padding_free (no compute on padding; ratios against it reported too)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="environment variable for every child run (e.g. MALLOC_MMAP_THRESHOLD_=1048576)")
    p.add_argument("--only", default=None, help="comma-separated variant names to run (default: all)")
    p.add_argument("--equal-shape", action="store_true",
                   help="same batch shape for both methods: demonstrations lengthened to --max-completion-length "
                        "tokens and SDFT rollouts forced to that length (min_new_tokens)")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads in every run (0: torch's default)")
    p.add_argument("--chunk-size", type=int, default=64, help="loss_chunk_size when chunked_loss is on")
    p.add_argument("--eval-limit", type=int, default=8, help="lm-eval samples per embedded task; 0 skips the suite")
    p.add_argument("--eval-prompts", type=int, default=16)
    p.add_argument("--eval-max-new-tokens", type=int, default=64)
    p.add_argument("--eval-batch-size", type=int, default=8)
    p.add_argument("--no-eval", action="store_true")
    p.add_argument("--out-dir", default="results/bench")
    p.add_argument("--copy-md", default=None, help="also write the markdown here (a tracked path)")
    p.add_argument("--timeout", type=int, default=3600, help="seconds per child run")
    p.add_argument("--start", choices=("fresh", "fork"), default="fresh",
                   help="each variant a fresh interpreter (default; what committed benchmarks use) or forked from a "
                        "preloaded server (quicker; peak RSS includes its modules, no import-time env switches)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--eval-worker", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.max_completion_length is None:  # what a `mini` run samples
        args.max_completion_length = load_preset("mini")["methods"]["sdft"]["max_completion_length"]

    if args.worker or args.eval_worker:
        spec = json.loads(Path(args.worker or args.eval_worker).read_text())
        res = worker(spec) if args.worker else eval_worker(spec)
        Path(args.result).write_text(json.dumps(res))
        return None

    ablations = [a for a in args.ablations.split(",") if a]
    unknown = set(ablations) - set(SWITCHES)
    if unknown:
        p.error(f"unknown switches {sorted(unknown)}; known: {SWITCHES}")
    command = "python -m experiments.bench_cost " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    variants = _variants(ablations, not args.no_trl_baseline, args.gradient_checkpointing_variant,
                         args.omp_passive_variant, args.sft_padding_free_variant, args.bf16_variant,
                         args.fp32_sampler_variant)
    if args.only:
        keep = set(args.only.split(","))
        variants = [v for v in variants if v[0] in keep]
    runs: dict[str, list[dict]] = {name: [] for name, *_ in variants}
    load_at_start = os.getloadavg()[0]  # other work on the machine shows up here
    base = dict(model=args.model, task=args.task, steps=args.steps, warmup=args.warmup, batch_size=args.batch_size,
                accumulation=args.accumulation,
                max_completion_length=args.max_completion_length, seed=args.seed, threads=args.threads,
                equal_shape=args.equal_shape)
    for rnd in range(args.rounds):
        for name, method, switches, variant_env in variants:
            spec = {**base, "name": name, "method": method, "switches": switches,
                    "trainer_args": _variant_args(name, switches, args.chunk_size),
                    "gradient_checkpointing": name.endswith("+gradient_checkpointing"),
                    "padding_free": name == "sft-padding_free", "bf16": name.endswith("+bf16")}
            env = {**dict(kv.split("=", 1) for kv in args.env), **variant_env}
            res = _run_child("worker", spec, env, args.timeout, args.start)
            runs[name].append(res)
            print(f"[bench_cost] round {rnd + 1}/{args.rounds} {name}: {res['sec_per_example']:.3f} s/example, "
                  f"peak {res['peak_memory_mb']:.0f} MiB, split " +
                  ", ".join(f"{k} {res['split'][k]:.2f}" for k in SPLIT_KEYS), flush=True)

    import torch
    import transformers
    import trl

    result = {
        "command": command, "settings": {**base, "rounds": args.rounds, "chunk_size": args.chunk_size, "env": args.env,
                                         "start": args.start},
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "cuda": torch.cuda.is_available(),
        "machine": (torch.cuda.get_device_name(0) if torch.cuda.is_available()
                    else f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, 1-minute load "
                         f"average {load_at_start:.2f} when the invocation started"),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__},
        "variants": [_median_variant(runs[name]) for name, *_ in variants],
    }
    v = {r["name"]: r for r in result["variants"]}
    result["ratios"] = {}
    if "sdft" in v and "sft" in v:
        result["ratios"] = {"sec_per_example": v["sdft"]["sec_per_example"] / v["sft"]["sec_per_example"],
                            "peak_memory": v["sdft"]["peak_memory_mb"] / v["sft"]["peak_memory_mb"]}
    if "sdft" in v and "sft-padding_free" in v:
        result["ratios"]["sec_per_example_vs_sft_padding_free"] = (v["sdft"]["sec_per_example"]
                                                                  / v["sft-padding_free"]["sec_per_example"])
        result["ratios"]["peak_memory_vs_sft_padding_free"] = (v["sdft"]["peak_memory_mb"]
                                                              / v["sft-padding_free"]["peak_memory_mb"])
    if "sdft-trl" in v and "sft" in v:
        result["ratios"]["trl_sec_per_example"] = v["sdft-trl"]["sec_per_example"] / v["sft"]["sec_per_example"]
        result["ratios"]["trl_peak_memory"] = v["sdft-trl"]["peak_memory_mb"] / v["sft"]["peak_memory_mb"]
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_cost.json").write_text(json.dumps(result, indent=2))  # training part, in case evaluation fails
    if not args.no_eval:
        result["eval"] = _run_child("eval-worker", {**base, "eval_limit": args.eval_limit, "eval_prompts": args.eval_prompts,
                                                     "eval_max_new_tokens": args.eval_max_new_tokens,
                                                     "eval_batch_size": args.eval_batch_size}, {}, args.timeout,
                                    args.start)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_cost.json").write_text(json.dumps(result, indent=2))
    md = write_markdown(result)
    (out / "bench_cost.md").write_text(md)
    if args.copy_md:
        Path(args.copy_md).parent.mkdir(parents=True, exist_ok=True)
        Path(args.copy_md).write_text(md)
    print(md)
    return result


if __name__ == "__main__":
    main()
