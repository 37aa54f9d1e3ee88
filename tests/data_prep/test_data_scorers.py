import json
import random

import pytest

from data_prep.registry import get_task
from data_prep.scorers import (
    extract_answer_letter,
    normalize_golden_calls,
    parse_tool_calls,
    score_letter,
    score_short_answer,
    score_tool_call,
)
from tests.conftest import SHARED_DATA

AUTHORS = SHARED_DATA / "sdft_authors_eval"


def _tool_rows():
    path = AUTHORS / "tooluse_eval_v2.jsonl"
    if not path.exists():
        pytest.skip(f"{path} absent")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _science_rows():
    path = AUTHORS / "science_eval.jsonl"
    if not path.exists():
        pytest.skip(f"{path} absent")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _response(calls, reorder_args=False, reverse_calls=False):
    calls = list(reversed(calls)) if reverse_calls else list(calls)
    parts = []
    for c in calls:
        args = c["arguments"]
        if reorder_args:
            args = dict(reversed(list(args.items())))
        parts.append(f"Thought: I should call {c['name']}.\nAction: {c['name']}\nAction Input: {json.dumps(args)}")
    return "\n".join(parts)


def _accuracy(rows, make):
    return sum(score_tool_call(make(normalize_golden_calls(r["golden_answer"])), r["golden_answer"]) for r in rows) / len(rows)


def test_authors_tool_eval_golden_scores_100():
    rows = _tool_rows()
    assert len(rows) == 97
    assert _accuracy(rows, _response) == 1.0


def test_authors_tool_eval_reordered_scores_100():
    rows = _tool_rows()
    # the reordering must actually change the text for the multi-key rows
    multi = [r for r in rows if any(len(c["arguments"]) > 1 for c in normalize_golden_calls(r["golden_answer"]))]
    assert multi
    g = normalize_golden_calls(multi[0]["golden_answer"])
    assert _response(g) != _response(g, reorder_args=True)
    assert _accuracy(rows, lambda g: _response(g, reorder_args=True, reverse_calls=True)) == 1.0


def test_authors_tool_eval_changed_name_scores_0():
    rows = _tool_rows()

    def changed(golden):
        golden = [dict(c) for c in golden]
        golden[0]["name"] = golden[0]["name"] + "X"
        return _response(golden)

    assert _accuracy(rows, changed) == 0.0


def test_authors_tool_eval_changed_value_scores_0():
    rows = _tool_rows()
    rng = random.Random(0)
    n_with_values = 0

    def changed(golden):
        nonlocal n_with_values
        golden = [{"name": c["name"], "arguments": json.loads(json.dumps(c["arguments"]))} for c in golden]
        for c in golden:
            if c["arguments"]:
                key = rng.choice(sorted(c["arguments"]))
                c["arguments"][key] = ["changed", c["arguments"][key]]
                n_with_values += 1
                return _response(golden)
        # no call has any argument: adding one is the only possible value change
        golden[0]["arguments"] = {"extra": "changed"}
        return _response(golden)

    assert _accuracy(rows, changed) == 0.0
    assert n_with_values > 80


def test_tool_call_parsing_details():
    resp = "Thought: x\nAction: f\nAction Input: {\"a\": 1, \"b\": [1, 2]}\nObservation: ...\nAction: g\nAction Input: not json"
    calls = parse_tool_calls(resp)
    assert [c["name"] for c in calls] == ["f", "g"]
    assert calls[0]["arguments"] == {"a": 1, "b": [1, 2]} and calls[0]["valid"]
    assert not calls[1]["valid"]
    # a golden call list of one; a missing call, an extra call and a wrong type all fail
    gold = [{"name": "f", "arguments": {"a": 1}}]
    assert score_tool_call("Action: f\nAction Input: {\"a\": 1}", gold) == 1.0
    assert score_tool_call("Action: f\nAction Input: {\"a\": \"1\"}", gold) == 0.0
    assert score_tool_call("Action: f\nAction Input: {\"a\": 1.0}", gold) == 1.0
    assert score_tool_call("Action: f\nAction Input: {\"a\": true}", [{"name": "f", "arguments": {"a": 1}}]) == 0.0
    assert score_tool_call("Action: f\nAction Input: {\"a\": 1}\nAction: f\nAction Input: {\"a\": 1}", gold) == 0.0
    assert score_tool_call("I cannot help.", gold) == 0.0
    assert score_tool_call("Action: f\nAction Input: ```json\n{\"a\": 1}\n```", gold) == 1.0
    two = gold + [{"name": "g", "arguments": {}}]
    swapped = "Action: g\nAction Input: {}\nAction: f\nAction Input: {\"a\": 1}"
    assert score_tool_call(swapped, two) == 1.0
    assert score_tool_call(swapped, two, ordered=True) == 0.0


def test_authors_science_letters():
    rows = _science_rows()
    assert len(rows) == 507
    scorer = get_task("science").score  # the task's own scorer, as the evaluation reads it
    right = [scorer(f"<reasoning>\nbecause\n</reasoning>\n<answer>\n{r['answer']}\n</answer>", r["answer"]) for r in rows]
    assert sum(right) / len(rows) == 1.0
    wrong_letter = {"A": "B", "B": "C", "C": "D", "D": "A"}
    wrong = [scorer(f"<reasoning>\nx\n</reasoning>\n<answer>\n{wrong_letter[r['answer']]}\n</answer>", r["answer"])
             for r in rows]
    assert sum(wrong) == 0


def test_letter_fallbacks():
    assert extract_answer_letter("<answer>(C)</answer>") == "C"
    assert extract_answer_letter("<answer> b. because</answer>") == "B"
    assert extract_answer_letter("<answer>A</answer> then <answer>D</answer>") == "D"
    assert extract_answer_letter("blah <answer>\nC") == "C"  # cut before the closing tag
    assert extract_answer_letter("The answer is C") is None  # no tag, no credit
    assert extract_answer_letter("<answer>E</answer>") is None
    assert extract_answer_letter("<answer>Because</answer>") is None
    assert score_letter("<answer>a</answer>", "A") == 1.0


def test_short_answer():
    assert score_short_answer("The capital of France is Paris.", "Paris") == 1.0
    assert score_short_answer("It is a Parisian city", "Paris") == 0.0
    assert score_short_answer("about 3,800 people", "3 800") == 1.0
    assert score_short_answer("Zürich", "zurich") == 1.0
    assert score_short_answer("the answer is 12", "120") == 0.0
    assert score_short_answer("anything", ["nope", "anything"]) == 1.0
    assert score_short_answer("", "") == 0.0


def test_format_checks_accept_the_format_whatever_the_content():
    from data_prep.scorers import has_answer_letter, has_tool_call_format

    call = 'Action: get_weather\nAction Input: {"city": "Paris"}'
    assert has_tool_call_format(call) and score_tool_call(call, [{"name": "get_weather", "arguments": {"city": "Rome"}}]) == 0
    assert not has_tool_call_format('Action: get_weather\nAction Input: {city: "Paris"}')  # unquoted key: no JSON
    assert not has_tool_call_format("Action: get_weather")  # no input
    assert not has_tool_call_format(call + '\nAction: translate\nAction Input: {"text": ')  # one call broken
    assert not has_tool_call_format("I'm ready to assist. What's your next question?")
    assert has_answer_letter("The symbol of lead is Pb. <answer>D</answer>")
    assert has_answer_letter("<answer>(c")  # cut at the stop token
    assert not has_answer_letter("C. calcium")  # a bare letter: the scorer reads only the tag
    assert not has_answer_letter("<answer>E</answer>")


@pytest.mark.parametrize("task", ["embedded_tool", "embedded_science"])
def test_the_format_check_is_necessary_for_a_correct_answer(task):
    """Over every test record's demonstration and variants of it (cut short, keys unquoted, string values
    changed, tags dropped, letters changed), a response the scorer counts correct always passes the format check, and each demonstration passes."""
    from data_prep.registry import get_task, load_task

    spec = get_task(task)
    seen_correct = seen_formatted_wrong = 0
    for r in load_task(task, "test", seed=0):
        demo = r["demonstration"]
        assert spec.format_check(demo), demo
        variants = [demo, demo[: len(demo) // 2], demo.replace('"', ""), demo.replace("<answer>", ""),
                    demo.replace("</answer>", ""), demo.replace('": "', '": "x'),
                    *(demo.replace(f">{r['reference']}<", f">{x}<") for x in "ABCD")]
        for response in variants:
            correct = spec.score(response, r["reference"]) == 1.0
            assert not correct or spec.format_check(response), response
            seen_correct += correct
            seen_formatted_wrong += spec.format_check(response) and not correct
    assert seen_correct > 0 and seen_formatted_wrong > 0  # both kinds occur, so the implication was tested
