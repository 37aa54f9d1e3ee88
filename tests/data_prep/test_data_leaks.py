"""Data that cannot leak: duplicates removed before splitting (and counted), duplicate ids, unreadable and empty
files, empty splits, ``skip_invalid`` from every entry point, and generated data that is never overwritten silently.

The mirrors are written in tmp_path from small synthetic records in the real raw formats (SciKnowEval JSONL,
ToolAlpaca JSON, HuatuoGPT-o1 JSON, the knowledge articles + QA pairs), or copied there from ../shared/data.
"""

import json
import shutil

import pytest

from data_prep import knowledge, load_task, prepare, science, tooluse
from data_prep.schema import DataFileError, EmptySplitError, RecordError, SplitReport
from data_prep.sources import GeneratedDataExists, whitespace_key, write_generated
from tests.data_prep.test_data_generation import FakeChatServer

SPLITS = ("train", "val", "test")


# ------------------------------------------------------------------------------------------------ mirrors


def sci_row(i, answer="A", question=None):
    return {"question": question or f"Which compound is number {i}?",
            "choices": {"text": [f"c{i}{x}" for x in "abcd"], "label": list("ABCD")}, "answerKey": answer,
            "type": "mcq-4-choices", "details": {"level": "L3", "task": "t"}}


def write_jsonl(path, rows, extra_lines=()):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "".join(line + "\n" for line in extra_lines))
    return path


def science_mirror(root, rows):
    return write_jsonl(root / "sciknoweval" / "Chemistry_L3" / "rows.jsonl", rows)


def tool_api(name, questions, answers=None):
    answers = answers or [[{"Action": "getThing", "Action_Input": json.dumps({"q": q})}] for q in questions]
    return {"Name": name, "Description": f"{name} data", "NLDocumentation": "getThing: a thing",
            "Instructions": list(questions), "Golden_Answers": answers}


def tool_instance(question):
    return {"input": question, "output": "done", "Final Thought": "ok",
            "intermediate_steps": [[["getThing", json.dumps({"q": question}), "Thought: call\nAction: getThing"],
                                    "{\"ok\": true}"]]}


def knowledge_mirror(root, rows, extra_lines=()):
    folder = root / "wiki_disasters"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "articles.json").write_text(json.dumps([{"title": "Quake", "text": "A quake hit X in 2025."}]))
    return write_jsonl(folder / "qa_pairs.jsonl", rows, extra_lines)


def qa_rows(n):
    return [{"article": "Quake", "question": f"Question {i}?", "answer": f"A{i}"} for i in range(n)]


def medical_mirror(root, n, dup=0):
    ver = [{"Open-ended Verifiable Question": f"Patient {i} has symptom {i}. Diagnosis?",
            "Ground-True Answer": f"disease {i}"} for i in range(n)]
    sft = [{"Question": f"Patient {i} has symptom {i}. Diagnosis?", "Complex_CoT": "think",
            "Response": f"disease {i}"} for i in range(n)]
    folder = root / "huatuo"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "medical_o1_verifiable_problem.json").write_text(json.dumps(ver + ver[:dup]))
    (folder / "medical_o1_sft_en.json").write_text(json.dumps(sft + sft[:dup]))


def splits_of(task, data_dir, **kwargs):
    reports = {s: SplitReport() for s in SPLITS}
    parts = {s: load_task(task, s, data_dir=data_dir, report=reports[s], **kwargs) for s in SPLITS}
    return parts, reports


def assert_disjoint(parts, key):
    seen = {}
    for split, records in parts.items():
        for rec in records:
            k = key(rec)
            assert seen.setdefault(k, split) == split, f"{k!r} is in {seen[k]} and {split}"


# ------------------------------------------------------------------------------------------------ duplicates


def test_duplicated_science_rows_are_removed_before_splitting_and_counted(tmp_path):
    rows = [sci_row(i, "ABCD"[i % 4]) for i in range(40)]
    # 10 copied lines and one copy with other whitespace (a duplicate question with another id)
    spaced = {**rows[5], "question": "Which  compound is\nnumber 5? "}
    science_mirror(tmp_path, rows + rows[:10] + [spaced])
    test_val = {s: load_task("science", s, data_dir=tmp_path, report=SplitReport()) for s in ("val", "test")}
    train = science.seeded_split(science.load_all(tmp_path), "train")
    parts = {"train": train, **test_val}
    assert sum(len(p) for p in parts.values()) == 40
    assert_disjoint(parts, lambda r: r["id"])
    assert_disjoint(parts, science.question_key)
    report = SplitReport()
    load_task("science", "test", data_dir=tmp_path, report=report)
    assert report.duplicate_rows == 10 and report.duplicate_questions == 1 and report.skipped == []
    assert any("rows.jsonl: line 41" in e and "line 1" in e for e in report.duplicate_examples)
    assert report.to_dict()["duplicate_rows"] == 10 and report.records == len(parts["test"])


def test_duplicated_sciknoweval_lines_of_the_real_release_never_leak(shared_data, tmp_path):
    folder = tmp_path / "sciknoweval" / "Chemistry_L3_v1_0bd8bb3"
    shutil.copytree(shared_data / "sciknoweval" / "Chemistry_L3_v1_0bd8bb3", folder)
    path = folder / "molar_weight_calculation.jsonl"
    lines = [line for line in path.read_text().splitlines() if '"L3"' in line and "mcq-4-choices" in line]
    path.write_text(path.read_text().rstrip("\n") + "\n" + "\n".join(lines[:50]) + "\n")
    report = SplitReport()
    records = science.load_all(tmp_path, report=report)
    assert len(records) == 3542 and report.duplicate_rows == 50
    parts = {s: science.seeded_split(records, s) for s in SPLITS}
    assert_disjoint(parts, lambda r: r["id"])


def test_duplicated_toolalpaca_apis_do_not_grow_the_test_set(tmp_path):
    apis = [tool_api(f"Api{k}", [f"Do thing {k}.{j}" for j in range(3)]) for k in range(3)]
    path = tmp_path / "toolalpaca" / "eval_simulated.json"
    path.parent.mkdir()
    path.write_text(json.dumps(apis + apis[:2] + [tool_api("Api0", ["Do  thing 0.0\n"])]))
    report = SplitReport()
    test = load_task("tooluse", "test", data_dir=tmp_path, report=report)
    assert len(test) == 9 and len({r["id"] for r in test}) == 9
    assert report.duplicate_rows == 6 and report.duplicate_questions == 1
    assert report.sources == [str(path)]


def test_duplicated_real_toolalpaca_eval_apis(shared_data, tmp_path):
    apis = json.loads((shared_data / "toolalpaca" / "eval_simulated.json").read_text())
    (tmp_path / "toolalpaca").mkdir()
    (tmp_path / "toolalpaca" / "eval_simulated.json").write_text(json.dumps(apis + apis))
    report = SplitReport()
    test = load_task("tooluse", "test", data_dir=tmp_path, report=report)
    assert len(test) == 69 and len({r["id"] for r in test}) == 69 and report.duplicate_rows == 69


def test_repeated_toolalpaca_training_questions_are_in_one_split(tmp_path):
    instances = [tool_instance(f"Find thing {i}") for i in range(40)]
    api = {"Name": "Things", "Description": "things", "NLDocumentation": "getThing: a thing",
           "Function_Description": {"getThing": "a thing"}, "Instances": instances + instances[:20]}
    (tmp_path / "toolalpaca").mkdir()
    (tmp_path / "toolalpaca" / "train_data.json").write_text(json.dumps([api]))
    reports = {s: SplitReport() for s in ("train", "val")}
    parts = {s: load_task("tooluse", s, data_dir=tmp_path, report=reports[s]) for s in ("train", "val")}
    assert len(parts["train"]) + len(parts["val"]) == 40
    assert_disjoint(parts, tooluse.question_key)
    # the second copies sit at other instance indexes: other ids, the same question
    assert reports["train"].duplicate_questions == 20 and reports["val"].duplicate_questions == 20


def test_duplicated_medical_rows_are_removed_before_splitting(tmp_path):
    medical_mirror(tmp_path, 40, dup=15)
    parts, reports = splits_of("medical", tmp_path)
    assert [len(parts[s]) for s in ("val", "test")] == [2, 8]
    assert_disjoint(parts, lambda r: whitespace_key(r["meta"]["question"]).lower())
    assert len(parts["train"]) == 30 and reports["train"].left_out == {"also_a_val_or_test_question": 10}
    assert reports["test"].duplicate_rows == 15 and reports["train"].duplicate_rows == 30  # both sets read for train


def test_knowledge_counts_identical_rows_and_repeated_questions(tmp_path):
    rows = qa_rows(40)
    knowledge_mirror(tmp_path, rows + rows[:3] + [{**rows[7], "question": "question 7", "answer": "reworded"}])
    parts, reports = splits_of("knowledge", tmp_path)
    assert [len(parts[s]) for s in SPLITS] == [30, 2, 8]
    assert_disjoint(parts, lambda r: knowledge.question_key(r["meta"]["question"]))
    assert {(r.duplicate_rows, r.duplicate_questions) for r in reports.values()} == {(3, 1)}


# ------------------------------------------------------------------------------------------------ duplicate ids


def test_a_duplicate_id_with_other_content_names_the_file_and_the_id(tmp_path):
    path = science_mirror(tmp_path, [sci_row(i) for i in range(10)] + [sci_row(3, answer="C")])
    with pytest.raises(RecordError) as err:
        science.load_all(tmp_path)
    rec_id = science.load_all(tmp_path, skip_invalid=True)[3]["id"]
    msg = str(err.value)
    assert str(path) in msg and "line 11" in msg and "line 4" in msg and rec_id in msg and "reference" in msg
    report = SplitReport()
    records = science.load_all(tmp_path, skip_invalid=True, report=report)
    assert len(records) == 10 and len(report.skipped) == 1 and rec_id in report.skipped[0]


def test_duplicate_tool_question_with_other_golden_calls_is_an_error(tmp_path):
    other = [[{"Action": "getOther", "Action_Input": "{}"}]]
    path = tmp_path / "toolalpaca" / "eval_simulated.json"
    path.parent.mkdir()
    path.write_text(json.dumps([tool_api("Api", ["Do it."]), tool_api("Api", ["Do it."], other)]))
    with pytest.raises(RecordError, match=r"eval_simulated.json: record index 1: field 'id': duplicate id 'tooluse-"):
        load_task("tooluse", "test", data_dir=tmp_path)


def test_demonstrations_file_with_a_repeated_id(tmp_path):
    path = tmp_path / "demos.jsonl"
    write_jsonl(path, [{"id": "science-1", "demonstration": "a"}, {"id": "science-1", "demonstration": "a"}])
    assert science.read_demonstrations(path) == {"science-1": "a"}
    write_jsonl(path, [{"id": "science-1", "demonstration": "a"}, {"id": "science-1", "demonstration": "b"}])
    with pytest.raises(RecordError, match=r"demos.jsonl: record line 2: field 'id': duplicate id 'science-1'"):
        science.read_demonstrations(path)


# ------------------------------------------------------------------------------------------------ unreadable files


def _not_utf8(path):
    data = path.read_bytes()
    path.write_bytes(data[:30] + b"\xff\xfe" + data[30:])


def _mirror_of(task, root):
    """A valid small mirror of ``task`` and the raw file to damage."""
    if task == "science":
        return science_mirror(root, [sci_row(i) for i in range(40)])
    if task == "tooluse":
        path = root / "toolalpaca" / "eval_simulated.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps([tool_api("Api", [f"Do {i}." for i in range(10)])]))
        return path
    if task == "medical":
        medical_mirror(root, 40)
        return root / "huatuo" / "medical_o1_verifiable_problem.json"
    return knowledge_mirror(root, qa_rows(40))


@pytest.mark.parametrize("task", ["science", "tooluse", "medical", "knowledge"])
def test_a_non_utf8_file_raises_naming_it(task, tmp_path):
    path = _mirror_of(task, tmp_path)
    assert load_task(task, "test", data_dir=tmp_path)
    _not_utf8(path)
    with pytest.raises(DataFileError, match="not valid UTF-8") as err:
        load_task(task, "test", data_dir=tmp_path)
    assert str(path) in str(err.value) and "line 1" in str(err.value)


@pytest.mark.parametrize("task, content", [(task, content) for task in ("science", "tooluse", "medical", "knowledge")
                                           for content in ("", "\n  \n")]
                         + [("tooluse", "[]"), ("medical", "[]")])  # JSON array files
def test_an_empty_file_raises_naming_it(task, content, tmp_path):
    path = _mirror_of(task, tmp_path)
    path.write_text(content)
    with pytest.raises(DataFileError, match="empty") as err:
        load_task(task, "test", data_dir=tmp_path)
    assert str(path) in str(err.value)


def test_an_empty_science_file_beside_full_ones_is_not_dropped_silently(tmp_path):
    science_mirror(tmp_path, [sci_row(i) for i in range(40)])
    empty = tmp_path / "sciknoweval" / "Chemistry_L3" / "zz_other.jsonl"
    empty.write_text("")
    with pytest.raises(DataFileError, match="zz_other.jsonl: the file is empty"):
        load_task("science", "test", data_dir=tmp_path)


def test_an_empty_text_article_raises_naming_it(tmp_path):
    folder = tmp_path / "wiki_disasters" / "articles"
    folder.mkdir(parents=True)
    (folder / "Quake.txt").write_text("A quake hit X in 2025.")
    (folder / "Flood.txt").write_text("")
    with pytest.raises(DataFileError, match="Flood.txt: the file is empty"):
        knowledge.read_articles(folder)


def test_an_empty_split_raises_naming_the_files(tmp_path):
    path = science_mirror(tmp_path, [sci_row(i) for i in range(3)])
    assert len(load_task("science", "test", data_dir=tmp_path)) == 1
    with pytest.raises(EmptySplitError, match=r"task 'science', split 'val': no records") as err:
        load_task("science", "val", data_dir=tmp_path)
    assert str(path) in str(err.value)
    assert load_task("science", "val", data_dir=tmp_path, n=0) == []


# ------------------------------------------------------------------------------------------------ skip_invalid


@pytest.mark.parametrize("task", ["science", "tooluse", "medical", "knowledge"])
def test_skip_invalid_reaches_every_real_loader_through_load_task(task, tmp_path):
    path = _mirror_of(task, tmp_path)
    if path.suffix == ".jsonl":
        path.write_text(path.read_text() + json.dumps({"question": "broken", "type": "mcq-4-choices",
                                                       "details": {"level": "L3"}, "article": "Nope"}) + "\n")
    else:
        rows = json.loads(path.read_text())
        path.write_text(json.dumps(rows + [{"Name": "Broken"} if task == "tooluse" else {"Ground-True Answer": "x"}]))
    with pytest.raises(RecordError, match=path.name):
        load_task(task, "test", data_dir=tmp_path)
    report = SplitReport()
    assert load_task(task, "test", data_dir=tmp_path, skip_invalid=True, report=report)
    assert len(report.skipped) == 1 and path.name in report.skipped[0]
    assert report.to_dict()["skipped"] == 1 and str(path) in report.sources


@pytest.mark.parametrize("task", ["embedded_tool", "embedded_science", "embedded_medical", "embedded_knowledge"])
def test_every_embedded_loader_accepts_skip_invalid_and_a_report(task):
    report = SplitReport()
    records = load_task(task, "test", n=4, skip_invalid=True, report=report)
    assert len(records) == 4 and report.records == 4 and report.sources[0].startswith("generated:")


def test_embedded_knowledge_subsamples_stay_inside_their_split():
    """``n`` only subsamples a split: asking for more training records than there are gives the 96 training
    questions, none of them a val or test question; a smaller ``n`` draws from the split's own records."""
    def questions(split, n=None):
        return [r["prompt"][-1]["content"] for r in load_task("embedded_knowledge", split, n=n)]

    train = questions("train", n=500)
    assert len(train) == len(set(train)) == 96 and set(train) == set(questions("train"))
    held_out = set(questions("val")) | set(questions("test"))
    assert len(held_out) == 24 + 168 and not held_out & set(train)
    assert set(questions("test", n=10)) <= set(questions("test")) and len(questions("test", n=10)) == 10


def test_a_loader_without_skip_invalid_says_so():
    from data_prep.registry import TASKS, Task, register_task
    from data_prep.scorers import score_short_answer

    def plain(split, seed=0, n=None, data_dir=None):
        return [{"id": "p", "task": "plain", "prompt": [{"role": "user", "content": "q"}], "demonstration": "a",
                 "reference": "a"}]

    register_task(Task("plain_loader", load=plain, score=score_short_answer, metric="m", title="t"))
    try:
        assert len(load_task("plain_loader", "test", report=SplitReport())) == 1
        with pytest.raises(ValueError, match="takes no skip_invalid"):
            load_task("plain_loader", "test", skip_invalid=True)
    finally:
        TASKS.pop("plain_loader")


def test_skip_invalid_is_a_run_config_field():
    from dataclasses import fields

    from sdft.config import ScriptArguments

    assert {f.name: f.default for f in fields(ScriptArguments)}["skip_invalid"] is False


@pytest.mark.slow  # imports the training stack
def test_train_hook_passes_skip_invalid_and_fills_the_report(tmp_path):
    from sdft.config import build_config
    from sdft.train import load_train_records

    knowledge_mirror(tmp_path, qa_rows(40), extra_lines=['{"article": "Nope", "question": "q", "answer": "a"}'])
    cfg = build_config("smoke", "sft", None, {"task": "knowledge", "data_dir": str(tmp_path), "n_train": None})
    with pytest.raises(RecordError, match="qa_pairs.jsonl: record line 41"):
        load_train_records(cfg)
    cfg = build_config("smoke", "sft", None, {"task": "knowledge", "data_dir": str(tmp_path), "skip_invalid": True,
                                              "n_train": None})
    assert cfg.skip_invalid is True
    report = SplitReport()
    assert len(load_train_records(cfg, report)) == 30
    assert report.split == "train" and len(report.skipped) == 1


@pytest.mark.slow  # a smoke training run
def test_skip_invalid_from_the_command_line_lands_in_splits_json(tmp_path):
    from sdft.train import main

    rows = qa_rows(40)
    knowledge_mirror(tmp_path / "mirror", rows + rows[:2],
                     extra_lines=['{"article": "Nope", "question": "q", "answer": "a"}'])
    run = tmp_path / "run"
    main(["--method", "sft", "--preset", "smoke", "--task", "knowledge", "--output-dir", str(run),
          "--data-dir", str(tmp_path / "mirror"), "skip_invalid=true", "max_steps=1", "save_model=false"])
    splits = json.loads((run / "splits.json").read_text())
    assert splits["data"]["skipped"] == 1 and "qa_pairs.jsonl: record line 43" in splits["data"]["skipped_examples"][0]
    assert splits["data"]["duplicate_rows"] == 2 and splits["data"]["records"] == len(splits["train"])
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["data"]["skipped"] == 1 and manifest["data"]["duplicate_rows"] == 2


def test_prepare_writes_the_reports_into_its_manifest(tmp_path):
    science_mirror(tmp_path / "m", [sci_row(i) for i in range(40)] + [sci_row(0)])
    with open(tmp_path / "m" / "sciknoweval" / "Chemistry_L3" / "rows.jsonl", "a") as fh:
        fh.write(json.dumps({"question": "broken", "type": "mcq-4-choices", "details": {"level": "L3"}}) + "\n")
    argv = ["--task", "science", "--data-dir", str(tmp_path / "m"), "--output", str(tmp_path / "out"),
            "--splits", "val,test"]
    with pytest.raises(SystemExit, match=r"^error: .*rows.jsonl: record line 42: field .choices.: missing$"):
        prepare.main(argv)
    manifest = prepare.main(argv + ["--skip-invalid"])
    report = manifest["files"]["test"]["report"]
    assert report["skipped"] == 1 and report["duplicate_rows"] == 1 and report["records"] == 8
    written = json.loads((tmp_path / "out" / "science" / "manifest.json").read_text())
    assert written["files"]["val"]["report"]["duplicate_rows"] == 1


# ------------------------------------------------------------------------------------------------ generation


def test_write_generated_refuses_keeps_identical_and_backs_up(tmp_path):
    path = tmp_path / "gen.jsonl"
    assert write_generated(path, "one\n") == "written"
    assert write_generated(path, "one\n") == "unchanged"
    with pytest.raises(GeneratedDataExists, match=r"gen.jsonl exists and differs.*--overwrite"):
        write_generated(path, "two\n")
    assert path.read_text() == "one\n"
    assert write_generated(path, "two\n", overwrite=True) == "replaced"
    assert write_generated(path, "three\n", overwrite=True) == "replaced"
    assert path.read_text() == "three\n"
    assert (tmp_path / "gen.jsonl.bak").read_text() == "one\n"
    assert (tmp_path / "gen.jsonl.bak.1").read_text() == "two\n"


def test_science_demonstrations_are_not_overwritten_by_the_library_writer(tmp_path):
    path = tmp_path / "demos.jsonl"
    science.write_demonstrations(path, {"science-1": "<answer>A</answer>"}, "m")
    with pytest.raises(GeneratedDataExists, match="demos.jsonl"):
        science.write_demonstrations(path, {"science-2": "<answer>B</answer>"}, "m")
    assert science.read_demonstrations(path) == {"science-1": "<answer>A</answer>"}


def _one_pair_reply(body):
    return [f"Question: What is {body['messages'][-1]['content'][:12]}?\nAnswer: an article.\n"]


def test_prepare_generate_does_not_overwrite_qa_pairs_without_the_flag(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    old = knowledge_mirror(tmp_path, qa_rows(40))
    before = old.read_bytes()
    with FakeChatServer(_one_pair_reply) as server:
        argv = ["--task", "knowledge", "--data-dir", str(tmp_path), "--output", str(tmp_path / "out"), "--generate",
                "--model", "fake", "--base-url", server.base_url, "--cache", str(tmp_path / "c.sqlite"),
                "--n-indirect", "0", "--splits", "train"]
        with pytest.raises(SystemExit, match=r"qa_pairs.jsonl exists and differs.*--overwrite"):
            prepare.main(argv)
        assert old.read_bytes() == before and not (tmp_path / "out" / "knowledge" / "train.jsonl").exists()
        manifest = prepare.main(argv + ["--overwrite"])
    assert manifest["generation"]["file"] == "replaced"
    assert (old.parent / "qa_pairs.jsonl.bak").read_bytes() == before
    assert len(old.read_text().splitlines()) == 1
