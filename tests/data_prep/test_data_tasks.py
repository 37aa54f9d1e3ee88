"""The real tasks through load_task: registry names, sources, errors, determinism; medical and knowledge loaders."""

import json

import pytest

from data_prep import knowledge, load_task, medical
from data_prep.schema import RecordError
from data_prep.sources import DataSourceError


@pytest.mark.parametrize("name", ["science", "tooluse", "medical", "medical_answer_only", "knowledge", "knowledge_ood"])
def test_real_tasks_are_registered_and_scored(name):
    from data_prep.registry import TASKS

    assert name in TASKS
    task = TASKS[name]
    assert (task.score is None) != (task.judge is None)  # a rule-based scorer or a judge, never both or neither
    assert callable(task.score) or task.judge in ("medical", "knowledge")


def test_a_local_judge_is_a_factory_for_judge_scored_tasks_only():
    from data_prep.fact_judge import FactJudge
    from data_prep.registry import Task, get_task
    from data_prep.scorers import score_short_answer

    spec = get_task("embedded_knowledge")
    assert spec.judge == "knowledge" and spec.metric == "judge_strict_accuracy" and spec.local_judge is FactJudge
    assert get_task("knowledge").local_judge is None  # the paper's task: the LLM judge
    with pytest.raises(ValueError, match="local_judge"):
        Task("t", load=lambda split: [], metric="m", title="t", score=score_short_answer, local_judge=FactJudge)
    with pytest.raises(ValueError, match="local_judge"):
        Task("t", load=lambda split: [], metric="m", title="t", judge="knowledge", local_judge=FactJudge())


@pytest.mark.parametrize("name", ["science", "tooluse", "medical", "knowledge"])
def test_no_source_error_says_what_to_do(name, monkeypatch):
    monkeypatch.delenv("SDFT_DATA_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("SDFT_CACHE", "/nonexistent-sdft-cache")
    with pytest.raises(DataSourceError) as err:
        load_task(name, "test")
    assert "--data-dir" in str(err.value)
    if name != "knowledge":  # the knowledge corpus has no hub source
        assert "HF_HUB_OFFLINE" in str(err.value)


def test_missing_mirror_file_names_the_expected_path(tmp_path):
    with pytest.raises(DataSourceError, match="toolalpaca/eval_simulated.json"):
        load_task("tooluse", "test", data_dir=tmp_path)
    with pytest.raises(DataSourceError, match="sciknoweval"):
        load_task("science", "test", data_dir=tmp_path)
    with pytest.raises(DataSourceError, match="does not exist"):
        load_task("science", "test", data_dir=tmp_path / "nope")


def test_load_task_from_the_mirror_is_deterministic(shared_data):
    a = load_task("science", "test", seed=3, n=25, data_dir=shared_data)
    b = load_task("science", "test", seed=3, n=25, data_dir=str(shared_data))
    c = load_task("science", "test", seed=4, n=25, data_dir=shared_data)
    assert len(a) == 25 and [r["id"] for r in a] == [r["id"] for r in b]
    assert [r["id"] for r in a] != [r["id"] for r in c]
    assert len(load_task("tooluse", "test", data_dir=shared_data)) == 69


def test_science_train_needs_demonstrations_and_uses_them(shared_data, tmp_path, monkeypatch):
    from data_prep import science

    with pytest.raises(DataSourceError, match="data_prep.prepare --task science --generate"):
        science.load("train", shared_data, demos_file=tmp_path / "absent.jsonl")

    val = science.load("val", shared_data)
    train_all = science.seeded_split(science.load_all(shared_data), "train")
    demos = tmp_path / "demos.jsonl"
    science.write_demonstrations(demos, {r["id"]: f"<answer>{r['reference']}</answer>" for r in train_all[:5]}, "m")
    train = science.load("train", shared_data, demos_file=demos)
    assert len(train) == 5 and all(r["demonstration"].startswith("<answer>") for r in train)
    assert not {r["id"] for r in train} & {r["id"] for r in val}


# ---------------------------------------------------------------------------------------------- medical


def test_huatuo_records_with_and_without_reasoning(shared_data):
    sft, report = medical.load_sft(shared_data)
    assert len(sft) == 198 and report.kept == 198
    rec = sft[0]
    assert rec["demonstration"].startswith("## Thinking\n\n") and "\n\n## Final Response\n\n" in rec["demonstration"]
    short, _ = medical.load_sft(shared_data, answer_only=True)
    assert short[0]["demonstration"] == rec["reference"] and "## Thinking" not in short[0]["demonstration"]
    assert short[0]["task"] == "medical_answer_only"
    ver, _ = medical.load_verifiable(shared_data)
    assert len(ver) == 198 and all(r["reference"] for r in ver)


def test_medical_evaluation_is_1000_seeded_questions_disjoint_from_train():
    rows = [{"id": f"m{i:05d}", "meta": {"question": f"q{i}"}} for i in range(3000)]
    test = medical.evaluation_split(rows, "test")
    val = medical.evaluation_split(rows, "val")
    assert len(test) == 1000 and len(val) == 100
    assert not {r["id"] for r in test} & {r["id"] for r in val}
    assert [r["id"] for r in medical.evaluation_split(list(reversed(rows)), "test")] == [r["id"] for r in test]
    assert [r["id"] for r in medical.evaluation_split(rows, "test", seed=1)] != [r["id"] for r in test]


def test_medical_train_leaves_out_evaluation_questions(shared_data):
    train = load_task("medical", "train", data_dir=shared_data)
    held = load_task("medical", "test", data_dir=shared_data) + load_task("medical", "val", data_dir=shared_data)
    assert len(train) + len(held) == 198
    assert not {r["meta"]["question"] for r in train} & {r["meta"]["question"] for r in held}


def test_medical_malformed_row_names_file_index_and_field(tmp_path):
    (tmp_path / "huatuo").mkdir()
    rows = [{"Question": "q", "Complex_CoT": "c", "Response": "r"}, {"Question": "q2", "Complex_CoT": "c"}]
    (tmp_path / "huatuo" / "medical_o1_sft_en.json").write_text(json.dumps(rows))
    with pytest.raises(RecordError) as err:
        medical.load_sft(tmp_path)
    assert "medical_o1_sft_en.json" in str(err.value) and "index 1" in str(err.value) and "Response" in str(err.value)
    recs, report = medical.load_sft(tmp_path, skip_invalid=True)
    assert len(recs) == 1 and report.kept == 1 and len(report.skipped) == 1


# ---------------------------------------------------------------------------------------------- knowledge


def test_disaster_articles_and_third_party_questions(shared_data):
    articles = knowledge.read_articles(knowledge.find_articles(shared_data))
    assert len(articles) == 9
    assert {a["title"] for a in articles} == set(knowledge.DISASTER_TITLES)
    rows = knowledge.read_qa(shared_data / "wiki_disasters" / "gpt-5-mini_questions.jsonl", articles)
    assert len(rows) == 90
    # that set repeats 5 questions (same words up to case/punctuation/articles): de-duplication removes them
    unique, removed = knowledge.dedupe_pairs(rows)
    assert removed == 5 and len(unique) == 85
    parts = {s: knowledge.split_records(rows, articles, s) for s in ("train", "val", "test")}
    assert sum(len(p) for p in parts.values()) == 85
    ids = [r["id"] for p in parts.values() for r in p]
    assert len(set(ids)) == 85
    rec = parts["test"][0]
    assert rec["meta"]["article"] in {a["text"] for a in articles} and rec["meta"]["kind"] == "direct"
    assert rec["demonstration"] == rec["reference"]


def test_knowledge_load_task_from_a_mirror(tmp_path):
    folder = tmp_path / "wiki_disasters"
    folder.mkdir()
    (folder / "articles.json").write_text(json.dumps([{"title": "Quake", "text": "A quake hit X in 2025."}]))
    rows = [{"article": "Quake", "question": f"Question {i}?", "answer": f"A{i}"} for i in range(40)]
    rows += [{"article": "Quake", "question": "Which place had a quake in 2025?", "answer": "X", "kind": "indirect"}]
    rows += [{"article": "Quake", "question": "question 3", "answer": "dup"}]  # a duplicate after normalization
    (folder / "qa_pairs.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    parts = {s: load_task("knowledge", s, data_dir=tmp_path) for s in ("train", "val", "test")}
    assert [len(parts[s]) for s in ("train", "val", "test")] == [30, 2, 8]
    ood = load_task("knowledge_ood", "test", data_dir=tmp_path)
    assert len(ood) == 1 and ood[0]["reference"] == "X" and ood[0]["meta"]["kind"] == "indirect"
    (folder / "qa_pairs.jsonl").write_text(json.dumps({"article": "Nope", "question": "q", "answer": "a"}) + "\n")
    with pytest.raises(RecordError, match=r"qa_pairs.jsonl: record line 1: field 'article'"):
        load_task("knowledge", "test", data_dir=tmp_path)


def test_qa_parsing_and_deduplication():
    text = ("Here are the questions.\n\nQuestion: When did it happen?\nAnswer: On 28 March 2025.\n\n"
            "2. Question: How strong was it?\nAnswer: Magnitude 7.7,\nper the USGS.\n"
            "**Question:** when did it happen\n**Answer:** 28 March.\n"
            "Question: no answer here\n")
    pairs = knowledge.parse_qa_pairs(text)
    assert pairs[0] == ("When did it happen?", "On 28 March 2025.")
    assert pairs[1] == ("How strong was it?", "Magnitude 7.7,\nper the USGS.")
    assert len(pairs) == 3
    rows = [{"question": q, "answer": a} for q, a in pairs]
    kept, removed = knowledge.dedupe_pairs(rows)
    assert removed == 1 and [r["question"] for r in kept] == ["When did it happen?", "How strong was it?"]
