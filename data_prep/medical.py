"""Medical: HuatuoGPT-o1 (Chen et al., 2024).

* train: the English SFT set (hub ``FreedomIntelligence/medical-o1-reasoning-SFT``, config ``en``, ~20k rows of
  ``Question`` / ``Complex_CoT`` / ``Response``). Demonstration = the reasoning and the response in HuatuoGPT-o1's
  layout (``## Thinking`` ... ``## Final Response`` ...). The answer-only variant (task ``medical_answer_only``, the
  reasoning-model experiment of Table 2) uses the response alone, no chain of thought.
* test: 1,000 seeded random questions of the verifiable-problem set (hub ``FreedomIntelligence/
  medical-o1-verifiable-problem``: ``Open-ended Verifiable Question`` / ``Ground-True Answer``); val: 100 more,
  disjoint from test. Scored by the LLM judge (``eval.judge``) against the ground-truth answer.
* Duplicates: a question is its text, case-folded, whitespace normalized (``_question_key``). Each set is
  de-duplicated before it is split (``sources.dedupe``), and SFT questions that are also val / test questions are
  left out of train.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

from data_prep.schema import SkipReport, SplitReport
from data_prep.sources import (SPLIT_FRACTIONS, SPLIT_SEED, DataSourceError, convert_all, dedupe, hub_rows,
                               read_json_records, require_field, stable_id)

log = logging.getLogger("data_prep")

TASK = "medical"
SFT_HUB = ("FreedomIntelligence/medical-o1-reasoning-SFT", "en", "train")
VERIFIABLE_HUB = ("FreedomIntelligence/medical-o1-verifiable-problem", None, "train")
SFT_FILES = ("medical_o1_sft_en.json", "medical_o1_sft_en.jsonl", "medical_o1_sft.json")
VERIFIABLE_FILES = ("medical_o1_verifiable_problem.json", "medical_o1_verifiable_problem.jsonl")
COMBINED_FILE = "demo_data.json"  # a small file whose rows carry both field sets (development mirrors)
MIRROR_FILES = f"huatuo/{SFT_FILES[0]} and huatuo/{VERIFIABLE_FILES[0]}"
N_TEST, N_VAL = 1000, 100


def demonstration(reasoning: str, response: str, answer_only: bool = False) -> str:
    if answer_only:
        return response.strip()
    return f"## Thinking\n\n{reasoning.strip()}\n\n## Final Response\n\n{response.strip()}"


def sft_record(row, source: str, where: str, answer_only: bool = False) -> dict:
    question = require_field(row, "Question", source, where)
    reasoning = require_field(row, "Complex_CoT", source, where)
    response = require_field(row, "Response", source, where)
    task = "medical_answer_only" if answer_only else TASK
    return {
        "id": stable_id(TASK, "sft", question),
        "task": task,
        "prompt": [{"role": "user", "content": question.strip()}],
        "demonstration": demonstration(reasoning, response, answer_only),
        "reference": response.strip(),
        "meta": {"question": question.strip(), "source": "medical-o1-reasoning-SFT"},
    }


def verifiable_record(row, source: str, where: str, answer_only: bool = False) -> dict:
    question = require_field(row, "Open-ended Verifiable Question", source, where)
    answer = require_field(row, "Ground-True Answer", source, where)
    return {
        "id": stable_id(TASK, "verifiable", question),
        "task": "medical_answer_only" if answer_only else TASK,
        "prompt": [{"role": "user", "content": question.strip()}],
        "demonstration": "",
        "reference": answer.strip(),
        "meta": {"question": question.strip(), "source": "medical-o1-verifiable-problem"},
    }


def _find(data_dir: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        for path in (data_dir / "huatuo" / name, data_dir / name):
            if path.exists():
                return path
    return None


def _rows(data_dir: Path | None, kind: str) -> tuple[str, list[tuple[str, object]]]:
    """(source name, located raw rows) of the SFT set or the verifiable set."""
    if data_dir is None:
        ds_id, config, split = SFT_HUB if kind == "sft" else VERIFIABLE_HUB
        rows = hub_rows(TASK, MIRROR_FILES, ds_id, config, split)
        return ds_id, [(f"row {i}", r) for i, r in enumerate(rows)]
    path = _find(data_dir, SFT_FILES if kind == "sft" else VERIFIABLE_FILES)
    if path is None:
        path = _find(data_dir, (COMBINED_FILE,))
        if path is None:
            raise DataSourceError(f"task {TASK!r}: no {kind} file in {data_dir / 'huatuo'}; the local mirror needs "
                                  f"{MIRROR_FILES} (see data_prep/README.md)")
        log.warning("medical: using %s for the %s rows (a small development file)", path, kind)
    return str(path), list(read_json_records(path))


def _convert(kind: str, data_dir: Path | None, convert, skip_invalid: bool,
             report: SplitReport | None) -> tuple[list[dict], SkipReport]:
    source, rows = _rows(data_dir, kind)
    records, skips = convert_all(rows, lambda r, w: convert(r, source, w), source, skip_invalid)
    report = report if report is not None else SplitReport()
    report.absorb(skips)
    records = dedupe(records, skips.locations, lambda r: _question_key(r["meta"]["question"]), report, skip_invalid)
    return records, skips


def load_sft(data_dir: Path | None, answer_only: bool = False, skip_invalid: bool = False,
             report: SplitReport | None = None) -> tuple[list[dict], SkipReport]:
    """The SFT set's records, each question once (the SkipReport counts the rows before de-duplication)."""
    return _convert("sft", data_dir, lambda r, s, w: sft_record(r, s, w, answer_only), skip_invalid, report)


def load_verifiable(data_dir: Path | None, answer_only: bool = False, skip_invalid: bool = False,
                    report: SplitReport | None = None) -> tuple[list[dict], SkipReport]:
    """The verifiable set's records, each question once."""
    return _convert("verifiable", data_dir, lambda r, s, w: verifiable_record(r, s, w, answer_only), skip_invalid,
                    report)


def evaluation_split(records: list[dict], split: str, seed: int = SPLIT_SEED, n_test: int = N_TEST,
                     n_val: int = N_VAL) -> list[dict]:
    """``n_test`` seeded random verifiable questions for test, ``n_val`` further ones for val (disjoint). With fewer
    than ``n_test + n_val`` questions (a development mirror) the 20% / 5% fractions of ``SPLIT_FRACTIONS`` apply."""
    ordered = sorted({r["id"]: r for r in records}.values(), key=lambda r: r["id"])  # duplicates once
    rng = random.Random(f"medical-eval:{seed}")
    rng.shuffle(ordered)
    if len(ordered) < n_test + n_val:
        n_test = round(len(ordered) * SPLIT_FRACTIONS["test"])
        n_val = round(len(ordered) * SPLIT_FRACTIONS["val"])
        log.warning("medical: only %d verifiable questions; using %d for test and %d for val", len(ordered), n_test, n_val)
    return ordered[:n_test] if split == "test" else ordered[n_test:n_test + n_val]


def _question_key(text: str) -> str:
    return " ".join(text.lower().split())


def load(split: str, data_dir: Path | None, answer_only: bool = False, skip_invalid: bool = False,
         report: SplitReport | None = None) -> list[dict]:
    """``train``: the SFT set minus any question that is also a val / test question (a leakage guard; the two hub
    sets share source questions). ``val`` / ``test``: the verifiable questions of :func:`evaluation_split`."""
    report = report if report is not None else SplitReport()
    verifiable = load_verifiable(data_dir, answer_only, skip_invalid, report)[0]
    if split != "train":
        return evaluation_split(verifiable, split)
    held_out = {_question_key(r["meta"]["question"])
                for part in ("val", "test") for r in evaluation_split(verifiable, part)}
    train = load_sft(data_dir, answer_only, skip_invalid, report)[0]
    kept = [r for r in train if _question_key(r["meta"]["question"]) not in held_out]
    report.leave_out("also_a_val_or_test_question", len(train) - len(kept))
    if len(kept) < len(train):
        log.warning("medical/train: %d of %d SFT questions are also val/test questions and are left out",
                    len(train) - len(kept), len(train))
    return kept
