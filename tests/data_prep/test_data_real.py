"""Real-data loaders against the public records in ../shared/data (skipped when that folder is absent)."""

import json

import pytest

from data_prep import science, tooluse
from data_prep.schema import RecordError, validate_records
from data_prep.sources import seeded_split
from data_prep.scorers import normalize_golden_calls, score_letter, score_tool_call


# ---------------------------------------------------------------------------------------------- science


@pytest.fixture(scope="module")
def sciknoweval_v1(shared_data):
    return science.load_l3_files(shared_data / "sciknoweval" / "Chemistry_L3_v1_0bd8bb3")


def test_sciknoweval_v1_yields_3542_four_choice_l3_questions(sciknoweval_v1):
    assert len(sciknoweval_v1) == 3542
    assert len({r["id"] for r in sciknoweval_v1}) == 3542
    validate_records(sciknoweval_v1, "sciknoweval")
    assert {r["reference"] for r in sciknoweval_v1} == set("ABCD")
    assert all(len(r["meta"]["options"]) == 4 for r in sciknoweval_v1)


def test_authors_science_eval_set_is_inside_ours_with_the_same_letter(shared_data, sciknoweval_v1):
    ours = {r["prompt"][-1]["content"]: r["reference"] for r in sciknoweval_v1}
    rows = [json.loads(line) for line in open(shared_data / "sdft_authors_eval" / "science_eval.jsonl")]
    assert len(rows) == 507
    missing = [row for row in rows if row["prompt"][-1]["content"].strip() not in ours]
    assert not missing
    wrong = [row for row in rows if ours[row["prompt"][-1]["content"].strip()] != row["answer"].strip()]
    assert not wrong


def test_science_prompt_asks_for_tags_and_reference_scores(sciknoweval_v1):
    rec = sciknoweval_v1[0]
    assert "<reasoning>" in rec["prompt"][0]["content"] and "<answer>" in rec["prompt"][0]["content"]
    assert score_letter(f"<reasoning>x</reasoning>\n<answer>\n{rec['reference']}\n</answer>", rec["reference"]) == 1.0


def test_science_split_is_75_5_20_disjoint_and_deterministic(sciknoweval_v1):
    parts = {s: seeded_split(sciknoweval_v1, s) for s in ("train", "val", "test")}
    sizes = {s: len(v) for s, v in parts.items()}
    assert sum(sizes.values()) == 3542
    assert abs(sizes["train"] / 3542 - 0.75) < 0.01 and abs(sizes["test"] / 3542 - 0.20) < 0.01
    ids = [set(r["id"] for r in v) for v in parts.values()]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    # the same partition whatever the input order
    again = seeded_split(list(reversed(sciknoweval_v1)), "test")
    assert [r["id"] for r in again] == [r["id"] for r in parts["test"]]
    other = seeded_split(sciknoweval_v1, "test", seed=1)
    assert [r["id"] for r in other] != [r["id"] for r in parts["test"]]


def test_sciknoweval_malformed_row_names_file_line_and_field(tmp_path):
    good = {"question": "Q?", "choices": {"text": ["a", "b", "c", "d"], "label": list("ABCD")}, "answerKey": "B",
            "type": "mcq-4-choices", "details": {"level": "L3", "task": "t"}}
    other = {**good, "details": {"level": "L2"}}
    bad = {**good, "answerKey": "E"}
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in (good, other, bad)) + "\n")
    with pytest.raises(RecordError) as err:
        science.load_l3_files(tmp_path)
    assert "rows.jsonl" in str(err.value) and "line 3" in str(err.value) and "answerKey" in str(err.value)
    recs = science.load_l3_files(tmp_path, skip_invalid=True)
    assert len(recs) == 1 and recs[0]["reference"] == "B"
    path.write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(RecordError, match="line 2"):
        science.load_l3_files(tmp_path)


# ---------------------------------------------------------------------------------------------- tool use


@pytest.fixture(scope="module")
def toolalpaca_eval(shared_data):
    return tooluse.eval_records(shared_data / "toolalpaca" / "eval_simulated.json")


def test_toolalpaca_simulated_eval_counts(toolalpaca_eval):
    records, report = toolalpaca_eval
    # 100 instructions over 10 APIs; 31 golden answers carry placeholders (${...}) and are left out, reported
    assert report.apis == 10
    assert len(records) == 69 and len(report.unscorable) == 31
    validate_records(records, "toolalpaca")
    prompt = records[0]["prompt"][-1]["content"]
    for part in ("Name: Axolotl", "Documentation:", "Thought:", "Action:", "Action Input:", "Question:"):
        assert part in prompt


def test_authors_tooluse_eval_v1_is_inside_ours_with_the_same_calls(shared_data, toolalpaca_eval):
    records, _ = toolalpaca_eval
    ours = {(r["meta"]["api"], r["meta"]["question"]): r["reference"] for r in records}
    rows = json.load(open(shared_data / "sdft_authors_eval" / "tooluse_eval_data_v1.json"))
    assert len(rows) == 68
    for row in rows:
        key = (row["name"], row["instruction"])
        assert key in ours, key
        assert normalize_golden_calls(row["golden_answer"]) == ours[key]


def test_toolalpaca_golden_calls_score_one(toolalpaca_eval):
    records, _ = toolalpaca_eval
    for rec in records:
        response = "\n".join(f"Thought: call\nAction: {c['name']}\nAction Input: {json.dumps(c['arguments'])}"
                             for c in rec["reference"])
        assert score_tool_call(response, rec["reference"]) == 1.0


def _train_api(instances):
    return {"Name": "Weather", "Description": "weather data", "NLDocumentation": "getWeather: current weather",
            "Function_Description": {"getWeather": "current weather"}, "Instances": instances}


def test_toolalpaca_training_episode_becomes_a_react_demonstration(tmp_path):
    inst = {"input": "Weather in Oslo?\nHint: use the tool", "output": "It is 3 degrees.",
            "Final Thought": "I have the answer.",
            "intermediate_steps": [[["getWeather", "{\"city\": \"Oslo\"}",
                                     " I should look it up.\nAction: getWeather\nAction Input: {\"city\": \"Oslo\"}"],
                                    "{\"temp\": 3}"]]}
    path = tmp_path / "train_data.json"
    path.write_text(json.dumps([_train_api([inst, {**inst, "intermediate_steps": []}]), {"Name": "NoDoc"}]))
    records, report = tooluse.train_records(path)
    assert len(records) == 1 and report.no_steps == 1 and report.apis == 1
    rec = records[0]
    assert rec["meta"]["question"] == "Weather in Oslo?"
    assert rec["reference"] == [{"name": "getWeather", "arguments": {"city": "Oslo"}}]
    demo = rec["demonstration"]
    assert demo.startswith("Thought: I should look it up.\nAction: getWeather\nAction Input: {\"city\": \"Oslo\"}")
    assert "Observation: {\"temp\": 3}" in demo and demo.endswith("Final Answer: It is 3 degrees.")
    assert score_tool_call(demo, rec["reference"]) == 1.0


def test_toolalpaca_malformed_episode_names_file_index_and_field(tmp_path):
    inst = {"input": "q", "output": "a", "intermediate_steps": [["not a step"]]}
    path = tmp_path / "train_data.json"
    path.write_text(json.dumps([_train_api([inst])]))
    with pytest.raises(RecordError) as err:
        tooluse.train_records(path)
    msg = str(err.value)
    assert "train_data.json" in msg and "index 0" in msg and "Instances[0]" in msg and "intermediate_steps[0]" in msg
    records, report = tooluse.train_records(path, skip_invalid=True)
    assert records == [] and len(report.invalid.skipped) == 1
