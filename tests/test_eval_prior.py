"""Prior-capability suite wiring (lm-eval on the tiny random model), the stand-in checkers, the offline guards."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from eval.lm_eval_tasks.utils import check_instruction, run_code_test
from eval.prior import EMBEDDED_SUITE, PriorSuiteError, ensure_punkt_tab, evaluate_prior, preflight

ROOT = Path(__file__).resolve().parents[1]


def test_embedded_suite_runs_through_lm_eval():
    from sdft.models import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer("embedded:tiny-llama")
    res = evaluate_prior(model, tok, "embedded", limit=3, benchmarks=["commonsense", "facts", "arithmetic", "code"])
    assert res["suite"] == "embedded" and "STAND-IN" in res["label"]
    assert set(res["benchmarks"]) == {"commonsense", "facts", "arithmetic"}
    assert "code" in res["skipped"] and "--allow-code-execution" in res["skipped"]["code"]
    for name, b in res["benchmarks"].items():
        assert b["n"] == 3 and 0.0 <= b["value"] <= 100.0
        assert b["stand_in_for"] == (list(EMBEDDED_SUITE[name].stand_in_for) or None)
    vals = [b["value"] for b in res["benchmarks"].values()]
    assert res["average"] == pytest.approx(sum(vals) / len(vals))


def test_instruction_checkers():
    assert check_instruction("lowercase", None, "all lower here.")
    assert not check_instruction("lowercase", None, "Not lower")
    assert check_instruction("uppercase", None, "APPLE!")
    assert check_instruction("contains", "coffee", "I had Coffee today")
    assert not check_instruction("contains", "coffee", "I had coffees")
    assert check_instruction("no_comma", None, "no commas here") and not check_instruction("no_comma", None, "a, b")
    assert check_instruction("ends_with", "The end.", "Trees grow. The end.")
    assert check_instruction("max_words", 3, "one two three") and not check_instruction("max_words", 3, "a b c d")
    assert check_instruction("quoted", None, '"rain falls"') and not check_instruction("quoted", None, "rain")
    assert check_instruction("starts_with", "Yes", "Yes, water is wet.") and not check_instruction("starts_with", "Yes", "Yesterday")
    assert check_instruction("json_key", "animal", '{"animal": "cat"}') and not check_instruction("json_key", "animal", "cat")
    assert not check_instruction("lowercase", None, "   ")


def test_code_runner():
    assert run_code_test("def f(x):\n    return x + 1\nassert f(1) == 2\n")
    assert not run_code_test("def f(x):\n    return x\nassert f(1) == 2\n")
    assert not run_code_test("while True:\n    pass\n", timeout=1.0)


def test_data_files_match_builder(tmp_path, monkeypatch):
    import eval.lm_eval_tasks.build_data as bd

    committed = {p.name: p.read_text() for p in bd.DATA.glob("*.jsonl")}
    monkeypatch.setattr(bd, "DATA", tmp_path)
    bd.build()
    rebuilt = {p.name: p.read_text() for p in tmp_path.glob("*.jsonl")}
    assert rebuilt == committed
    for name in ("commonsense.jsonl", "facts.jsonl"):
        rows = [json.loads(line) for line in rebuilt[name].splitlines()]
        assert len(rows) >= 30 and all(len(r.get("endings", r.get("choices"))) == 4 for r in rows)
        labels = [r["label"] for r in rows]
        assert len(set(labels)) == 4  # the right answer is not always in the same slot


def test_paper_suite_preflight_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr("eval.prior.dataset_cached", lambda repo: False)
    with pytest.raises(PriorSuiteError, match="hub") as err:
        preflight("paper", allow_code_execution=False)
    assert "humaneval" not in str(err.value) and "mmlu" in str(err.value)


@pytest.mark.slow
def test_punkt_tab_missing_and_fallback(tmp_path):
    # in a subprocess: NLTK's search path and lm-eval's ifeval import are process-global
    code = (
        "import nltk, sys\n"
        "nltk.data.path[:] = [sys.argv[1]]\n"
        "from eval.prior import ensure_punkt_tab, PriorSuiteError\n"
        "try:\n    ensure_punkt_tab(False)\n    print('NO-ERROR')\nexcept PriorSuiteError as e:\n    print('ERR', 'punkt_tab' in str(e))\n"
        "print(ensure_punkt_tab(True))\n"
        "from lm_eval.tasks.ifeval import instructions_util as iu\n"
        "print(iu.count_sentences('Hello Mr. Smith. This is a test. Bye!'))\n"
        "print(len(nltk.word_tokenize('Hello WORLD, again')))\n"
    )
    env = {**os.environ, "SDFT_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT), "NLTK_DATA": str(tmp_path / "none")}
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "none")], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.split()
    assert "ERR" in proc.stdout and "True" in proc.stdout
    assert "fallback" in lines
    assert lines[-2] == "3" and lines[-1] == "4"


def test_group_sample_count():
    from eval.prior import _n_samples

    r = {"n-samples": {"a": {"effective": 2}, "b": {"effective": 3}, "c": {"effective": 5}},
         "group_subtasks": {"mmlu": ["g1", "c"], "g1": ["a", "b"]}}
    assert _n_samples(r, "mmlu") == 10 and _n_samples(r, "g1") == 5 and _n_samples(r, "zz") is None


def test_code_stand_in_data_is_solvable_and_strict():
    from eval.lm_eval_tasks.utils import DATA, process_code

    solutions = {"add": " a + b", "is_even": " n % 2 == 0", "square": " x * x", "maximum": " max(xs)",
                 "reverse_string": " s[::-1]", "count_vowels": " sum(c in 'aeiou' for c in s)",
                 "factorial": " 1 if n == 0 else n * factorial(n - 1)", "first_char": " s[0]",
                 "average": " sum(xs) / len(xs)", "is_palindrome": " s == s[::-1]", "clamp": " max(lo, min(x, hi))",
                 "count_words": " len(text.split())"}
    near_misses = {"maximum": " max(x for x in xs if x)", "count_vowels": " len(set(c for c in s if c in 'aeiou'))"}
    rows = [json.loads(line) for line in (DATA / "code.jsonl").read_text().splitlines()]
    assert {r["entry_point"] for r in rows} == set(solutions)
    for r in rows:
        assert process_code(r, [solutions[r["entry_point"]]])["pass@1"] == 1.0, r["id"]
        assert process_code(r, [" None"])["pass@1"] == 0.0, r["id"]
        if r["entry_point"] in near_misses:
            assert process_code(r, [near_misses[r["entry_point"]]])["pass@1"] == 0.0, r["id"]
