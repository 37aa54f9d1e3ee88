"""Loaders and scorers of the embedded prior-capability suite (lm-eval custom tasks, written for this repo).

The data files live in ``data/`` beside this file; loading them through ``custom_dataset`` keeps the tasks
independent of the working directory (``dataset_path: json`` + ``data_files`` would resolve relative paths
against the current directory).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from eval.sandbox import run_program

DATA = Path(__file__).resolve().parent / "data"


def _load(name: str, **kwargs):
    import datasets

    rows = [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]
    # nested values (lists of choices) are kept; args become a string so the column has one type
    for r in rows:
        if "arg" in r:
            r["arg"] = json.dumps(r["arg"])
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def load_commonsense(**kwargs):
    return _load("commonsense.jsonl")


def load_winograd(**kwargs):
    return _load("winograd.jsonl")


def load_facts(**kwargs):
    return _load("facts.jsonl")


def load_truthful(**kwargs):
    return _load("truthful.jsonl")


def load_arithmetic(**kwargs):
    return _load("arithmetic.jsonl")


def load_instructions(**kwargs):
    return _load("instructions.jsonl")


def load_code(**kwargs):
    return _load("code.jsonl")


# ---------------------------------------------------------------- verifiable instructions (IFEval stand-in)

def check_instruction(check: str, arg, response: str) -> bool:
    """Whether ``response`` follows one instruction. No NLTK: plain string rules."""
    text = response.strip()
    if not text:
        return False
    letters = [c for c in text if c.isalpha()]
    if check == "lowercase":
        return bool(letters) and all(c.islower() for c in letters)
    if check == "uppercase":
        return bool(letters) and all(c.isupper() for c in letters)
    if check == "contains":
        return re.search(rf"\b{re.escape(arg)}\b", text, re.IGNORECASE) is not None
    if check == "no_comma":
        return "," not in text
    if check == "ends_with":  # as IFEval's end checker: surrounding quotes and case ignored
        return text.strip('"').strip().lower().endswith(arg.lower())
    if check == "starts_with":
        return re.match(rf"\W*{re.escape(arg)}\b", text) is not None
    if check == "max_words":
        return len(re.findall(r"\w+", text)) <= int(arg)
    if check == "quoted":
        return len(text) > 1 and text[0] == '"' and text[-1] == '"'
    if check == "json_key":
        body = re.sub(r"^```(json)?\s*|\s*```$", "", text)
        try:
            value = json.loads(body)
        except json.JSONDecodeError:
            return False
        return isinstance(value, dict) and arg in value
    if check == "bullets":  # exactly ``arg`` Markdown bullet lines ("* " or "- "), as IFEval counts them
        return len(re.findall(r"^\s*[*-]\s+\S", text, re.MULTILINE)) == int(arg)
    if check == "title":  # a title in double angular brackets, <<like this>>
        return re.search(r"<<[^<>\n]+>>", text) is not None
    if check == "question":
        return text.endswith("?")
    if check == "postscript":
        return re.search(r"(^|\s)P\.\s?S\.", text) is not None
    if check == "placeholder":  # at least one [placeholder]
        return re.search(r"\[[^\[\]\n]+\]", text) is not None
    raise ValueError(f"unknown instruction check {check!r}")


def process_instructions(doc, results):
    return {"prompt_level_acc": float(check_instruction(doc["check"], json.loads(doc["arg"]), results[0]))}


# ---------------------------------------------------------------- code (HumanEval stand-in)

def run_code_test(program: str, timeout: float = 5.0) -> bool:
    """Run ``program`` in the sandbox of :mod:`eval.sandbox` (fresh ``python -I``, temp dir, no secrets, limits,
    the whole process tree killed at the time-out); True when it exits 0 within ``timeout`` seconds."""
    return run_program(program, timeout).passed


def process_code(doc, results):
    program = doc["prompt"] + results[0] + "\n\n" + doc["test"] + "\n"
    return {"pass@1": float(run_code_test(program))}


# ---------------------------------------------------------------- HumanEval (paper suite, sdft_humaneval.yaml)

HUMANEVAL_TIMEOUT = 3.0  # seconds per program, as in HF evaluate's code_eval and OpenAI's human-eval


def humaneval_predictions(resps: list[list[str]], docs: list[dict]) -> list[list[str]]:
    """lm-eval's humaneval ``build_predictions`` filter: the prompt followed by each completion."""
    return [[doc["prompt"] + r for r in resp] for resp, doc in zip(resps, docs)]


def humaneval_pass_at_k(references: list[str], predictions: list[list[str]], k: list[int] | int = 1) -> dict:
    """``code_eval``'s interface (program = candidate + newline + test), each program run by :func:`run_code_test`.

    Returns ``{"pass@k": mean over problems}`` for each k no larger than every problem's number of candidates.
    """
    from eval.passk import pass_at_k

    ks = [k] if isinstance(k, int) else list(k)
    correct = [(len(cands), sum(run_code_test(c + "\n" + ref, HUMANEVAL_TIMEOUT) for c in cands))
               for ref, cands in zip(references, predictions)]
    return {f"pass@{kk}": sum(pass_at_k(n, c, kk) for n, c in correct) / len(correct)
            for kk in ks if all(n >= kk for n, _ in correct)}
