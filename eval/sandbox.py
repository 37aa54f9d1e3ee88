"""Run a model-written Python program in a child process that cannot reach the evaluator's secrets.

:func:`run_program` is what the code benchmarks execute candidates with (``eval/lm_eval_tasks/utils.py``: the
embedded ``sdft_code`` task and the paper suite's HumanEval). Each run:

* writes the program to a fresh temporary directory and starts ``python -I`` on it with a minimal
  environment (PATH, HOME and TMPDIR pointing into its working directory), stdin from /dev/null, stdout and
  stderr to anonymous files;
* in its own session / process group, killed as a whole (SIGKILL) at the time-out and again after a normal
  exit, so background processes it started in that group do not outlive it;
* under resource limits set in the child before the program starts (address space, CPU time, file size,
  number of processes when a separate uid is used, no core dumps) and with no_new_privs;
* with the strongest isolation this machine allows, found once by trying each mode (:func:`protections`):

  ``namespaces+uid`` (root and ``unshare`` works): new PID, mount and network namespaces (``unshare --pid
  --mount-proc --net``) and a separate uid with no passwd entry. The program sees only its own processes in
  /proc, has no network (a loopback that is down), sees every existing mount read-only and a private tmpfs
  on /tmp, /var/tmp and /dev/shm; when the namespace's first process exits the kernel kills every process
  left in it.
  ``uid`` (root, no namespaces): the separate uid only (root's /proc/<pid>/environ is not readable by it);
  after each run every process of that uid is killed. Network and the file system are not contained.
  ``userns`` (not root, unprivileged user namespaces allowed): PID and network namespaces in a new user
  namespace mapping the user to itself (no capabilities); the program still runs as the user, so it can read
  and write the user's files.
  ``plain``: none of these; the fresh environment, limits, temporary directory and process group only. The
  program can read ``/proc/<parent pid>/environ`` (the evaluator's secrets) and use the network.

The record of what applied (``protections()``, also in the prior-suite results as ``code_sandbox``) is logged
once. This is not a security boundary against a determined attacker: world-readable files (including this
repository) stay readable, and the kernel is shared. See eval/README.md.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

BOOT = Path(__file__).resolve().parent / "_sandbox_boot.py"
MODES = ("namespaces+uid", "uid", "userns", "plain")
SCRATCH_DIRS = ("/tmp", "/var/tmp", "/dev/shm")
MEMORY_BYTES = 2 << 30
FILE_BYTES = 10 << 20
SCRATCH_BYTES = 64 << 20
NPROC = 64
# A uid/gid no account uses (no passwd entry, no home), one per evaluating process, so that killing "every
# process of the sandbox uid" can only hit this evaluator's own candidates.
SANDBOX_ID_BASE = 1_900_000_000


class SandboxError(RuntimeError):
    """The sandbox could not be set up (not a failing program)."""


@dataclass
class SandboxResult:
    returncode: int | None  # None: killed at the time-out
    timed_out: bool
    stdout: str  # the last few thousand characters
    stderr: str
    mode: str
    setup: dict[str, Any] = field(default_factory=dict)  # what the first stage reported

    @property
    def passed(self) -> bool:
        return not self.timed_out and self.returncode == 0


def sandbox_id() -> int:
    return SANDBOX_ID_BASE + os.getpid()


def _blocked_ancestor(path: str) -> str | None:
    """The first directory above ``path`` that a uid other than its owner and group cannot enter."""
    parts = Path(path).parts
    for i in range(2, len(parts)):
        ancestor = str(Path(*parts[:i]))
        if not os.stat(ancestor).st_mode & 0o001:
            return ancestor
    return None


def _interpreter_dirs(python: str) -> list[str]:
    dirs = {sys.prefix, sys.base_prefix, os.path.dirname(python)}
    dirs |= {os.path.realpath(d) for d in dirs}
    return sorted(d for d in dirs if os.path.isdir(d) and not os.path.islink(d))


def _argv(mode: str, boot: list[str]) -> list[str]:
    unshare = shutil.which("unshare") or "unshare"
    if mode == "namespaces+uid":
        return [unshare, "--fork", "--kill-child", "--pid", "--mount-proc", "--net", "--", *boot]
    if mode == "userns":
        return [unshare, "--map-current-user", "--fork", "--kill-child", "--pid", "--mount-proc", "--net", "--", *boot]
    return boot


def _config(mode: str, python: str, workdir: str, status_fd: int, timeout: float, memory_bytes: int | None,
            file_bytes: int | None) -> dict[str, Any]:
    separate_uid = mode in ("namespaces+uid", "uid")
    dirs = _interpreter_dirs(python)
    cpu = math.ceil(timeout) + 1
    return {
        "program": os.path.join(workdir, "candidate.py"), "workdir": workdir, "python": python,
        "path": os.environ.get("PATH", "/usr/bin:/bin"), "status_fd": status_fd,
        "mounts": mode == "namespaces+uid", "init": mode in ("namespaces+uid", "userns"),
        "uid": sandbox_id() if separate_uid else None, "gid": sandbox_id() if separate_uid else None,
        "scratch": list(SCRATCH_DIRS), "scratch_bytes": SCRATCH_BYTES, "reveal": dirs,
        "hide": sorted({a for d in dirs if (a := _blocked_ancestor(d))}) if separate_uid else [],
        "limits": {"as": memory_bytes, "cpu": [cpu, cpu + 1], "fsize": file_bytes,
                   "nproc": NPROC if separate_uid else None, "core": 0},
    }


def _kill_uid(uid: int) -> None:
    """SIGKILL every process of ``uid`` until none is left (the ``uid`` mode has no PID namespace)."""
    for _ in range(50):
        found = False
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/status") as f:
                    uids = next(line for line in f if line.startswith("Uid:")).split()[1:]
            except (OSError, StopIteration):
                continue
            if str(uid) in uids:
                found = True
                try:
                    os.kill(int(entry), signal.SIGKILL)
                except OSError:
                    pass
        if not found:
            return


def _tail(f, limit: int = 4000) -> str:
    f.seek(0, os.SEEK_END)
    f.seek(max(0, f.tell() - limit))
    return f.read().decode("utf-8", "replace")


_uid_mode_lock = threading.Lock()


def _run(program: str, timeout: float, mode: str, python: str, memory_bytes: int | None,
         file_bytes: int | None) -> SandboxResult:
    with tempfile.TemporaryDirectory(prefix="sdft-sandbox-") as workdir, \
            tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as status:
        with open(os.path.join(workdir, "candidate.py"), "w") as f:
            f.write(program)
        cfg = _config(mode, python, workdir, status.fileno(), timeout, memory_bytes, file_bytes)
        argv = _argv(mode, [python, "-I", str(BOOT), json.dumps(cfg)])
        lock = _uid_mode_lock if mode == "uid" else contextlib.nullcontext()
        with lock:
            proc = subprocess.Popen(argv, cwd=workdir, env={"PATH": cfg["path"]}, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=err, pass_fds=(status.fileno(),), start_new_session=True)
            try:
                proc.wait(timeout=timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            proc.wait()
            if mode == "uid":
                _kill_uid(cfg["uid"])
        status.seek(0)
        line = status.read().decode("utf-8", "replace").strip()
        setup = json.loads(line) if line else {}
        result = SandboxResult(None if timed_out else proc.returncode, timed_out, _tail(out), _tail(err), mode, setup)
    if not setup.get("ok") and not timed_out:
        raise SandboxError(f"sandbox mode {mode!r} did not start the program (exit {proc.returncode}): "
                           f"{result.stderr.strip()[-1000:]}")
    return result


_probe_lock = threading.Lock()
_protections: dict[str, Any] | None = None


def _describe(mode: str, unavailable: dict[str, str], setup: dict[str, Any]) -> dict[str, Any]:
    ns = mode in ("namespaces+uid", "userns")
    separate_uid = mode in ("namespaces+uid", "uid")
    return {
        "mode": mode,
        "fresh_environment": True,
        "separate_uid": sandbox_id() if separate_uid else None,
        "pid_namespace": ns,
        "parent_environ_hidden": ns or separate_uid,
        "network_isolated": ns,
        "private_tmp": mode == "namespaces+uid",
        "read_only_mounts": mode == "namespaces+uid" and not setup.get("read_only_refused"),
        "process_group_killed": True,
        "all_descendants_killed": ns or separate_uid,
        "no_new_privs": bool(setup.get("no_new_privs")),
        "limits": {"address_space_bytes": MEMORY_BYTES, "cpu_seconds": "ceil(timeout) + 1",
                   "file_size_bytes": FILE_BYTES, "processes": NPROC if separate_uid else None, "core_dumps": 0},
        "unavailable": unavailable,
    }


def _candidate_modes() -> list[str]:
    if os.geteuid() == 0:
        return ["namespaces+uid", "uid", "plain"]
    return ["userns", "plain"]


def probe(modes: list[str] | None = None, python: str | None = None) -> dict[str, Any]:
    """Try each mode (strongest first) on a trivial program; return the record of the first that works."""
    python = python or sys.executable
    unavailable: dict[str, str] = {}
    for mode in modes or _candidate_modes():
        if mode in ("namespaces+uid", "userns") and not shutil.which("unshare"):
            unavailable[mode] = "util-linux unshare not found"
            continue
        if mode in ("namespaces+uid", "uid"):
            try:
                pwd.getpwuid(sandbox_id())
                unavailable[mode] = f"uid {sandbox_id()} belongs to an account"
                continue
            except KeyError:
                pass
        uid = sandbox_id() if mode in ("namespaces+uid", "uid") else os.getuid()
        program = f"import os, sys\nsys.exit(0 if os.getuid() == {uid} else 3)\n"
        try:
            res = _run(program, 10.0, mode, python, MEMORY_BYTES, FILE_BYTES)
        except (SandboxError, OSError) as e:
            unavailable[mode] = str(e).strip().splitlines()[-1][-300:]
            continue
        if res.passed:
            return _describe(mode, unavailable, res.setup)
        unavailable[mode] = f"probe program failed (exit {res.returncode}): {res.stderr.strip()[-300:]}"
    raise SandboxError(f"no sandbox mode works here: {unavailable}")


def protections() -> dict[str, Any]:
    """The record of what protects code runs here (probed once per process, then logged once)."""
    global _protections
    with _probe_lock:
        if _protections is None:
            _protections = probe()
            weak = [k for k in ("parent_environ_hidden", "network_isolated") if not _protections[k]]
            (log.warning if weak else log.info)(
                "code execution sandbox: mode %s%s", _protections["mode"],
                f"; NOT contained: {', '.join(weak)}" if weak else "")
    return _protections


def run_program(program: str, timeout: float = 5.0, *, mode: str | None = None, python: str | None = None,
                memory_bytes: int | None = MEMORY_BYTES, file_bytes: int | None = FILE_BYTES) -> SandboxResult:
    """Run ``program`` (Python source) in the sandbox; ``mode`` forces one of MODES (default: the probed one)."""
    if mode is None:
        mode = protections()["mode"]
    elif mode not in MODES:
        raise ValueError(f"unknown sandbox mode {mode!r}; expected one of {MODES}")
    return _run(program, timeout, mode, python or sys.executable, memory_bytes, file_bytes)
