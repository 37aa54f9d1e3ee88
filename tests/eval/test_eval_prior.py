"""Prior-capability suite wiring (lm-eval on the tiny random model), the stand-in checkers, the offline guards."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from eval.lm_eval_tasks.utils import check_instruction, run_code_test
from eval.prior import EMBEDDED_SUITE, PriorSuiteError, ensure_punkt_tab, evaluate_prior, preflight

ROOT = Path(__file__).resolve().parents[2]


def test_embedded_suite_runs_through_lm_eval():
    from sdft.models import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer("embedded:tiny-llama")
    names = ["commonsense", "winograd", "facts", "truthful", "arithmetic", "code"]
    res = evaluate_prior(model, tok, "embedded", limit=3, benchmarks=names)
    assert res["suite"] == "embedded" and "STAND-IN" in res["label"]
    assert set(res["benchmarks"]) == {"commonsense", "winograd", "facts", "truthful", "arithmetic"}
    assert "code" in res["skipped"] and "--allow-code-execution" in res["skipped"]["code"]
    for name, b in res["benchmarks"].items():
        assert b["n"] == 3 and 0.0 <= b["value"] <= 100.0
        assert b["stand_in_for"] == (list(EMBEDDED_SUITE[name].stand_in_for) or None)
        assert b["in_average"] is (name != "arithmetic")
    # the extra (arithmetic) is reported but not averaged
    assert res["average_of"] == ["commonsense", "winograd", "facts", "truthful"]
    vals = [res["benchmarks"][k]["value"] for k in res["average_of"]]
    assert res["average"] == pytest.approx(sum(vals) / len(vals))
    from eval.prior import suite_fingerprint

    assert res["tasks_fingerprint"] == suite_fingerprint("embedded") and len(res["tasks_fingerprint"]) == 16
    assert suite_fingerprint("paper") is None


def test_each_benchmark_is_timed_and_scores_as_one_lm_eval_call_per_chat_template_group():
    """One lm-eval call per benchmark (timed: wall_s) scores every metric exactly as the single call per chat-template
    group that ran before, computed here as the reference."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from eval.prior import TASKS_DIR, _make_lm
    from sdft.models import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer("embedded:tiny-llama")
    names = ["commonsense", "winograd", "facts", "truthful", "arithmetic", "instructions"]
    res = evaluate_prior(model, tok, "embedded", limit=6, benchmarks=names, batch_size=4, seed=3)
    assert list(res["benchmarks"]) == names  # those without the chat template first, as before
    walls = [b["wall_s"] for b in res["benchmarks"].values()]
    assert all(w >= 0 for w in walls) and sum(walls) <= res["wall_s"] + 0.05 * (len(walls) + 1)  # (0.1 s rounding)
    lm = _make_lm(model, tok, "hf", 4, None, "shared_context")
    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False)
    for chat in (False, True):
        group = {k: EMBEDDED_SUITE[k] for k in names if EMBEDDED_SUITE[k].chat_template == chat}
        ref = lm_eval.simple_evaluate(
            model=lm, tasks=[b.task for b in group.values()], num_fewshot=None, limit=6, task_manager=manager,
            apply_chat_template=chat, log_samples=False, random_seed=3, numpy_random_seed=3, torch_random_seed=3,
            fewshot_random_seed=3, bootstrap_iters=0)["results"]
        for name, bench in group.items():
            want = {k: v for k, v in ref[bench.task].items() if isinstance(v, (int, float)) and "stderr" not in k}
            assert res["benchmarks"][name]["all_metrics"] == want, name


def test_the_suite_starts_no_subprocess_and_leaves_lm_evals_environment_report_in_place(monkeypatch):
    """lm-eval's closing environment report (pip and git in subprocesses, ~1 s a call) is skipped during our calls
    only; the metrics are lm-eval's own (the test above compares them with plain ``simple_evaluate``)."""
    import lm_eval.evaluator

    from sdft.models import load_model_and_tokenizer

    report = lm_eval.evaluator.add_env_info, lm_eval.evaluator.get_git_commit_hash
    model, tok = load_model_and_tokenizer("embedded:tiny-llama")
    started = []
    real_popen = subprocess.Popen

    def popen(*args, **kwargs):
        started.append(args[0] if args else kwargs.get("args"))
        return real_popen(*args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", popen)
    res = evaluate_prior(model, tok, "embedded", limit=2, benchmarks=["commonsense", "instructions"])
    assert set(res["benchmarks"]) == {"commonsense", "instructions"}
    assert started == []
    assert (lm_eval.evaluator.add_env_info, lm_eval.evaluator.get_git_commit_hash) == report  # restored for anyone calling lm-eval after us


def test_embedded_suite_selection():
    from eval.prior import PAPER_SUITE, select_benchmarks

    # one stand-in per benchmark of the paper's suite, plus the extras
    stand_ins = sorted(p for b in EMBEDDED_SUITE.values() if not b.extra for p in b.stand_in_for)
    assert stand_ins == sorted(PAPER_SUITE)
    specs, skipped = select_benchmarks("embedded")
    assert set(specs) == {"commonsense", "winograd", "facts", "truthful", "instructions"}
    assert set(skipped) == {"code"}  # the extra is neither run nor listed as skipped
    specs, skipped = select_benchmarks("embedded", allow_code_execution=True)
    assert "code" in specs and not skipped and "arithmetic" not in specs
    specs, _ = select_benchmarks("embedded", ["arithmetic", "facts"])
    assert set(specs) == {"arithmetic", "facts"}
    with pytest.raises(ValueError, match="unknown benchmarks"):
        select_benchmarks("embedded", ["hellaswag"])


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
    assert check_instruction("ends_with", "The end.", '"Trees grow. the end."')  # IFEval: quotes and case ignored
    assert not check_instruction("ends_with", "The end.", "The end. Trees grow.")
    assert check_instruction("bullets", 2, "* red\n* blue") and check_instruction("bullets", 2, "- red\n- blue\n")
    assert not check_instruction("bullets", 2, "* red\n* blue\n* green") and not check_instruction("bullets", 2, "red, blue")
    assert check_instruction("title", None, "<<Rain at Night>>\nIt rained.") and not check_instruction("title", None, "Rain")
    assert check_instruction("question", None, "Do you like rain?") and not check_instruction("question", None, "Rain? Yes.")
    assert check_instruction("postscript", None, "Hi.\nP.S. Bye.") and not check_instruction("postscript", None, "Hi. PS")
    assert check_instruction("placeholder", None, "Come on [date]!") and not check_instruction("placeholder", None, "Come!")


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
    assert rebuilt == committed and set(rebuilt) == set(bd.FILES)


def _rows(name: str) -> list[dict]:
    from eval.lm_eval_tasks.utils import DATA

    return [json.loads(line) for line in (DATA / name).read_text().splitlines()]


MC_FILES = {"commonsense": ("commonsense.jsonl", "context", "endings"), "winograd": ("winograd.jsonl", "sentence", "contexts"),
            "facts": ("facts.jsonl", "question", "choices"), "truthful": ("truthful.jsonl", "question", "choices")}


@pytest.mark.parametrize("name", ["commonsense.jsonl", "winograd.jsonl", "facts.jsonl", "truthful.jsonl",
                                  "instructions.jsonl", "code.jsonl", "arithmetic.jsonl"])
def test_data_file_has_100_unique_items(name):
    # one item is at most one point: a few points of forgetting are measurable
    rows = _rows(name)
    key = {"commonsense.jsonl": "context", "winograd.jsonl": "sentence", "instructions.jsonl": "prompt",
           "code.jsonl": "prompt"}.get(name, "question")
    assert len(rows) >= 100 and len({r[key] for r in rows}) == len(rows)
    assert len({r["id"] for r in rows}) == len(rows)


@pytest.mark.parametrize("bench", sorted(MC_FILES))
def test_multiple_choice_data(bench):
    from eval.prior import CHANCE

    name, _, field = MC_FILES[bench]
    rows = _rows(name)
    k = {len(r[field]) for r in rows}
    assert k == ({2} if bench == "winograd" else {4})
    assert all(len(set(r[field])) == len(r[field]) and 0 <= r["label"] < len(r[field]) for r in rows)
    assert CHANCE[bench] == pytest.approx(sum(1 / len(r[field]) for r in rows) / len(rows))
    labels = [r["label"] for r in rows]
    for slot in range(len(rows[0][field])):  # the right answer is spread over the slots
        assert abs(labels.count(slot) / len(rows) - CHANCE[bench]) < 0.1
    if bench == "winograd":
        return
    # no shallow cue finds the right answer: picking the shortest or the longest choice is near chance
    for pick in (min, max):
        hits = []
        for r in rows:
            lengths = [len(c) for c in r[field]]
            best = [i for i, n in enumerate(lengths) if n == pick(lengths)]
            hits.append((r["label"] in best) / len(best))
        assert sum(hits) / len(hits) < CHANCE[bench] + 0.12, (bench, pick.__name__)


def test_winograd_items_are_twins():
    rows = _rows("winograd.jsonl")
    assert len(rows) % 2 == 0
    for a, b in zip(rows[::2], rows[1::2]):
        # the same options and contexts, the trigger after the blank flips the answer
        assert a["contexts"] == b["contexts"] and {a["label"], b["label"]} == {0, 1}
        assert a["continuation"] != b["continuation"]
        before = a["sentence"].split("_")[0]
        assert a["contexts"] == [before + a["option1"], before + a["option2"]]
        assert a["sentence"].replace("_", a[f"option{a['answer']}"]).endswith(a["continuation"])


def test_truthful_is_separate_from_facts():
    truthful = {r["question"] for r in _rows("truthful.jsonl")}
    assert not truthful & {r["question"] for r in _rows("facts.jsonl")}
    # not a cue either: the true answer is not simply the one that starts with "No" among "Yes" answers
    hits = []
    for r in _rows("truthful.jsonl"):
        nos = [i for i, c in enumerate(r["choices"]) if c.startswith("No")]
        hits.append((r["label"] in nos) / len(nos) if nos else 0.25)
    assert sum(hits) / len(hits) < 0.4


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


def _compliant_response(check: str, arg) -> str:
    """A response that follows one instruction of the IFEval stand-in (for the oracle model below)."""
    return {"lowercase": "the sea is calm today.", "uppercase": "THE SEA IS CALM.", "contains": f"It is {arg} now.",
            "no_comma": "The sea is calm.", "ends_with": f"The sea is calm. {arg}", "starts_with": f"{arg} the sea is calm.",
            "max_words": "Calm sea.", "quoted": '"The sea is calm."', "json_key": json.dumps({arg: "sea"}),
            "bullets": "\n".join(f"* word{i}" for i in range(arg if isinstance(arg, int) else 0)), "title": "<<The Calm Sea>>",
            "question": "Is the sea calm?", "postscript": "The sea is calm.\nP.S. It was windy yesterday.",
            "placeholder": "Join us on [date] at the sea."}[check]


class _OracleLM:
    """An lm-eval model that knows the answers: log-likelihood 0 for the right choice, -1 for the others (or
    always choice 0 with ``first=True``); generation returns the reference answer. It also checks that lm-eval
    builds the requests from the data as the tasks mean (the continuation is a choice, or the context is)."""

    def __new__(cls, first: bool = False):
        from lm_eval.api.model import LM

        class Oracle(LM):
            def loglikelihood(self, requests, disable_tqdm=False):
                out = []
                for req in requests:
                    doc, (ctx, cont) = req.doc, req.args
                    if "contexts" in doc:  # winograd: one context per option, the same continuation
                        assert ctx == doc["contexts"][req.idx] and cont == " " + doc["continuation"]
                    else:
                        assert cont == " " + (doc.get("endings") or doc["choices"])[req.idx]
                    right = 0 if first else doc["label"]
                    out.append((0.0 if req.idx == right else -1.0, req.idx == right))
                return out

            def loglikelihood_rolling(self, requests, disable_tqdm=False):
                raise NotImplementedError

            def generate_until(self, requests, disable_tqdm=False):
                out = []
                for req in requests:
                    doc = req.doc
                    if "solution" in doc:
                        out.append(doc["solution"])
                    elif "answer" in doc:
                        out.append(f" {doc['answer']}")
                    else:
                        out.append(_compliant_response(doc["check"], json.loads(doc["arg"])))
                return out

        return Oracle()


def _run_tasks(lm, tasks: list[str], limit=None) -> dict:
    import lm_eval
    from lm_eval.tasks import TaskManager

    from eval.prior import TASKS_DIR

    res = lm_eval.simple_evaluate(model=lm, tasks=tasks, limit=limit, bootstrap_iters=0, confirm_run_unsafe_code=True,
                                  task_manager=TaskManager(include_path=str(TASKS_DIR), include_defaults=False))
    return res["results"]


def test_oracle_model_scores_100_and_first_choice_scores_chance():
    from eval.prior import CHANCE

    mc = {k: v for k, v in EMBEDDED_SUITE.items() if k in MC_FILES}
    results = _run_tasks(_OracleLM(), [b.task for b in mc.values()] + ["sdft_instructions", "sdft_arithmetic"])
    for name, b in mc.items():
        assert results[b.task][b.metric] == 1.0, name
    assert results["sdft_instructions"]["prompt_level_acc,none"] == 1.0
    assert results["sdft_arithmetic"]["exact_match,first_number"] == 1.0
    first = _run_tasks(_OracleLM(first=True), [b.task for b in mc.values()])
    for name, b in mc.items():
        assert abs(first[b.task][b.metric] - CHANCE[name]) < 0.1, name


def test_code_oracle_through_lm_eval():
    # lm-eval -> sdft_code.yaml -> process_code -> sandbox, on a few items (each program is a fresh interpreter)
    assert _run_tasks(_OracleLM(), ["sdft_code"], limit=4)["sdft_code"]["pass@1,none"] == 1.0


def test_code_stand_in_data_is_solvable_and_strict():
    from eval.lm_eval_tasks.utils import process_code

    rows = _rows("code.jsonl")
    assert len({r["entry_point"] for r in rows}) == len(rows)

    def passes(row, completion):  # our own reference code: run in-process (fast); model code goes to the sandbox
        try:
            exec(row["prompt"] + completion + "\n\n" + row["test"] + "\n", {})
            return True
        except Exception:
            return False

    near_misses = {"maximum": " max(x for x in xs if x)", "count_vowels": " len(set(c for c in s if c in 'aeiou'))",
                   "capitalize_first": " s.capitalize()", "starts_with_a": " s.islower()", "factorial": " n * factorial(n - 1)",
                   "is_odd": " n % 2", "count_words": " len(text)", "second_largest": " sorted(xs)[-2]"}
    for r in rows:
        assert r["prompt"].endswith("    return") and r["entry_point"] in r["prompt"]
        assert passes(r, r["solution"]), r["id"]
        for wrong in (" None", " 0", " True", " ''", " []"):
            assert not passes(r, wrong), (r["id"], wrong)
        if r["entry_point"] in near_misses:
            assert not passes(r, near_misses[r["entry_point"]]), r["id"]
    assert set(near_misses) <= {r["entry_point"] for r in rows}
    # and in the sandbox, as lm-eval scores them
    for r in rows[:2]:
        assert process_code(r, [r["solution"]])["pass@1"] == 1.0 and process_code(r, [" None"])["pass@1"] == 0.0
