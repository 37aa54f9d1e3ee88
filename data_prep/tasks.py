"""The tasks of this repository, listed in one place (``BUILTIN_TASKS``; the task registry, ``data_prep.registry``,
knows them by name).

Embedded tasks (generated in code; what ``smoke`` and ``mini`` train on) stand in for the paper's tasks, which
load from their real sources (the hub or a local mirror: ``data_prep.real_tasks``).
"""

from __future__ import annotations

import random
from typing import Callable

from data_prep import embedded
from data_prep.fact_judge import FactJudge
from data_prep.real_tasks import load_real_task
from data_prep.schema import SplitReport
from data_prep.scorers import has_answer_letter, has_tool_call_format, score_letter, score_short_answer, score_tool_call
from data_prep.task import Task


def _embedded_split(generate: Callable[[int, int, str], list[dict]], sizes: dict[str, int]):
    """Disjoint splits of a generated task: a record's question decides its split (``embedded.split_of``), so no
    validation or test question is a training question. Generated records are valid and distinct, so
    ``skip_invalid`` has nothing to skip."""

    def load(split: str, seed: int = 0, n: int | None = None, data_dir=None, skip_invalid: bool = False,
             report: SplitReport | None = None) -> list[dict]:
        if report is not None:
            report.add_source(f"generated: data_prep.embedded.{generate.__name__}(seed={seed}, split={split!r})")
        records = generate(n if n is not None else sizes[split], seed, split)
        return [{**r, "id": f"{r['id']}-{split}"} for r in records]

    return load


def _knowledge_split(split: str, seed: int = 0, n: int | None = None, data_dir=None, skip_invalid: bool = False,
                     report: SplitReport | None = None) -> list[dict]:
    """The fictional-world knowledge task: one world per seed, its splits made together so they share no question
    (``embedded.knowledge_qa``); ``n`` draws a seeded subsample."""
    if report is not None:
        report.add_source(f"generated: data_prep.embedded.knowledge_qa(seed={seed})")
    records = embedded.knowledge_qa(split, seed=seed)
    return records if n is None else random.Random(f"subsample:{seed}").sample(records, min(n, len(records)))


_EMBEDDED_SIZES = {"train": 256, "val": 50, "test": 100}
_GENERATED = ("generated in code; the question decides the split (a stable hash: no val or test question is a "
              "training question); 256 / 50 / 100 records")
_FIXED = "a fixed seeded partition of the source (data_prep.sources.SPLIT_SEED); `seed` only picks a subsample"


def _answer_only(load, task: str, cut: Callable[[dict], str]):
    """A loader whose records are ``load``'s with the demonstration cut to the final answer (``cut(record)``) and
    ``task`` renamed; prompt, reference and split are unchanged (Table 2's answer-only supervision)."""

    def answer_only(split: str, seed: int = 0, n: int | None = None, data_dir=None, skip_invalid: bool = False,
                    report: SplitReport | None = None) -> list[dict]:
        records = load(split, seed=seed, n=n, data_dir=data_dir, skip_invalid=skip_invalid, report=report)
        return [{**r, "task": task, "id": f"{r['id']}-answer-only", "demonstration": cut(r)} for r in records]

    return answer_only


def _science_answer(record: dict) -> str:
    """``<answer>X</answer>``: the embedded science demonstration without its sentence of reasoning."""
    return f"<answer>{record['reference']}</answer>"


# Table 2's mechanism on the embedded tasks (the `mini` stand-in of experiments/table2.py): the science MCQ, whose
# system prompt asks for a sentence of reasoning before the letter (the model's own reasoning -- naming the symbol
# or the family -- is what picks the option), trained on demonstrations cut to `<answer>X</answer>` (its values in
# the mini preset: sdft/presets/mini.yaml, tasks).
BUILTIN_TASKS = (
    # --- the paper's tasks ------------------------------------------------------------------------------
    Task("science", load_real_task("science"), score=score_letter, format_check=has_answer_letter,
         metric="answer_letter_exact", title="Science Q&A", split_rule=_FIXED),
    Task("tooluse", load_real_task("tooluse"), score=score_tool_call, format_check=has_tool_call_format,
         metric="tool_call_match", title="Tool Use", split_rule=_FIXED),
    Task("medical", load_real_task("medical"), judge="medical", metric="judge_accuracy",
         title="Medical", split_rule=_FIXED),
    Task("medical_answer_only", load_real_task("medical_answer_only"), judge="medical", metric="judge_accuracy",
         title="Medical (answer-only demonstrations)", split_rule=_FIXED),
    Task("knowledge", load_real_task("knowledge"), judge="knowledge", metric="judge_strict_accuracy",
         title="Knowledge acquisition", split_rule=_FIXED),
    Task("knowledge_ood", load_real_task("knowledge_ood"), judge="knowledge", metric="judge_strict_accuracy",
         title="Knowledge acquisition (indirect questions)", split_rule=_FIXED),
    # --- embedded stand-ins ---------------------------------------------------------------------------------
    Task("embedded_tool", _embedded_split(embedded.tool_calls, _EMBEDDED_SIZES),
         score=score_tool_call, format_check=has_tool_call_format, metric="tool_call_match",
         title="Embedded tool calls", paper_task="tooluse", split_rule=_GENERATED),
    Task("embedded_science", _embedded_split(embedded.science_mcq, _EMBEDDED_SIZES),
         score=score_letter, format_check=has_answer_letter, metric="answer_letter_exact",
         title="Embedded science MCQ", paper_task="science", split_rule=_GENERATED),
    Task("embedded_medical", _embedded_split(embedded.medical_qa, _EMBEDDED_SIZES),
         score=score_short_answer, metric="normalized_containment", title="Embedded medical QA",
         paper_task="medical", split_rule=_GENERATED),
    Task("embedded_science_answer_only",
         _answer_only(_embedded_split(embedded.science_mcq, _EMBEDDED_SIZES), "embedded_science_answer_only",
                      _science_answer),
         score=score_letter, format_check=has_answer_letter, metric="answer_letter_exact",
         title="Embedded science MCQ, answer-only demonstrations",
         paper_task="medical_answer_only", split_rule=_GENERATED + " (embedded_science's, demonstrations cut to "
         "the answer tag)"),
    # the knowledge judge's labels offline (data_prep.fact_judge); --judge-model names an LLM judge instead
    Task("embedded_knowledge", _knowledge_split, judge="knowledge", metric="judge_strict_accuracy",
         local_judge=FactJudge, title="Embedded fictional-world knowledge", paper_task="knowledge",
         split_rule="one generated world of 16 towns per seed; held-out questions (new fact pairs, other words, "
                    "two hops) for val and test; 96 / 24 / 168 records"),
)
