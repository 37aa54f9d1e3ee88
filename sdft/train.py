"""Train one method on one task and write its run directory.

    python -m sdft.train --method sdft --task embedded_tool --preset mini --output-dir runs/x [key=value ...]
    python -m sdft.train --config experiments/recipes/qwen2.5-7b-instruct/sdft_science.yaml --preset paper
    python -m sdft.train --method sft --help-config      # every key of that method, with its default and meaning

Any field of the method's configs is a key, as ``key=value`` (YAML value) or ``--key value`` (see
``sdft.config``). A run whose directory holds checkpoints resumes from the last one; a completed run is skipped
unless ``--force``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from sdft.config import PRESETS, RunConfig, build_config, describe_fields, parse_overrides, parser_for
from sdft.registry import get_method
from sdft.run_io import RunManifest

# the options read before the method's parser is built (everything else goes to it)
_PRE_OPTIONS = ("method", "task", "model", "preset", "output_dir", "config", "seed")


def last_checkpoint(run_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    folder = run_dir / "checkpoints"
    return get_last_checkpoint(str(folder)) if folder.is_dir() else None


def load_train_records(cfg: RunConfig, report=None) -> list[dict]:
    from data_prep import load_task

    return load_task(cfg.task, "train", seed=cfg.seed, n=cfg.n_train, data_dir=cfg.data_dir,
                     skip_invalid=cfg.skip_invalid, report=report)


def run_training(cfg: RunConfig, force: bool = False) -> Path:
    """Train ``cfg.method`` and write the run directory (on the main process only); return its path."""
    from accelerate import PartialState

    main_process = PartialState().is_main_process
    method = get_method(cfg.method)
    if method.train is None:
        raise ValueError(f"method {cfg.method!r} is evaluated only; it has nothing to train")
    run_dir = Path(cfg.output_dir)
    manifest_path = run_dir / "manifest.json"
    if manifest_path.exists() and not force:
        status = json.loads(manifest_path.read_text()).get("status")
        if status == "completed" and (run_dir / "model").exists():
            print(f"[sdft.train] {run_dir} is complete; skipping (use --force to retrain)", flush=True)
            return run_dir
    if force and run_dir.exists() and main_process:
        shutil.rmtree(run_dir)
    from data_prep.schema import SplitReport

    data_report = SplitReport()  # skipped / de-duplicated counts, for splits.json and the manifest
    records = load_train_records(cfg, data_report)
    resume = last_checkpoint(run_dir)
    manifest = None
    if main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg.save(run_dir / "config.yaml")
        (run_dir / "splits.json").write_text(
            json.dumps({"task": cfg.task, "train": [r["id"] for r in records], "data": data_report.to_dict()}, indent=1))
        manifest = RunManifest(run_dir, cfg.to_dict(), extra={
            "divergence": getattr(cfg, "divergence", None) if method.distils else None,
            "teacher_template": getattr(cfg, "teacher_template", None),
            "n_train_records": len(records), "resumed_from": resume, "data": data_report.to_dict(),
        })
    print(f"[sdft.train] {cfg.method} on {cfg.task} ({len(records)} records), model {cfg.model}, "
          f"preset {cfg.preset} -> {run_dir}" + (f" (resuming from {resume})" if resume else ""), flush=True)
    t0 = time.time()
    try:
        trainer, info = method.train(cfg, records, run_dir, resume_from_checkpoint=resume)
    except BaseException as err:
        if manifest is not None:
            manifest.finish(status="failed", error=f"{type(err).__name__}: {err}")
        raise
    if cfg.save_model:
        trainer.save_model(str(run_dir / "model"))  # gathers ZeRO-3 / FSDP shards; writes on the main process
    if manifest is not None:
        manifest.finish(status="completed", train_seconds=round(time.time() - t0, 2), **(info or {}))
        if cfg.save_model and not cfg.keep_checkpoints and (run_dir / "checkpoints").is_dir():
            shutil.rmtree(run_dir / "checkpoints")  # resume points are not needed once model/ is written
    print(f"[sdft.train] done in {time.time() - t0:.1f}s: {run_dir}", flush=True)
    return run_dir


def split_argv(argv: list[str]) -> tuple[argparse.Namespace, dict, list[str]]:
    """(the options read first, the ``key=value`` overrides, the ``--key value`` tokens for the method's parser)."""
    pre = argparse.ArgumentParser(add_help=False)
    for name in _PRE_OPTIONS:
        pre.add_argument(f"--{name}", f"--{name.replace('_', '-')}", dest=name)
    pre.add_argument("--force", action="store_true")
    pre.add_argument("--help-config", "--help_config", dest="help_config", action="store_true")
    pre.add_argument("-h", "--help", action="store_true")
    args, rest = pre.parse_known_args(argv)
    pairs = [a for a in rest if "=" in a and not a.startswith("-")]
    tokens = [a for a in rest if a not in pairs]
    return args, parse_overrides(pairs), tokens


def main(argv: list[str] | None = None) -> Path | None:
    argv = sys.argv[1:] if argv is None else list(argv)
    args, overrides, tokens = split_argv(argv)
    if args.preset is not None and args.preset not in PRESETS:
        raise SystemExit(f"error: --preset must be one of {PRESETS}, got {args.preset!r}")
    method = args.method or overrides.get("method")
    if args.help or args.help_config:
        name = method or "sdft"
        if args.help:
            print(__doc__)
            parser_for(name).print_help()
        else:
            print(describe_fields(name))
        return None
    for key in ("task", "model", "seed", "output_dir"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    try:
        cfg = build_config(args.preset, method, args.config, overrides, argv=tokens)
    except (ValueError, KeyError) as err:
        raise SystemExit(f"error: {err}") from None
    return run_training(cfg, force=args.force)


if __name__ == "__main__":
    main(sys.argv[1:])
