"""The run directory every method writes.

    <run_dir>/config.yaml     the resolved RunConfig
    <run_dir>/config.lock.json  the fingerprint of the config that produced the directory (sdft.run_dir)
    <run_dir>/manifest.json   git commit, package versions, seed, command, start/end time, what ran;
                              ``created_by: sdft.train`` marks a directory that ``--force`` may delete
    <run_dir>/.lock           pid, host and start time of the run writing the directory (sdft.run_dir)
    <run_dir>/metrics.jsonl   one JSON object per Trainer log line
    <run_dir>/splits.json     the ids of the records each split used
    <run_dir>/model/          the trained model and tokenizer (save_model=True); of a LoRA run (use_peft) the
                              adapter, with model_merged/ beside it under merge=true (sdft.adapters)
    <run_dir>/checkpoints/    resumable Trainer checkpoints (student, teacher, optimizer, scheduler, RNG), each
                              complete once its sdft_complete.json is written (sdft.checkpoints)
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

PACKAGES = ("torch", "transformers", "trl", "datasets", "accelerate", "peft", "lm-eval", "vllm", "openai")
_SECRET_MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD")


def git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parents[1]
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def cpu_description() -> dict[str, Any]:
    """The processor and the vector instructions torch dispatches to (``AVX512``, ``AVX2``, ...) and whether it has
    AMX bf16 units: low-precision kernels round differently across them, so a bf16 sampler or teacher (the ``mini``
    preset's) can take another trajectory on another processor even with the same seed (README, determinism)."""
    import torch

    model, flags = None, ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model is None:
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = line
                break
    except OSError:
        pass
    return {"model": model or platform.processor() or None, "torch_capability": torch.backends.cpu.get_cpu_capability(),
            "amx_bf16": "amx_bf16" in flags.split(), "cuda": torch.cuda.get_device_name() if torch.cuda.is_available()
            else None}


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` so that ``path`` holds either its old content or all of the new, never a part: a temporary file
    in the same folder (fsynced, with the old file's mode) is put in place by ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644  # mkstemp's own mode is 0o600
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | Path, data: Any) -> None:
    """``data`` as indented JSON, through :func:`write_text_atomic`."""
    write_text_atomic(path, json.dumps(data, indent=2, default=str))


def read_json_or_none(path: str | Path) -> Any:
    """The JSON content of ``path``; ``None`` when it is absent or not JSON (``eval.files.read_json`` raises)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def redact_command(argv: list[str]) -> list[str]:
    """The command line with any value of a secret-looking key=value replaced."""
    out = []
    for arg in argv:
        key = arg.split("=", 1)[0].upper()
        out.append(f"{arg.split('=', 1)[0]}=<redacted>" if "=" in arg and any(m in key for m in _SECRET_MARKERS) else arg)
    return out


class RunManifest:
    """Written at the start of a run and completed at its end."""

    def __init__(self, run_dir: str | Path, config: dict[str, Any], extra: dict[str, Any] | None = None):
        self.path = Path(run_dir) / "manifest.json"
        self.data: dict[str, Any] = {
            "command": redact_command(sys.argv),
            "git_commit": git_commit(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpu": cpu_description(),
            "packages": package_versions(),
            "seed": config.get("seed"),
            "method": config.get("method"),
            "task": config.get("task"),
            "model": config.get("model"),
            "preset": config.get("preset"),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "status": "running",
            **(extra or {}),
        }
        self._t0 = time.time()
        self.write()

    def update(self, **values: Any) -> None:
        self.data.update(values)
        self.write()

    def finish(self, status: str = "completed", **values: Any) -> None:
        self.update(status=status, finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    wall_clock_s=round(time.time() - self._t0, 2), **values)

    def write(self) -> None:
        write_json_atomic(self.path, self.data)


class JsonlMetricsCallback(TrainerCallback):
    """Appends every Trainer log (loss, learning rate, distillation loss, ...) to ``metrics.jsonl``."""

    def __init__(self, path: str | Path, stage: str | None = None):
        self.path = Path(path)
        self.stage = stage

    def on_train_begin(self, args, state, control, **kwargs):
        """A resumed run logs again the steps after its checkpoint, so the rows an earlier process wrote for them (it
        was killed before its next checkpoint) are dropped: each is logged once, by the process whose model goes on."""
        if state.global_step == 0 or not state.is_world_process_zero or not self.path.exists():
            return
        rows = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
        kept = [r for r in rows if r.get("stage") != self.stage or r.get("step", 0) <= state.global_step]
        if len(kept) < len(rows):
            write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or not state.is_world_process_zero:
            return
        row = {"step": state.global_step, "epoch": state.epoch, "time": round(time.time(), 3)}
        if self.stage:
            row["stage"] = self.stage
        for k, v in logs.items():
            row[k] = v if not isinstance(v, float) or math.isfinite(v) else str(v)
        with self.path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
