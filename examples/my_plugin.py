"""A task and a method of your own, outside the package: one file, imported with ``--include``.

    python -m sdft.train --include examples/my_plugin.py --method mine --task mine_task --preset smoke \
        --output-dir runs/mine
    python -m eval.run --model runs/mine --preset smoke            # the run recorded the plugin: no --include needed
    bash experiments/run_table5.sh --preset smoke --include examples/my_plugin.py --tasks mine_task \
        --methods base,sft,mine --results-dir results/mine_table5

* ``mine_task``: capital cities, a tiny dataset written in this file (12 train, 4 validation, 4 test questions),
  scored by :func:`score_capital` (the city's name, as whole words, in the response).
* ``mine``: SFT on the short answer (the record's ``reference``, "Paris") instead of the full demonstration
  ("The capital of France is Paris."), or on both (``target=both``), built with the public SFT helper
  ``sdft.baselines.sft.build_sft_trainer``. Its knob ``target`` is a config key like any other
  (``target=both`` on the command line, in a recipe or a section's ``key=value``).

Nothing here is special to this folder: copy the file anywhere and pass its path.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Literal

from trl import SFTConfig

from data_prep.registry import Task, register_task
from data_prep.scorers import normalize_text
from sdft.baselines.sft import SFT_DEFAULTS, build_sft_trainer
from sdft.registry import Method, register_method

# ------------------------------------------------------------------------------------------------ the task
CAPITALS = [  # (country, capital): the first 12 train, the next 4 validation, the last 4 test
    ("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Egypt", "Cairo"),
    ("Kenya", "Nairobi"), ("Peru", "Lima"), ("Norway", "Oslo"), ("Cuba", "Havana"),
    ("Spain", "Madrid"), ("Chile", "Santiago"), ("Greece", "Athens"), ("Poland", "Warsaw"),
    ("Austria", "Vienna"), ("Ireland", "Dublin"), ("Portugal", "Lisbon"), ("Hungary", "Budapest"),
    ("Sweden", "Stockholm"), ("Finland", "Helsinki"), ("Thailand", "Bangkok"), ("Ghana", "Accra"),
]
SPLIT_ROWS = {"train": CAPITALS[:12], "val": CAPITALS[12:16], "test": CAPITALS[16:]}


def load_capitals(split: str, seed: int = 0, n: int | None = None, data_dir=None) -> list[dict]:
    """The records of one split in the repository's schema (``data_prep.schema``); train in a seeded order."""
    rows = list(SPLIT_ROWS[split])
    if split == "train":
        random.Random(seed).shuffle(rows)
    records = [{"id": f"mine_task-{split}-{country.lower()}", "task": "mine_task",
                "prompt": [{"role": "user", "content": f"What is the capital of {country}?"}],
                "demonstration": f"The capital of {country} is {city}.", "reference": city,
                "meta": {"country": country}} for country, city in rows]
    return records[:n] if n is not None else records


def score_capital(response: str, reference: str) -> float:
    """1.0 when the city's name occurs in the response as whole words (case and punctuation ignored)."""
    return float(f" {normalize_text(reference)} " in f" {normalize_text(response)} ")


register_task(Task(
    name="mine_task", load=load_capitals, score=score_capital, metric="capital_match", title="Capitals (mine)",
    split_rule="a fixed list: 12 train, 4 validation, 4 test countries",
))


# ------------------------------------------------------------------------------------------------ the method
@dataclass
class MineArguments:
    """The method's own knob (a config key beside the trainer's)."""

    target: Literal["answer", "both"] = field(
        default="answer", metadata={"help": "answer: SFT on the reference answer alone; both: the answer, then the "
                                            "demonstration, as two examples per record"})


def train_mine(cfg, records: list[dict], run_dir, resume_from_checkpoint=None):
    """SFT on short answers (``target=answer``) or on answers and demonstrations (``target=both``)."""
    rows = records if cfg.target == "answer" else [r for r in records for _ in range(2)]
    targets = [str(r["reference"]) for r in records]
    if cfg.target == "both":
        targets = [t for r in records for t in (str(r["reference"]), r["demonstration"])]
    trainer = build_sft_trainer(cfg, rows, run_dir, completions=targets)
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    return trainer, {"target": cfg.target, "n_examples": len(targets)}


register_method(Method(
    "mine", train=train_mine, config_class=SFTConfig, args_class=MineArguments,
    defaults={**SFT_DEFAULTS, "max_length": 256}, title="Answer SFT (mine)",
    style={"color": "#2ca02c", "marker": "D"}, description="SFT on the short reference answer (examples/my_plugin.py)",
))
