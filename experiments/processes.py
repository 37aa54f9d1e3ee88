"""The processes of the local launcher: each run its own process, forked from a server that imported the libraries.

A run in a fresh ``python -m experiments.run_one`` spends about 7 s of CPU importing torch, transformers, TRL,
datasets and lm-eval before its first line of work (``manifest.json``'s ``startup.process_to_run_s``): on 2 cores
that is most of a ``smoke`` run and 10-20 s of every ``mini`` run launched with ``--jobs``. Here a
``multiprocessing`` fork server imports them once (:data:`PRELOAD`), and every run is a fork of it: a process of
its own, as before (its own session, log, environment, thread count and exit status), that starts with the
libraries in memory.

``start(module, argv, log, env, threads)`` runs ``python -m module argv`` that way (``runpy``, as ``-m`` does) and
returns a :class:`Child` with ``subprocess.Popen``'s ``wait`` / ``poll`` / ``send_signal`` / ``returncode``
(negative: killed by that signal). What a forked run does not share with a fresh one: environment variables that a
preloaded library read at import (e.g. ``HF_HUB_OFFLINE``) hold their values from when the server started, the
launcher's first run; the run's own ``env`` is installed in ``os.environ`` for everything read later. The thread
count is set with ``torch.set_num_threads`` (``OMP_NUM_THREADS`` is read once, when torch loads). Set
``SDFT_FRESH_PROCESSES=1`` to start every run as a fresh interpreter instead (``subprocess``).

Threads: the launchers start and wait for runs from several threads. The fork server reports a run's exit status
once, as bytes on a pipe, and ``multiprocessing`` reads them without a lock: from ``join`` and from the check of all
finished children that every ``Process.start`` makes. Two threads reading at once left one with an empty pipe, which
``multiprocessing`` reports as exit status 255 (a finished run shown as "FAILED (exit 255)"; the symptom of CPython
issue 140867). Here every read of a status and every start holds one lock (:data:`_STATUS_LOCK`); waiting for a run
to end only watches its pipe, without reading it.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import runpy
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

# What every run imports before its first line of work, in the order they load (a module missing here is skipped).
PRELOAD = ["torch", "transformers", "datasets", "trl", "lm_eval.evaluator", "sdft.train", "eval.run",
           "experiments.section", "transformers.models.llama.modeling_llama"]

# Held while reading a forked run's exit status and while starting a run (which reads those of finished runs).
_STATUS_LOCK = threading.Lock()


def fresh_processes() -> bool:
    """True when ``SDFT_FRESH_PROCESSES`` asks for a fresh interpreter per run."""
    return os.environ.get("SDFT_FRESH_PROCESSES", "") not in ("", "0")


def _run_module(module: str, argv: list[str], log: str, env: dict[str, str], threads: int,
                own_session: bool, cwd: str | None = None) -> None:
    """The child: ``log`` as stdout and stderr, ``env``, ``threads``, its own session if ``own_session``, ``cwd`` as
    its working directory if given; then ``python -m module``."""
    if own_session:
        os.setsid()
    if cwd is not None:
        os.chdir(cwd)
    # else it stays in the fork server's process group, the launcher's (the server ignores Ctrl-C; the run does not)
    os.environ.clear()
    os.environ.update(env)
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    import torch

    torch.set_num_threads(threads)
    sys.argv = [module, *argv]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


class Child:
    """A run's process forked from the server, with the part of ``subprocess.Popen``'s interface the launchers use."""

    def __init__(self, process):
        self._process = process

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        return self.poll()

    def poll(self) -> int | None:
        with _STATUS_LOCK:
            return self._process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        """The run's exit status once it has ended; ``subprocess.TimeoutExpired`` after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(self._process.name, timeout)
            multiprocessing.connection.wait([self._process.sentinel], left)  # readable once the status is there
        return code

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self._process.pid, signum)


def _context():
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def start(module: str, argv: list[str], log: str | Path, env: dict[str, str], threads: int,
          append: bool = False, own_session: bool = True, cwd: str | Path | None = None) -> Child | subprocess.Popen:
    """Start ``python -m module argv`` with ``env`` and ``threads`` torch threads, its output to ``log`` (truncated
    unless ``append``): forked from the fork server, or a fresh interpreter when ``SDFT_FRESH_PROCESSES`` is set.
    ``own_session``: in a session of its own, so that a Ctrl-C at the terminal reaches it only as the launcher
    passes it on; else in the launcher's process group, which the terminal signals. ``cwd``: its working directory
    (default: the launcher's at this call, as a fresh process's; ``multiprocessing`` sends it with every start).
    Returns an object with ``wait``, ``poll``, ``send_signal`` and ``returncode``."""
    log = Path(log)
    if not append:
        log.write_text("")
    env = {**env, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    if fresh_processes():
        with open(log, "a") as out:
            return subprocess.Popen([sys.executable, "-m", module, *argv], stdout=out, stderr=subprocess.STDOUT,
                                    env=env, start_new_session=own_session, cwd=cwd)
    process = _context().Process(target=_run_module,
                                 args=(module, list(argv), str(log), env, threads, own_session,
                                       None if cwd is None else str(cwd)),
                                 name=f"{module} {' '.join(argv)}", daemon=False)
    with _STATUS_LOCK:
        process.start()
    return Child(process)


def interrupted(code: int | None) -> bool:
    """True when exit status ``code`` is a run's stop on SIGTERM or Ctrl-C (it checkpointed first)."""
    return code in (128 + signal.SIGTERM, 128 + signal.SIGINT)


def run_to_end(module: str, argv: list[str], log: str | Path, env: dict[str, str], threads: int,
               timeout: float | None = None, own_session: bool = True, cwd: str | Path | None = None) -> int:
    """:func:`start`, then wait for the run: its exit status. A run still going after ``timeout`` seconds is killed
    (SIGKILL) and ``subprocess.TimeoutExpired`` raised."""
    child = start(module, argv, log, env, threads, own_session=own_session, cwd=cwd)
    try:
        return child.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.send_signal(signal.SIGKILL)
        child.wait()
        raise
