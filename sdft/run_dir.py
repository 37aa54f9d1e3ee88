"""Run directories that describe the run which produced them.

``open_run_dir`` is how ``sdft.train`` takes a directory. Before anything is trained it guarantees:

  * Ownership. A directory holding files that ``sdft.train`` did not create (no ``manifest.json`` or
    ``config.lock.json`` with ``"created_by": "sdft.train"``) is refused, with or without ``--force``: its files are
    kept. ``--force`` deletes only a directory this repository created.
  * One run at a time. ``<run_dir>/.lock`` (pid, host, start time) is created exclusively and removed when the run
    ends; a second run finds it and is refused. A lock left by a process that is no longer running on this host is
    taken over, with a message; a lock from another host, or one that cannot be read, refuses the run.
  * The same config. ``config.lock.json`` holds the fingerprint (SHA-256) of the config that produced the directory
    and the fingerprinted values. A rerun -- to skip a completed run or to resume a killed one -- with a config of
    another fingerprint is refused, naming each changed key (old -> new) and the ways on (``--force``, or a new
    directory). A run that left nothing to resume (it failed on its data or model, before any checkpoint) is no
    reason to refuse: the directory is cleared and taken for the new config, with a message (e.g. a rerun with
    ``skip_invalid=true`` after a data error). A key the lock lacks (a field added to the config after the run was made) counts as unchanged when
    the new value is that field's default: the old run behaved as the default.

The fingerprint covers every config key but ``NOT_FINGERPRINTED``: where the run writes (``output_dir``, so a
moved directory still resumes), what it logs and reports, how often and how many checkpoints it keeps, whether it
keeps them or the final model, which plugin modules are imported (``include``: the method and task names they
register are fingerprinted; a module may move), and hub publishing. None of them changes the trained weights; every other key does or
may (a resumed run is bit-exact only under the same values).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from sdft.checkpoints import checkpoint_folders
from sdft.errors import UserError
from sdft.run_io import read_json_or_none, write_json_atomic

CREATED_BY = "sdft.train"
LOCK_FILE = ".lock"
CONFIG_LOCK_FILE = "config.lock.json"
MANIFEST_FILE = "manifest.json"

NOT_FINGERPRINTED = frozenset({
    # where the run writes
    "output_dir",
    # what is logged and reported
    "logging_strategy", "logging_steps", "logging_first_step", "logging_nan_inf_filter", "log_on_each_node",
    "log_level", "log_level_replica", "disable_tqdm", "report_to", "run_name", "project", "trackio_space_id",
    "trackio_bucket_id", "trackio_static_space_id",
    # which checkpoints and outputs are kept
    "save_strategy", "save_steps", "save_total_limit", "save_on_each_node", "enable_jit_checkpoint",
    "resume_from_checkpoint", "keep_checkpoints", "save_model", "merge",
    # which plugin modules are imported to find the method and task (their names are fingerprinted)
    "include",
    # hub publishing
    "push_to_hub", "hub_token", "hub_private_repo", "hub_model_id", "hub_strategy", "hub_always_push", "hub_revision",
})


class RunDirRefused(UserError, RuntimeError):
    """The run would contradict its run directory; the directory was left as it was."""


def fingerprint(config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(SHA-256 of the fingerprinted values, those values in their JSON form) of a flat config (``cfg.to_dict()``)."""
    values = json.loads(json.dumps({k: v for k, v in config.items() if k not in NOT_FINGERPRINTED}, default=str))
    digest = hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()
    return digest, values


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``"key: old -> new"`` for every key whose value differs (``<absent>`` for a key one side lacks)."""
    absent = "<absent>"
    return [f"{k}: {old.get(k, absent)!r} -> {new.get(k, absent)!r}"
            for k in sorted(set(old) | set(new)) if old.get(k, absent) != new.get(k, absent)]


def is_ours(run_dir: str | Path) -> bool:
    """Whether ``sdft.train`` created ``run_dir`` (its manifest or config lock says so)."""
    return any((read_json_or_none(Path(run_dir) / name) or {}).get("created_by") == CREATED_BY
               for name in (MANIFEST_FILE, CONFIG_LOCK_FILE))


def run_is_complete(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a completed run: its manifest says so and its ``model/`` is there."""
    run_dir = Path(run_dir)
    return (read_json_or_none(run_dir / MANIFEST_FILE) or {}).get("status") == "completed" and (run_dir / "model").exists()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user
        return True
    return True


class RunLock:
    """``<run_dir>/.lock``, held from ``acquire`` to ``release`` (or as a context manager) by one process."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / LOCK_FILE
        self.held = False

    def acquire(self) -> None:
        """Create the lock, taking over a stale one (its process is gone from this host); ``RunDirRefused`` when
        another run holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            if self._create():
                self.held = True
                return
            holder = read_json_or_none(self.path)
            if holder is None and not self.path.exists():
                continue  # released meanwhile
            if not self._stale(holder):
                who = (f"pid {holder.get('pid')} on host {holder.get('host')} since {holder.get('started')}"
                       if isinstance(holder, dict) else "a run whose lock file cannot be read")
                raise RunDirRefused(f"{self.path.parent} is in use by another run: {who} ({self.path}). If no run is "
                                    f"using it any more, delete {self.path} and rerun.")
            print(f"[sdft.train] taking over the stale lock {self.path} of pid {holder['pid']} (started "
                  f"{holder.get('started')}): that process is no longer running on this host", flush=True)
            if read_json_or_none(self.path) == holder:
                self.path.unlink(missing_ok=True)
        raise RunDirRefused(f"{self.path.parent}: another run took the lock {self.path} over at the same moment")

    def release(self) -> None:
        """Remove the lock if this process holds it."""
        if self.held and (read_json_or_none(self.path) or {}).get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)
        self.held = False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as fh:
            json.dump({"pid": os.getpid(), "host": socket.gethostname(),
                       "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, fh)
        return True

    @staticmethod
    def _stale(holder: Any) -> bool:
        return (isinstance(holder, dict) and holder.get("host") == socket.gethostname()
                and isinstance(holder.get("pid"), int) and not _alive(holder["pid"]))


def _refuse_foreign(run_dir: Path) -> None:
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirRefused(f"{run_dir} is not a directory")
    entries = sorted(p.name for p in run_dir.iterdir() if p.name != LOCK_FILE) if run_dir.is_dir() else []
    if entries and not is_ours(run_dir):
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise RunDirRefused(f"{run_dir} holds files that sdft.train did not create ({shown}): it has no "
                            f"{MANIFEST_FILE} with \"created_by\": \"{CREATED_BY}\" (neither have the run directories "
                            "of versions before that field). Nothing was changed: --force deletes only directories "
                            "sdft.train created. Choose a new --output-dir.")


def with_new_defaults(old: dict[str, Any], new: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """``old`` plus, for every key of ``new`` that ``old`` lacks and that has a default, that default (JSON form):
    the config an old lock describes, in the terms of today's fields."""
    filled = dict(old)
    for key in new.keys() - old.keys():
        if key in defaults:
            filled[key] = json.loads(json.dumps(defaults[key], default=str))
    return filled


def _check_same_config(run_dir: Path, digest: str, values: dict[str, Any],
                       defaults: dict[str, Any] | None = None) -> None:
    lock = run_dir / CONFIG_LOCK_FILE
    if not lock.exists():
        if (run_dir / MANIFEST_FILE).exists():
            raise RunDirRefused(f"{run_dir} has no {CONFIG_LOCK_FILE}: which config produced it cannot be told. "
                                "Pass --force to delete it and train afresh, or choose a new --output-dir.")
        return
    old = read_json_or_none(lock)
    if not isinstance(old, dict) or not isinstance(old.get("config"), dict):
        raise RunDirRefused(f"{lock} is unreadable. Pass --force to delete {run_dir} and train afresh, or choose a "
                            "new --output-dir.")
    if old.get("fingerprint") != digest:
        filled = with_new_defaults(old["config"], values, defaults or {})
        if fingerprint(filled)[0] == digest:
            added = sorted(filled.keys() - old["config"].keys())
            print(f"[sdft.train] {lock} predates the config keys {', '.join(added)}; this run sets each to its "
                  "default, which is how the run in the directory behaved: taking it as the same config", flush=True)
            return
        if _trained_nothing(run_dir):
            status = (read_json_or_none(run_dir / MANIFEST_FILE) or {}).get("status", "not started")
            print(f"[sdft.train] {run_dir} holds a run of another config that left nothing to resume (status "
                  f"{status}: no checkpoint, no model): starting afresh there with this config", flush=True)
            _clear(run_dir)
            return
        if run_is_complete(run_dir):
            what = "a completed run of another config: skipping it would report its results as this config's"
        else:
            status = (read_json_or_none(run_dir / MANIFEST_FILE) or {}).get("status", "not started")
            what = f"an unfinished run (status {status}) of another config: resuming it would mix the two configs"
        changes = config_changes(filled, values) or ["(the fingerprints differ; no key does)"]
        raise RunDirRefused(
            f"{run_dir} holds {what} ({lock}). Changed keys (old -> new):\n  " + "\n  ".join(changes) + "\n"
            "Rerun with the old values, pass --force to delete the directory and train afresh, or choose a new "
            "--output-dir.")


def _trained_nothing(run_dir: Path) -> bool:
    """Whether the run in ``run_dir`` ended (or died) before anything could be resumed or reported: no checkpoint,
    no ``model/``, no ``best_model/`` (a run that failed on its data, its model or its first steps)."""
    if (read_json_or_none(run_dir / MANIFEST_FILE) or {}).get("status") == "completed":
        return False
    return not (checkpoint_folders(run_dir / "checkpoints") or (run_dir / "model").exists()
                or (run_dir / "best_model").exists())


def _clear(run_dir: Path) -> None:
    for path in run_dir.iterdir():
        if path.name != LOCK_FILE:
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


@contextmanager
def open_run_dir(run_dir: str | Path, config: dict[str, Any], force: bool = False,
                 defaults: dict[str, Any] | None = None) -> Iterator[str]:
    """Take ``run_dir`` for a run of ``config`` (the flat ``cfg.to_dict()``): refuse a foreign directory, hold its
    lock until the block ends, delete it first when ``force`` (ours only), else refuse another config's run (a key
    the lock lacks is unchanged when ``config`` has it at its value in ``defaults``, ``cfg.field_defaults()``); write
    ``config.lock.json`` when absent. Yields the config's fingerprint. ``RunDirRefused`` leaves the directory as it
    was (but for a stale lock taken over)."""
    run_dir = Path(run_dir)
    _refuse_foreign(run_dir)
    digest, values = fingerprint(config)
    with RunLock(run_dir):
        if force:
            _clear(run_dir)
        else:
            _check_same_config(run_dir, digest, values, defaults)
        if not (run_dir / CONFIG_LOCK_FILE).exists():
            write_json_atomic(run_dir / CONFIG_LOCK_FILE, {
                "created_by": CREATED_BY, "fingerprint": digest, "not_fingerprinted": sorted(NOT_FINGERPRINTED),
                "config": values})
        yield digest
