"""The task registry: one name per task, one loader each, the same call for every source."""

from __future__ import annotations

import random
from typing import Callable

from data_prep import embedded
from data_prep.schema import validate_records

SPLITS = ("train", "val", "test")


def _embedded_split(generate: Callable[[int, int], list[dict]], sizes: dict[str, int]):
    """Disjoint seeded splits of a generated task: train, val and test use different generator seeds."""

    def load(split: str, seed: int = 0, n: int | None = None, data_dir=None) -> list[dict]:
        offset = {"train": 0, "val": 1000, "test": 2000}[split]
        records = generate(n if n is not None else sizes[split], seed + offset)
        return [{**r, "id": f"{r['id']}-{split}"} for r in records]

    return load


def _knowledge_split(split: str, seed: int = 0, n: int | None = None, data_dir=None) -> list[dict]:
    """The fictional-world knowledge task: one world per seed, splits by question (see ``embedded.knowledge_qa``)."""
    records = embedded.knowledge_qa(split, seed=seed)
    return records if n is None else random.Random(f"subsample:{seed}").sample(records, min(n, len(records)))


TASKS: dict[str, Callable[..., list[dict]]] = {
    "embedded_tool": _embedded_split(embedded.tool_calls, {"train": 64, "val": 16, "test": 32}),
    "embedded_science": _embedded_split(embedded.science_mcq, {"train": 64, "val": 16, "test": 32}),
    "embedded_medical": _embedded_split(embedded.medical_qa, {"train": 64, "val": 16, "test": 32}),
    "embedded_knowledge": _knowledge_split,
}

# the paper's four tasks from their real sources (hub or a local mirror): data_prep/real_tasks.py
from data_prep.real_tasks import REAL_TASKS  # noqa: E402

TASKS.update(REAL_TASKS)


def load_task(name: str, split: str = "train", seed: int = 0, n: int | None = None, data_dir=None) -> list[dict]:
    """Records of one split of a task, validated against the schema."""
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; known tasks: {sorted(TASKS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    records = TASKS[name](split, seed=seed, n=n, data_dir=data_dir)
    records, _ = validate_records(records, source=f"task {name}/{split}")
    return records
