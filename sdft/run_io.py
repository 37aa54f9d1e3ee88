"""The run directory every method writes.

    <run_dir>/config.yaml     the resolved RunConfig
    <run_dir>/config.lock.json  the fingerprint of the config that produced the directory (sdft.run_dir)
    <run_dir>/manifest.json   git commit, package versions, seed, command, start/end time, the start-up's seconds
                              (``startup``, sdft.timing), what ran;
                              ``created_by: sdft.train`` marks a directory that ``--force`` may delete
    <run_dir>/.lock           pid, host and start time of the run writing the directory (sdft.run_dir)
    <run_dir>/metrics.jsonl   one JSON object per Trainer log line (a step's line: its phases' seconds, time/*,
                              sdft.timing)
    <run_dir>/splits.json     the ids of the records each split used
    <run_dir>/model/          the trained model and tokenizer (save_model=True); of a LoRA run (use_peft) the
                              adapter, with model_merged/ beside it under merge=true (sdft.adapters)
    <run_dir>/checkpoints/    resumable Trainer checkpoints (student, teacher, optimizer, scheduler, RNG), each
                              complete once its sdft_complete.json is written (sdft.checkpoints)
    <run_dir>/selection/      step<S>.json: the validation evaluation of step S, with its seconds (sdft.selection)

Every file is written whole or not at all (:func:`write_text_atomic`: a temporary file in the same folder, then
``os.replace`` puts it in place, so a reader, or a run killed mid-write, sees the old file or the new one, never a
truncated one), and read back with errors that name the file (:func:`read_json`: :class:`InvalidJSONFile`).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from sdft.errors import ConfigError, UserError

PACKAGES = ("torch", "transformers", "trl", "datasets", "accelerate", "peft", "lm-eval", "vllm", "openai")
_SECRET_MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD")
SELECTION_DIR = "selection"


def git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parents[1]
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def apply_thread_setting() -> None:
    """``SDFT_NUM_THREADS``, when set and there is no GPU: ``torch.set_num_threads`` for this process, before a run
    trains or evaluates. Thread counts change float32 and bf16 reduction order, so ``SDFT_NUM_THREADS=1`` makes a run
    compute as the committed ``mini`` runs did whatever the core count and ``--jobs``; on CPU cores shared with
    other jobs, fewer threads than cores can also be much faster (experiments/bench_cost.py)."""
    value = os.environ.get("SDFT_NUM_THREADS", "").strip()
    if not value:
        return
    if not value.isdigit() or int(value) < 1:
        from sdft.errors import ConfigError

        raise ConfigError(f"environment variable SDFT_NUM_THREADS={value!r}: expected a whole number of threads, "
                          "1 or more")
    import torch

    if not torch.cuda.is_available():
        torch.set_num_threads(int(value))


def _cpu_info() -> tuple[str | None, set[str]]:
    """The processor's name and feature flags from ``/proc/cpuinfo`` (None and no flags where it cannot be read)."""
    model, flags = None, set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model is None:
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return model, flags


def bf16_matmul_in_hardware() -> bool | None:
    """Whether this CPU has bf16 dot-product instructions (``avx512_bf16`` or AMX's ``amx_bf16``); None where its
    flags cannot be read. Without them torch multiplies bf16 matrices several times slower than float32
    (``experiments/results/bench_cost_cpu_avx2.md``: an AVX2 processor), so the ``mini`` preset's bf16 sampler and
    teacher, a speed-up where these instructions exist, cost time there."""
    return _bf16_dot_products(_cpu_info()[1])


def _bf16_dot_products(flags: set[str]) -> bool | None:
    return bool(flags & {"avx512_bf16", "amx_bf16"}) if flags else None


def cpu_description() -> dict[str, Any]:
    """The processor and the vector instructions torch dispatches to (``AVX512``, ``AVX2``, ...), whether it has
    AMX bf16 units and bf16 dot products at all (``bf16_matmul``: :func:`bf16_matmul_in_hardware`): low-precision
    kernels round differently across them, so a bf16 sampler or teacher (the ``mini`` preset's) can take another
    trajectory on another processor even with the same seed (README, determinism). And the number of threads torch
    computes with (``torch_threads``): it changes float32 reduction order, so the same run on 1 and on 2 threads
    differs in the last digits, and a chaotic run (SDFT at 135M) can take another path."""
    import torch

    model, flags = _cpu_info()
    return {"model": model or platform.processor() or None, "torch_capability": torch.backends.cpu.get_cpu_capability(),
            "amx_bf16": "amx_bf16" in flags, "bf16_matmul": _bf16_dot_products(flags),
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


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


class InvalidJSONFile(UserError, ValueError):
    """A results file that cannot be read as JSON (truncated by an interrupted write of older code, edited, ...)."""

    def __init__(self, path: str | Path, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{self.path}: not valid JSON ({reason}); delete or move it to evaluate this run again")


def read_json(path: str | Path) -> Any:
    """The JSON content of ``path``; :class:`InvalidJSONFile` naming it when it is not valid JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InvalidJSONFile(path, str(err)) from None


def read_json_or_none(path: str | Path) -> Any:
    """The JSON content of ``path``; ``None`` when it is absent or not JSON (:func:`read_json` raises)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def read_yaml(path: str | Path) -> Any:
    """The YAML content of ``path``; a file that is missing, not UTF-8 or not YAML is a ``ConfigError`` naming the
    file, and the line and column of a syntax error."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot be read ({err})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        what = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"{path}: {where}not valid YAML ({what})") from None


def command_line(argv: list[str] | None = None) -> list[str]:
    """How this process was started, as a user would type it again: ``python -m sdft.train ...`` for a module run
    with ``-m`` (``sys.argv[0]`` is then the module's file path), with secret values redacted."""
    argv = sys.argv if argv is None else argv
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    name = getattr(spec, "name", None)
    head = ["python", "-m", name.removesuffix(".__main__")] if name and name != "__main__" else argv[:1]
    return redact_command(head + list(argv[1:]))


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
            "command": command_line(),
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
        self.t0 = time.time()  # POSIX time of ``started``; ``wall_clock_s`` counts from here
        self.write()

    def update(self, **values: Any) -> None:
        self.data.update(values)
        self.write()

    def finish(self, status: str = "completed", **values: Any) -> None:
        self.update(status=status, finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    wall_clock_s=round(time.time() - self.t0, 2), **values)

    def write(self) -> None:
        write_json_atomic(self.path, self.data)


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def read_step_files(run_dir: str | Path) -> dict[int, dict]:
    """step -> the content of ``<run_dir>/selection/step<S>.json`` (files that are not valid JSON raise, naming
    the file)."""
    out = {}
    for path in Path(run_dir, SELECTION_DIR).glob("step*.json"):
        try:
            step = int(path.stem[4:])
        except ValueError:
            continue
        out[step] = read_json(path)
    return dict(sorted(out.items()))
