"""The offline fact judge: the knowledge judge's labels from key facts and contradicting values, on hand-made cases."""

import json

import pytest

from data_prep.fact_judge import FactJudge, FactRecordError, fact_verdict


def rec(key_facts, wrong_values=(), rid="k1", **meta):
    return {"id": rid, "task": "embedded_knowledge", "prompt": [{"role": "user", "content": "q?"}],
            "demonstration": "d", "reference": "ref", "meta": {"key_facts": key_facts,
                                                                "wrong_values": list(wrong_values), **meta}}


TWO = (["Sela", "1523"], ["Orna", "Kesh", "1611", "1777"])


@pytest.mark.parametrize("response, label", [
    ("Varnel lies on the river Sela and was founded in 1523.", "CORRECT"),  # every fact
    ("It was founded in 1523, on the Sela.", "CORRECT"),  # any order
    ("Varnel lies on the river Sela.", "PARTIALLY_CORRECT"),  # one of two
    ("Founded in 1523.", "PARTIALLY_CORRECT"),
    ("Varnel lies on the river Sela and was founded in 1611.", "INCORRECT"),  # one fact plus a contradiction
    ("The Sela or the Orna, founded in 1523.", "INCORRECT"),  # both facts, but a wrong river too
    ("Varnel is a lovely town.", "INCORRECT"),  # none
    ("", "INCORRECT"),
    ("VARNEL LIES ON THE RIVER SELA, FOUNDED IN 1523!", "CORRECT"),  # case and punctuation
    ("the river “sela”... (1523)", "CORRECT"),
    ("It lies on the river Séla and dates from 1523.", "CORRECT"),  # accents are stripped
    ("It lies on the Sela; founded in 15230.", "PARTIALLY_CORRECT"),  # 1523 inside a longer number does not count
    ("It lies on the Selastra, founded in 1523rd year.", "INCORRECT"),  # nor inside longer words
    ("Sela, founded 11611.", "PARTIALLY_CORRECT"),  # a wrong year inside a longer number is no contradiction
])
def test_labels_of_two_fact_responses(response, label):
    assert fact_verdict(response, *TWO)[0] == label


def test_multi_word_facts_need_every_word_in_order():
    keys, wrong = ["Ilse Brandt"], ["Marten Okafor", "Odile Szabo"]
    assert fact_verdict("The mayor is Ilse Brandt.", keys, wrong)[0] == "CORRECT"
    assert fact_verdict("The mayor is ilse   BRANDT", keys, wrong)[0] == "CORRECT"
    assert fact_verdict("The mayor is Ilse.", keys, wrong)[0] == "INCORRECT"
    assert fact_verdict("The mayor is Brandt Ilse.", keys, wrong)[0] == "INCORRECT"
    assert fact_verdict("Ilse Brandt, not Odile Szabo.", keys, wrong)[0] == "INCORRECT"  # names a wrong value
    assert fact_verdict("Ilse Brandt (Odile is her deputy)", keys, wrong)[0] == "CORRECT"  # a half-name is no value


def test_fact_verdict_says_what_it_found():
    label, why = fact_verdict("On the Sela, founded in 1611.", *TWO)
    assert label == "INCORRECT" and why == {"found": ["Sela"], "missing": ["1523"], "wrong": ["1611"]}


def test_judge_records_gives_verdicts_summary_and_settings():
    records = [rec(*TWO, rid="a"), rec(*TWO, rid="b"), rec(*TWO, rid="c"), rec(["wool"], ["salt"], rid="d")]
    responses = ["Sela, 1523.", "Sela.", "Kesh, 1523.", "Wool."]
    res = FactJudge().judge_records(records, responses, task="embedded_knowledge", progress="x")
    assert res.verdicts == ["CORRECT", "PARTIALLY_CORRECT", "INCORRECT", "CORRECT"]
    assert json.loads(res.raw[2]) == {"found": ["1523"], "missing": ["Sela"], "wrong": ["Kesh"]}
    assert res.summary["strict_accuracy"] == 2 / 4 and res.summary["lenient_accuracy"] == 3 / 4
    assert res.summary["n_unparseable"] == 0 and res.summary["judge"] == "facts"
    assert FactJudge().settings()["judge"] == "facts" and "key_facts" in FactJudge().settings()["rule"]


def test_wrong_values_are_optional():
    assert FactJudge().judge_records([{"id": "x", "meta": {"key_facts": ["wool"]}}], ["wool"]).verdicts == ["CORRECT"]


@pytest.mark.parametrize("meta, field", [
    ({}, "meta.key_facts"),
    ({"key_facts": []}, "meta.key_facts"),
    ({"key_facts": "Sela"}, "meta.key_facts"),
    ({"key_facts": ["Sela", " . "]}, "meta.key_facts"),  # nothing left once normalized
    ({"key_facts": ["Sela"], "wrong_values": "Orna"}, "meta.wrong_values"),
    ({"key_facts": ["Ilse Brandt"], "wrong_values": ["Brandt"]}, "meta.wrong_values"),  # inside a key fact
])
def test_a_record_it_cannot_score_is_an_error_naming_id_and_field(meta, field):
    good = rec(["wool"], rid="fine")
    bad = {"id": "embedded_knowledge-varnel-river-direct", "meta": meta}
    with pytest.raises(FactRecordError) as err:
        FactJudge().judge_records([good, bad], ["wool", "Sela"])
    assert "'embedded_knowledge-varnel-river-direct'" in str(err.value) and repr(field) in str(err.value)


def test_records_and_responses_must_pair_up():
    with pytest.raises(ValueError, match="2 records but 1 responses"):
        FactJudge().judge_records([rec(["a"]), rec(["b"])], ["a"])
