"""eval.evaluate: the function behind `python -m eval.run`, and the experiments' evaluation of one run with it."""

import json
from types import SimpleNamespace

import pytest

import eval as eval_pkg
from data_prep.registry import get_task
from eval.config import EvalConfig, build_eval_config
from eval.evaluation import EvaluationError, evaluate

MODEL = "embedded:tiny-llama"


def run_eval(model, task: str | None = None, output_dir=None, judge=None, **values) -> dict:
    """``evaluate`` as a command line calls it: the task looked up, the config resolved from the preset once."""
    return evaluate(model, get_task(task) if task else None, build_eval_config(values), judge=judge,
                    output_dir=output_dir)


def _on_disk(result: dict) -> dict:
    return json.loads(json.dumps(result, default=str))


def test_evaluate_returns_the_eval_json_and_writes_it(tmp_path):
    assert eval_pkg.evaluate is evaluate
    out = tmp_path / "out"
    result = run_eval(MODEL, "embedded_tool", out, n=3, max_new_tokens=6)
    assert set(result) == {"evaluations", "model", "model_path", "run_config", "preset", "scores"}
    assert result["model"] == MODEL and result["preset"] == "mini" and result["run_config"] is None
    st = result["evaluations"]["student"]
    assert st["task"] == "embedded_tool" and st["variant"] == "student" and st["n"] == 3
    assert st["settings"]["split"] == "test" and st["settings"]["predictions"] == "predictions_student.jsonl"
    assert st["settings"]["decoding"]["max_new_tokens"] == 6 and st["settings"]["n_requested"] == 3
    metrics = [s["metric"] for s in st["scores"]]
    assert metrics == ["tool_call_match", "format_rate", "mean_generated_tokens"]
    assert {s["source"] for s in result["scores"]} == {"embedded_tool/student"} and len(result["scores"]) == 3
    assert json.loads((out / "eval.json").read_text()) == _on_disk(result)
    preds = [json.loads(line) for line in (out / "predictions_student.jsonl").read_text().splitlines()]
    assert len(preds) == 3
    # the format rate is the share of answers the tool-call parser accepts, recorded per answer
    from data_prep.scorers import has_tool_call_format

    assert [p["format_ok"] for p in preds] == [has_tool_call_format(p["response"]) for p in preds]
    assert st["scores"][1]["value"] == pytest.approx(100 * sum(p["format_ok"] for p in preds) / 3)

    # another variant into the same directory keeps the first; a loaded model + tokenizer, without output_dir,
    # writes nothing and scores the same (greedy decoding)
    teacher = run_eval(MODEL, "embedded_tool", out, n=3, max_new_tokens=6, variant="teacher", template="same_format")
    assert set(teacher["evaluations"]) == {"student", "teacher"}
    assert set(json.loads((out / "eval.json").read_text())["evaluations"]) == {"student", "teacher"}
    from sdft.models import load_model_and_tokenizer

    again = run_eval(load_model_and_tokenizer(MODEL), "embedded_tool", n=3, max_new_tokens=6)
    assert list(tmp_path.iterdir()) == [out] and again["evaluations"]["student"]["settings"]["predictions"] is None
    assert [s["value"] for s in again["evaluations"]["student"]["scores"]] == [s["value"] for s in st["scores"]]


def test_evaluate_prior_suite_only(tmp_path):
    result = run_eval(MODEL, None, tmp_path, skip_task=True, prior_suite="embedded",
                      prior_benchmarks=["facts", "arithmetic"], limit=2, batch_size=2)
    assert result["evaluations"] == {}
    facts = result["prior"]["embedded"]["benchmarks"]["facts"]
    assert facts["n"] == 2 and 0 <= facts["value"] <= 100
    assert {s["source"] for s in result["scores"]} == {"prior:embedded:facts", "prior:embedded:arithmetic",
                                                       "prior:embedded"}
    # arithmetic (an extra) is reported but not averaged
    average = next(s for s in result["scores"] if s["source"] == "prior:embedded")
    assert average["value"] == facts["value"] and average["n"] == 1 and average["settings"]["average_of"] == ["facts"]
    assert json.loads((tmp_path / "eval.json").read_text()) == _on_disk(result)


def test_prior_suite_batch_size(monkeypatch):
    # the preset's prior_batch_size unless --batch-size is given (then it applies to the prior suite too)
    import eval.prior

    seen = []

    def fake_prior(model, tokenizer, suite, limit, **kw):
        seen.append(kw["batch_size"])
        return {"benchmarks": {}, "average": None}

    monkeypatch.setattr(eval.prior, "evaluate_prior", fake_prior)
    run_eval(MODEL, skip_task=True, prior_suite="embedded", preset="mini")
    run_eval(MODEL, skip_task=True, prior_suite="embedded", preset="mini", batch_size=4)
    from sdft.config_layers import load_preset

    assert seen == [load_preset("mini")["eval"]["prior_batch_size"], 4] and seen[0] == 32


def test_evaluate_argument_errors(tmp_path):
    from sdft.errors import ConfigError

    with pytest.raises(EvaluationError, match="task is required"):
        evaluate(MODEL, None, build_eval_config())
    with pytest.raises(ConfigError, match="variant"):  # resolving the config checks the choices
        build_eval_config({"variant": "oracle"})
    with pytest.raises(EvaluationError, match="variant"):  # and so does the evaluation of one made by hand
        evaluate(MODEL, get_task("embedded_tool"), EvalConfig(variant="oracle"))
    (tmp_path / "config.yaml").write_text("task: embedded_tool\n")
    with pytest.raises(EvaluationError, match="without model/"):
        evaluate(tmp_path, get_task("embedded_tool"), build_eval_config())


def test_the_command_line_resolves_the_config_from_the_preset_and_the_given_options():
    from eval.run import parse_command_line

    args, cfg = parse_command_line(["--model", MODEL])
    assert cfg == build_eval_config() and cfg.preset == "mini" and cfg.max_new_tokens == 64  # mini's eval block
    assert parse_command_line(["--model", MODEL, "--allow-code-execution"])[1].allow_code_execution is True
    args, cfg = parse_command_line(["--model", MODEL, "--n", "2", "--teacher", "--output", "x", "--preset", "smoke"])
    assert (cfg.n, cfg.variant, cfg.preset, cfg.max_new_tokens, args.output) == (2, "teacher", "smoke", 32, "x")
    args, cfg = parse_command_line(["--model", MODEL, "n=3", "max_new_tokens=5", "--rag"])
    assert (cfg.n, cfg.max_new_tokens, cfg.variant) == (3, 5, "rag")
    with pytest.raises(EvaluationError, match="pick one"):
        parse_command_line(["--model", MODEL, "--rag", "--teacher"])


def test_a_judged_task_uses_its_local_judge_unless_a_judge_model_is_named(tmp_path, monkeypatch):
    from data_prep.fact_judge import FactJudge
    from eval.judge import DEFAULT_JUDGE_MODEL, LLMJudge, judge_for
    from eval.run import parse_command_line

    monkeypatch.setenv("SDFT_CACHE", str(tmp_path))  # where an LLMJudge keeps its cache
    assert isinstance(judge_for(get_task("embedded_knowledge")), FactJudge)
    named = judge_for(get_task("embedded_knowledge"), "some-judge", timeout=5, deadline=9)
    assert isinstance(named, LLMJudge) and named.model == "some-judge" and named.client.deadline == 9
    default = judge_for(get_task("knowledge"))  # no local judge: the LLM judge of the default model
    assert isinstance(default, LLMJudge) and default.model == DEFAULT_JUDGE_MODEL
    with pytest.raises(KeyError, match="rule-based"):
        judge_for(get_task("embedded_tool"))
    assert parse_command_line(["--model", MODEL, "--judge-model", "some-judge"])[1].judge_model == "some-judge"

    offline = run_eval(MODEL, "embedded_knowledge", n=4, max_new_tokens=4)["evaluations"]["student"]
    assert offline["settings"]["judge"]["judge"] == "facts"
    assert offline["scores"][0]["metric"] == "judge_strict_accuracy" and offline["scores"][0]["n"] == 4

    class NamedJudge:  # stands in for the LLM judge of a named model (no endpoint in tests)
        def __init__(self, model, timeout=None, deadline=None):
            self.model = model

        def settings(self):
            return {"judge_model": self.model}

        def judge_records(self, records, responses, task, progress=None):
            return FactJudge().judge_records(records, responses)

    monkeypatch.setattr("eval.judge.LLMJudge", NamedJudge)
    named_run = run_eval(MODEL, "embedded_knowledge", n=4, max_new_tokens=4, judge_model="some-judge")
    assert named_run["evaluations"]["student"]["settings"]["judge"] == {"judge_model": "some-judge"}


def test_knowledge_scores_per_question_kind(monkeypatch):
    """Overall strict and lenient accuracy first (the headline), then per kind in the order direct, paraphrased,
    indirect, other kinds by name; records without a kind count only overall. Values computed by hand."""
    from eval.judge import JudgeResult
    from eval.task_eval import evaluate_task
    from sdft.models import load_model_and_tokenizer

    plan = [("indirect", "CORRECT"), ("direct", "CORRECT"), ("direct", "PARTIALLY_CORRECT"), ("zeta", "INCORRECT"),
            ("paraphrased", "INCORRECT"), ("direct", "INCORRECT"), ("indirect", "PARTIALLY_CORRECT"),
            ("alpha", "UNPARSEABLE"), (None, "CORRECT")]
    records = [{"id": f"r{i}", "task": "embedded_knowledge", "prompt": [{"role": "user", "content": f"q{i}?"}],
                "demonstration": "d", "reference": "ref", "meta": {} if kind is None else {"kind": kind}}
               for i, (kind, _) in enumerate(plan)]

    class FixedJudge:
        def settings(self):
            return {"judge": "fixed"}

        def judge_records(self, records, responses, task, progress=None):
            verdicts = [plan[int(r["id"][1:])][1] for r in records]
            return JudgeResult(verdicts=verdicts, raw=verdicts, summary={})

    model, tok = load_model_and_tokenizer(MODEL)
    scores = evaluate_task(model, tok, records, get_task("embedded_knowledge"), max_new_tokens=2,
                           judge=FixedJudge())["scores"]
    got = [(s["metric"], round(s["value"], 2), s["n"]) for s in scores if s["unit"] == "percent"]
    assert got == [
        ("judge_strict_accuracy", 33.33, 9), ("judge_lenient_accuracy", 55.56, 9),  # 3 / 9 and 5 / 9
        ("judge_strict_accuracy_direct", 33.33, 3), ("judge_lenient_accuracy_direct", 66.67, 3),
        ("judge_strict_accuracy_paraphrased", 0.0, 1), ("judge_lenient_accuracy_paraphrased", 0.0, 1),
        ("judge_strict_accuracy_indirect", 50.0, 2), ("judge_lenient_accuracy_indirect", 100.0, 2),
        ("judge_strict_accuracy_alpha", 0.0, 1), ("judge_lenient_accuracy_alpha", 0.0, 1),
        ("judge_strict_accuracy_zeta", 0.0, 1), ("judge_lenient_accuracy_zeta", 0.0, 1),
    ]
    by_metric = {s["metric"]: s for s in scores}
    assert by_metric["judge_strict_accuracy"]["n_unparseable"] == 1
    assert by_metric["judge_strict_accuracy_alpha"]["n_unparseable"] == 1
    assert by_metric["judge_strict_accuracy_direct"]["n_unparseable"] == 0
    assert by_metric["judge_lenient_accuracy_indirect"]["kind"] == "indirect"
    assert scores[-1]["metric"] == "mean_generated_tokens"


def test_evaluate_run_of_a_grid_reuses_the_base_prior_suite(tmp_path):
    """experiments.evaluation: test split + prior suite into the run dir, val/ for sweep points, the base model's
    prior suite computed once per results tree; configs without teacher_template / data_dir are fine."""
    from experiments.evaluation import evaluate_run
    from experiments.grid import RunSpec
    from sdft.registry import get_method

    root = tmp_path / "results"
    extra = {"n": 2, "max_new_tokens": 4}

    def spec(task, method="base", sweep_point=None):
        return RunSpec("t", task, method, 0, "smoke", str(root / task / method / "seed0"),
                       sweep_point=sweep_point or {}, eval_options=extra)

    def cfg(task, method="base"):  # what evaluate_run reads of a RunConfig
        return SimpleNamespace(model=MODEL, method_spec=get_method(method), task_spec=get_task(task))

    first = json.loads(evaluate_run(spec("embedded_tool"), cfg("embedded_tool"), MODEL).read_text())
    assert first["evaluations"]["student"]["n"] == 2 and "reused_from_cache" not in first["prior"]["embedded"]
    assert len(list((root / "_prior_cache").glob("*.json"))) == 1
    second = json.loads(evaluate_run(spec("embedded_science"), cfg("embedded_science"), MODEL).read_text())
    assert second["prior"]["embedded"]["reused_from_cache"] is True
    assert second["prior"]["embedded"]["benchmarks"] == first["prior"]["embedded"]["benchmarks"]
    assert second["evaluations"]["student"]["task"] == "embedded_science"
    assert {"prior:embedded", "embedded_science/student"} <= {s["source"] for s in second["scores"]}

    point = spec("embedded_tool", method="sft", sweep_point={"learning_rate": 0.1})
    point.eval_options = {**extra, "prior_suite": "none"}
    sft_cfg = SimpleNamespace(teacher_template="same_format", data_dir=None, method_spec=get_method("sft"),
                              task_spec=get_task("embedded_tool"))
    path = evaluate_run(point, sft_cfg, MODEL, with_validation=True)
    val = json.loads((path.parent / "val" / "eval.json").read_text())
    assert val["evaluations"]["student"]["settings"]["split"] == "val" and "prior" not in val
    assert json.loads(path.read_text())["evaluations"]["student"]["settings"]["split"] == "test"
