"""Write the JSONL files of the embedded prior-capability suite (stand-ins for the paper's six benchmarks).

Every item was written for this repository (hand-written lists in ``items.py``, templated questions over
hand-checked tables, generated arithmetic). Run ``python -m eval.lm_eval_tasks.build_data`` to regenerate
the ``data/*.jsonl`` files (they are committed; the output is deterministic: seeded shuffles over lists in a
fixed order). :func:`build` checks every file before writing it (unique prompts, distinct choices, a valid
label) and raises on a bad item.

Stand-in for:    hellaswag  -> sdft_commonsense (4 endings of an everyday situation, log-likelihood)
                 winogrande -> sdft_winograd (twin sentences, fill the blank with one of 2 options, log-likelihood
                               of the rest of the sentence after each option)
                 mmlu       -> sdft_facts (world knowledge, 4 answers, log-likelihood)
                 truthfulqa -> sdft_truthful (common misconceptions, mc1-style: 1 true answer among 3 tempting
                               false ones, log-likelihood)
                 ifeval     -> sdft_instructions (generation, one verifiable instruction per prompt)
                 humaneval  -> sdft_code (generation, Python unit tests; runs model code: opt-in)
                 (none)     -> sdft_arithmetic (generation, exact number; an extra, outside the average)
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from eval.lm_eval_tasks import items as I

DATA = Path(__file__).resolve().parent / "data"
FILES = ("commonsense.jsonl", "winograd.jsonl", "facts.jsonl", "truthful.jsonl", "instructions.jsonl", "code.jsonl",
         "arithmetic.jsonl")


# ------------------------------------------------------------------------------------------------ multiple choice

def _choice_row(rng: random.Random, row_id: str, key: str, text: str, right: str, wrong: list[str], **extra) -> dict:
    choices = [right, *wrong]
    rng.shuffle(choices)
    return {"id": row_id, key: text, "choices": choices, "label": choices.index(right), **extra}


def commonsense(rng: random.Random) -> list[dict]:
    rows = []
    for kind, table in (("situation", I.COMMONSENSE_SITUATIONS), ("activity", I.COMMONSENSE_ACTIVITIES)):
        for ctx, right, *wrong in table:
            rows.append(_choice_row(rng, f"cs-{len(rows)}", "context", ctx, right, wrong, kind=kind))
    for r in rows:  # the task's field name since the first version
        r["endings"] = r.pop("choices")
    return rows


def winograd() -> list[dict]:
    """Two items per twin pair: the same sentence with the trigger that makes option 1, then option 2, right.

    Scored like lm-eval's winogrande: the contexts are the sentence up to the blank with each option filled in,
    the continuation (the same for both) is the rest of the sentence.
    """
    rows = []
    for template, opt1, opt2, trig1, trig2 in I.WINOGRAD:
        for answer, trigger in ((1, trig1), (2, trig2)):
            sentence = template.format(trigger)
            before, after = sentence.split("_")
            rows.append({"id": f"wg-{len(rows)}", "sentence": sentence, "option1": opt1, "option2": opt2,
                         "answer": answer, "contexts": [before + opt1, before + opt2],
                         "continuation": after.strip(), "label": answer - 1})
    return rows


def _others(rng: random.Random, pool: list[str], right: str, k: int = 3, first: str | None = None) -> list[str]:
    """``k`` wrong answers from ``pool`` (sorted, deterministic), ``first`` (a tempting one) among them if given."""
    rest = sorted(set(pool) - {right, first})
    picked = ([first] if first else []) + rng.sample(rest, k - (1 if first else 0))
    return picked


def facts(rng: random.Random) -> list[dict]:
    questions: list[tuple[str, str, str, list[str]]] = []  # (subject, question, right, wrong)
    capitals = [c for _, c, _ in I.CAPITALS]
    for country, capital, tempting in I.CAPITALS:
        questions.append(("geography", f"What is the capital of {country}?", capital,
                          _others(rng, capitals, capital, first=tempting)))
    symbols = [s for _, s in I.SYMBOLS]
    for element, symbol in I.SYMBOLS:
        questions.append(("chemistry", f"What is the chemical symbol for {element}?", symbol,
                          _others(rng, symbols, symbol)))
    for country, continent in I.CONTINENTS:
        questions.append(("geography", f"On which continent is {country}?", continent,
                          _others(rng, I.CONTINENT_NAMES, continent)))
    for animal, cls in I.ANIMAL_CLASSES:
        questions.append(("biology", f"What kind of animal is {animal}?", cls, _others(rng, I.ANIMAL_CLASS_NAMES, cls)))
    for table, subject, template in ((I.AUTHORS, "literature", "Who wrote {}?"),
                                     (I.CURRENCIES, "economics", "What is the currency of {}?"),
                                     (I.PAINTERS, "art", "Who painted {}?"),
                                     (I.RIVERS, "geography", "Which river flows through {}?")):
        answers = [a for _, a in table]
        for key, answer in table:
            questions.append((subject, template.format(key), answer, _others(rng, answers, answer)))
    for q, right, *wrong in I.FACTS_MISC:
        questions.append(("general", q, right, list(wrong)))
    return [_choice_row(rng, f"fact-{i}", "question", q, right, wrong, subject=subject)
            for i, (subject, q, right, wrong) in enumerate(questions)]


def truthful(rng: random.Random) -> list[dict]:
    return [_choice_row(rng, f"truth-{i}", "question", q, right, list(wrong))
            for i, (q, right, *wrong) in enumerate(I.TRUTHFUL)]


# ------------------------------------------------------------------------------------------------ generation

def instructions() -> list[dict]:
    """Every instruction kind crossed with 8 topics (a different run of topics per kind) and its arguments in turn."""
    rows = []
    per_kind = 8
    for k, (check, template, args) in enumerate(I.INSTRUCTION_KINDS):
        for j in range(per_kind):
            topic = I.TOPICS[(k * 3 + j) % len(I.TOPICS)]
            arg = args[j % len(args)]
            rows.append({"id": f"if-{len(rows)}", "prompt": template.format(topic=topic, arg=arg), "check": check,
                         "arg": arg})
    return rows


def code() -> list[dict]:
    rows = []
    for i, (signature, doc, solution, test) in enumerate(I.CODE):
        header = "import math\n\n\n" if "math." in solution else ""
        rows.append({"id": f"code-{i}", "prompt": f'{header}def {signature}:\n    """{doc}"""\n    return',
                     "test": test, "entry_point": signature.split("(")[0], "solution": " " + solution})
    return rows


def arithmetic(n_per_op: int = 40, seed: int = 0) -> list[dict]:
    """One-digit addition, subtraction (non-negative results) and multiplication, ``n_per_op`` distinct each."""
    rng = random.Random(seed)
    rows = []
    for op in ("+", "-", "*"):
        pairs = [(a, b) for a in range(1, 10) for b in range(1, 10) if op != "-" or a >= b]
        for a, b in rng.sample(pairs, n_per_op):
            value = a + b if op == "+" else a - b if op == "-" else a * b
            shown = "times" if op == "*" else op
            rows.append({"id": f"arith-{len(rows)}", "question": f"What is {a} {shown} {b}?", "answer": str(value)})
    return rows


# ------------------------------------------------------------------------------------------------ checks, writing

def check_rows(name: str, rows: list[dict]) -> None:
    """Raise ValueError on a duplicated prompt, a duplicated choice, a bad label or a missing field."""
    key = {"commonsense.jsonl": "context", "winograd.jsonl": "sentence", "facts.jsonl": "question",
           "truthful.jsonl": "question", "instructions.jsonl": "prompt", "code.jsonl": "prompt",
           "arithmetic.jsonl": "question"}[name]
    prompts = [r[key] for r in rows]
    dupes = sorted({p for p in prompts if prompts.count(p) > 1})
    if dupes:
        raise ValueError(f"{name}: duplicated items {dupes[:3]}")
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{name}: duplicated ids")
    for r in rows:
        choices = r.get("choices") or r.get("endings") or r.get("contexts")
        if choices is None:
            continue
        if len(set(choices)) != len(choices) or not 0 <= r["label"] < len(choices):
            raise ValueError(f"{name}: bad choices or label in {r['id']}")


def build() -> None:
    DATA.mkdir(exist_ok=True)
    rng = random.Random(0)
    files = {"commonsense.jsonl": commonsense(rng), "winograd.jsonl": winograd(), "facts.jsonl": facts(rng),
             "truthful.jsonl": truthful(rng), "instructions.jsonl": instructions(), "code.jsonl": code(),
             "arithmetic.jsonl": arithmetic()}
    assert tuple(files) == FILES
    for name, rows in files.items():
        check_rows(name, rows)
    for name, rows in files.items():
        (DATA / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


if __name__ == "__main__":
    build()
