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


def run_section(name: str, *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None
                ) -> subprocess.CompletedProcess:
    """What ``bash experiments/run_<name>.sh ARGS`` runs, ``python -m experiments.<name> ARGS``, as that module's
    ``main(argv)`` in this process, from ``cwd``, with ``env``'s variables added to the environment while it runs;
    stdout, stderr and the exit status returned as a subprocess's would be.

    Why not a subprocess: a section's launcher starts a fork server that imports torch, transformers and TRL for its
    runs (``experiments.processes``), ~10 s of CPU per script; in this process the server started by an earlier
    test is reused. Each run is still a process of its own, forked from that server, when ``--jobs`` is 2 or more,
    which is why a call that trains must pass it: ``--jobs 1`` would train in this test process. The scripts' own
    command line (the bash wrapper, a fresh interpreter) is tested by ``test_table5_smoke.py`` and
    ``test_figure6.py``."""
    import contextlib
    import importlib
    import io

    script = (ROOT / "experiments" / f"run_{name}.sh").read_text()
    assert f"-m experiments.{name} " in script, f"run_{name}.sh no longer runs experiments.{name}"
    out, err, code = io.StringIO(), io.StringIO(), 0
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    os.environ.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **(env or {})})
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                importlib.import_module(f"experiments.{name}").main(list(args))
            except SystemExit as stop:
                code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
                if not isinstance(stop.code, int) and stop.code is not None:
                    print(stop.code, file=err)  # as the interpreter prints SystemExit's message
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    return subprocess.CompletedProcess(["python", "-m", f"experiments.{name}", *args], code, out.getvalue(),
                                       err.getvalue())


def section_ok(name: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    """:func:`run_section`, asserting that it succeeded (the ends of its output in the failure message)."""
    proc = run_section(name, *args, **kwargs)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def paper_dry_run(module: str, *args: str) -> subprocess.CompletedProcess:
    """``python -m experiments.<module> --preset paper --dry-run`` into a results folder that must stay unmade, run
    in this process (:func:`run_section`)."""
    results = Path("/nonexistent") / module
    proc = section_ok(module, "--preset", "paper", *args, "--dry-run", "--results-dir", str(results))
    assert not results.exists(), f"a dry run made {results}"
    return proc
