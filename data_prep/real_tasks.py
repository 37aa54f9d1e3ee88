"""Loaders of the paper's tasks from their real sources, in the ``load_task`` calling convention.

``science``, ``tooluse``, ``medical`` (and ``medical_answer_only``, Table 2) and ``knowledge`` (and ``knowledge_ood``:
its indirect test questions). Each reads a local mirror (``data_dir`` / ``$SDFT_DATA_DIR``) or the hub (see
``data_prep.sources``); the train/val/test partition is fixed (``sources.SPLIT_SEED``) and ``seed`` only chooses the
subsample when ``n`` is given. The tasks are listed in ``data_prep.tasks``.
"""

from __future__ import annotations

from typing import Callable

from data_prep import knowledge, medical, science, tooluse
from data_prep.schema import SplitReport
from data_prep.sources import resolve_data_dir, subsample

# (split, data_dir, skip_invalid, report) -> every record of the split
_SOURCES: dict[str, Callable[..., list[dict]]] = {
    "science": lambda split, d, skip, rep: science.load(split, d, skip_invalid=skip, report=rep),
    "tooluse": lambda split, d, skip, rep: tooluse.load(split, d, skip_invalid=skip, report=rep)[0],
    "medical": lambda split, d, skip, rep: medical.load(split, d, skip_invalid=skip, report=rep),
    "medical_answer_only": lambda split, d, skip, rep: medical.load(split, d, answer_only=True, skip_invalid=skip,
                                                                    report=rep),
    "knowledge": lambda split, d, skip, rep: knowledge.load(split, d, skip_invalid=skip, report=rep),
    "knowledge_ood": lambda split, d, skip, rep: knowledge.load(split, d, ood=True, skip_invalid=skip, report=rep),
}


def load_real_task(name: str) -> Callable[..., list[dict]]:
    """The loader of one of the paper's tasks: ``(split, seed=0, n=None, data_dir=None, skip_invalid=False,
    report=None)``; ``report`` (a :class:`~data_prep.schema.SplitReport`) gets the files read and what was skipped,
    de-duplicated and left out."""
    load = _SOURCES[name]

    def loader(split: str, seed: int = 0, n: int | None = None, data_dir=None, skip_invalid: bool = False,
               report: SplitReport | None = None):
        records = load(split, resolve_data_dir(data_dir), skip_invalid, report if report is not None else SplitReport())
        return subsample(records, n, seed, f"{name}/{split}")

    loader.__name__ = f"load_{name}"
    return loader
