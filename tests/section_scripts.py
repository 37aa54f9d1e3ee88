"""Helpers of the tests that run a section's script (``experiments/run_<name>.sh``) or its paper grid as a dry run,
each as a user would: a subprocess in the checkout, offline."""

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def script_env(**extra: str) -> dict[str, str]:
    """The environment of a section run: this checkout importable, the Hugging Face hub never contacted."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **extra}


def run_script(name: str, *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess:
    """``bash experiments/run_<name>.sh ARGS`` from ``cwd``; its exit status is the caller's to check."""
    return subprocess.run(["bash", str(ROOT / "experiments" / f"run_{name}.sh"), *args], cwd=cwd,
                          env=env or script_env(), capture_output=True, text=True)


def run_ok(name: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    """:func:`run_script`, asserting that it succeeded (the ends of its output in the failure message)."""
    proc = run_script(name, *args, **kwargs)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def paper_dry_run(module: str, *args: str) -> subprocess.CompletedProcess:
    """``python -m experiments.<module> --preset paper --dry-run`` into a results folder that must stay unmade, run
    as the module's ``main(argv)`` in this process (what ``python -m`` calls; the smoke runs test the scripts'
    command line): a subprocess would spend most of its seconds importing torch and transformers."""
    import contextlib
    import importlib
    import io

    results = Path("/nonexistent") / module
    argv = ["--preset", "paper", *args, "--dry-run", "--results-dir", str(results)]
    out, err, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            importlib.import_module(f"experiments.{module}").main(argv)
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    proc = subprocess.CompletedProcess(["python", "-m", f"experiments.{module}", *argv], code, out.getvalue(),
                                       err.getvalue())
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert not results.exists(), f"a dry run made {results}"
    return proc
