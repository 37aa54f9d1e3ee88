"""Checkpoints that are complete or ignored.

A Trainer checkpoint ``checkpoint-N`` counts as complete once ``sdft_complete.json`` is in it. That marker is written
last -- after transformers' files (model, optimizer, scheduler, RNG, ``trainer_state.json``) and the trainer's own
(``CompleteCheckpoints._save_checkpoint_extras``: the SDFT teacher's ``teacher_model.safetensors``) -- and lists
every file of the folder with its size. A checkpoint is complete when its marker is readable and every listed file
is there with that size (``checkpoint_problem``), so a save interrupted at any point, or a file deleted afterwards,
leaves a checkpoint that is reported and passed over, never resumed (``resume_point``).

Older checkpoints are deleted (``save_total_limit``) only after the new one is marked: transformers rotates inside
its ``_save_checkpoint``, before a subclass can add its files, so the mixin hides the limit from it and rotates
itself (``rotate_checkpoints``). The newest complete checkpoint therefore exists at every moment of a save.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from sdft.run_io import read_json_or_none, write_json_atomic

MARKER = "sdft_complete.json"
TRAINER_STATE = "trainer_state.json"
_CHECKPOINT = re.compile(r"checkpoint-(\d+)")


def mark_complete(folder: str | Path) -> None:
    """Write ``folder``'s completion marker: every file below it (but the marker) and its size."""
    folder = Path(folder)
    files = {p.relative_to(folder).as_posix(): p.stat().st_size
             for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MARKER}
    write_json_atomic(folder / MARKER, {"files": files})


def checkpoint_problem(folder: str | Path) -> str | None:
    """Why ``folder`` is not a complete checkpoint, or ``None`` when it is."""
    folder = Path(folder)
    if not (folder / MARKER).exists():
        return f"no {MARKER} (the marker written last: the save was interrupted, or an older version wrote it)"
    files = (read_json_or_none(folder / MARKER) or {}).get("files")
    if not isinstance(files, dict):
        return f"{MARKER} is unreadable"
    if TRAINER_STATE not in files:
        return f"{MARKER} lists no {TRAINER_STATE}"
    for name, size in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, {size} when the checkpoint was written"
    return None


def checkpoint_folders(folder: str | Path) -> list[Path]:
    """The ``checkpoint-N`` folders directly in ``folder``, newest (highest N) first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := _CHECKPOINT.fullmatch(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def resume_point(folder: str | Path, report: bool = True) -> str | None:
    """The newest complete checkpoint in ``folder`` (``None`` when there is none). Each newer checkpoint passed
    over is printed with its path and the reason (when ``report``)."""
    for path in checkpoint_folders(folder):
        problem = checkpoint_problem(path)
        if problem is None:
            return str(path)
        if report:
            print(f"[sdft.train] not resuming from {path}: {problem}", flush=True)
    return None


def rotate_checkpoints(folder: str | Path, limit: int | None, keep: str | None = None) -> None:
    """Delete every checkpoint folder of ``folder`` but the ``limit`` newest complete ones (and ``keep``, the best
    model's). Nothing is deleted when ``limit`` is ``None`` or below 1."""
    if not limit or limit < 1:
        return
    folders = checkpoint_folders(folder)
    kept = [p for p in folders if checkpoint_problem(p) is None][:limit]
    for path in folders:
        if path not in kept and not (keep and path.resolve() == Path(keep).resolve()):
            shutil.rmtree(path, ignore_errors=True)


class CompleteCheckpoints:
    """``transformers.Trainer`` mixin (put it first among the bases): every checkpoint it writes is complete or
    ignored (the module docstring). Subclasses write their own files in ``_save_checkpoint_extras``."""

    def _save_checkpoint_extras(self, folder: Path) -> None:
        """Write this trainer's own files into the checkpoint ``folder`` (called on every process, before the
        checkpoint is marked complete; only the process with ``args.should_save`` writes)."""

    def _save_checkpoint(self, model, trial):
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        run_dir = Path(self._get_output_dir(trial=trial))
        folder = run_dir / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        if self.args.should_save and folder.exists():
            shutil.rmtree(folder)  # left by an interrupted run: a checkpoint is written whole, never over old files
        self.accelerator.wait_for_everyone()
        limit, self.args.save_total_limit = self.args.save_total_limit, None
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit = limit
        self._save_checkpoint_extras(folder)
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            mark_complete(folder)
            rotate_checkpoints(run_dir, limit, keep=self.state.best_model_checkpoint)
        self.accelerator.wait_for_everyone()  # every process sees the marked checkpoint (re-invoke's stage 1 reads it)
