"""Train one method on one task and write its run directory.

    python -m sdft.train --method sdft --task embedded_tool --preset mini --output-dir runs/x [key=value ...]

Methods: sdft (ours, the paper's), sft, dft, reinvoke (SFT + re-invoke), cpt, offline_distill,
sft_from_teacher. Any RunConfig key can be set as ``key=value`` (``--help-config`` lists them). A run
whose directory holds checkpoints resumes from the last one; a completed run is skipped unless --force.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

from sdft.config import METHODS, PRESETS, RunConfig, build_config, describe_fields, parse_overrides
from sdft.run_io import RunManifest

# method name -> "module:function"; each function is train(cfg, records, run_dir) -> (model, tokenizer, info)
METHOD_ENTRY_POINTS: dict[str, str] = {
    "sdft": "sdft.trainer:train_sdft",
    "sft": "sdft.baselines.sft:train_sft",
    "dft": "sdft.baselines.sft:train_dft",
    "reinvoke": "sdft.baselines.reinvoke:train_reinvoke",
    "cpt": "sdft.baselines.cpt:train_cpt",
    "offline_distill": "sdft.baselines.offline:train_offline_distill",
    "sft_from_teacher": "sdft.baselines.offline:train_sft_from_teacher",
}


def method_function(method: str) -> Callable[..., Any]:
    if method not in METHOD_ENTRY_POINTS:
        raise ValueError(f"unknown method {method!r}; expected one of {sorted(METHOD_ENTRY_POINTS)}")
    module, func = METHOD_ENTRY_POINTS[method].split(":")
    return getattr(importlib.import_module(module), func)


def last_checkpoint(run_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    folder = run_dir / "checkpoints"
    return get_last_checkpoint(str(folder)) if folder.is_dir() else None


def load_train_records(cfg: RunConfig) -> list[dict]:
    from data_prep import load_task

    return load_task(cfg.task, "train", seed=cfg.seed, n=cfg.n_train, data_dir=cfg.data_dir)


def run_training(cfg: RunConfig, force: bool = False) -> Path:
    """Train ``cfg.method`` and write the run directory; return its path."""
    run_dir = Path(cfg.output_dir)
    manifest_path = run_dir / "manifest.json"
    if manifest_path.exists() and not force:
        status = json.loads(manifest_path.read_text()).get("status")
        if status == "completed" and (run_dir / "model").exists():
            print(f"[sdft.train] {run_dir} is complete; skipping (use --force to retrain)", flush=True)
            return run_dir
    if force and run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(run_dir / "config.yaml")

    records = load_train_records(cfg)
    (run_dir / "splits.json").write_text(json.dumps({"task": cfg.task, "train": [r["id"] for r in records]}, indent=1))
    resume = last_checkpoint(run_dir)
    manifest = RunManifest(run_dir, cfg.to_dict(), extra={
        "divergence": cfg.divergence if cfg.method in ("sdft", "offline_distill", "reinvoke") else None,
        "teacher_template": cfg.teacher_template, "n_train_records": len(records), "resumed_from": resume,
    })
    print(f"[sdft.train] {cfg.method} on {cfg.task} ({len(records)} records), model {cfg.model}, "
          f"preset {cfg.preset} -> {run_dir}" + (f" (resuming from {resume})" if resume else ""), flush=True)
    t0 = time.time()
    try:
        model, tokenizer, info = method_function(cfg.method)(cfg, records, run_dir, resume_from_checkpoint=resume)
    except BaseException as err:
        manifest.finish(status="failed", error=f"{type(err).__name__}: {err}")
        raise
    if cfg.save_model:
        model.save_pretrained(run_dir / "model")
        tokenizer.save_pretrained(run_dir / "model")
    manifest.finish(status="completed", train_seconds=round(time.time() - t0, 2), **(info or {}))
    if cfg.save_model and not cfg.keep_checkpoints and (run_dir / "checkpoints").is_dir():
        shutil.rmtree(run_dir / "checkpoints")  # resume points are not needed once model/ is written
    print(f"[sdft.train] done in {time.time() - t0:.1f}s: {run_dir}", flush=True)
    return run_dir


def main(argv: list[str] | None = None) -> Path | None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", choices=METHODS)
    parser.add_argument("--task")
    parser.add_argument("--model", help="HF id, local path or embedded:NAME")
    parser.add_argument("--preset", choices=PRESETS, default="smoke")
    parser.add_argument("--output-dir")
    parser.add_argument("--config", help="a YAML recipe (experiments/recipes/...)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--force", action="store_true", help="retrain even if the run directory is complete")
    parser.add_argument("--help-config", action="store_true", help="list every config key and exit")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    if args.help_config:
        print(describe_fields())
        return None
    overrides = parse_overrides(args.overrides)
    for key in ("task", "model", "seed"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    if args.output_dir:
        overrides["output_dir"] = args.output_dir
    cfg = build_config(args.preset, args.method, args.config, overrides)
    if not args.output_dir and "output_dir" not in overrides:
        cfg.output_dir = f"runs/{cfg.task}/{cfg.method}/{cfg.preset}-seed{cfg.seed}"
    return run_training(cfg, force=args.force)


if __name__ == "__main__":
    main(sys.argv[1:])
