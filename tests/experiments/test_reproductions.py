"""experiments.reproductions: every number is the spec's own (a typo fails), changes are signed, levels are not,
and every row names a task, row and column the table it belongs to has."""

import re
from pathlib import Path

import pytest

from experiments import reproductions as RP

SPEC = Path(__file__).resolve().parents[2] / "shared" / "PAPER_SPEC.md"
SECTION = "## The authors' released code, and what independent reproductions found"
NUMBER = re.compile(r"\d+(?:\.\d+)?")


@pytest.fixture(scope="module")
def spec_section() -> str:
    """PAPER_SPEC.md from its reproductions section on (skipped only when the file is absent)."""
    if not SPEC.is_file():
        pytest.skip(f"{SPEC} not present")
    text = SPEC.read_text()
    assert SECTION in text, f"{SPEC}: no section {SECTION!r}"
    return text[text.index(SECTION):]


def test_every_number_is_read_from_the_specs_reproductions_section(spec_section):
    for r in RP.ALL:
        assert r.quote in spec_section, f"quote not in the spec's section: {r.quote!r}"
        assert r.value in r.quote, f"{r.value!r} is not in its quote {r.quote!r}"
        # the numbers in the words describing a change (a base value, a p value, a version) are the quote's too
        words = r.what if isinstance(r, RP.Change) else ""
        assert set(NUMBER.findall(words)) <= set(NUMBER.findall(r.quote)), (words, r.quote)
        for text in (r.source.label, r.source.model, r.source.setting):
            assert set(NUMBER.findall(text)) <= set(NUMBER.findall(spec_section)), text


def test_the_figure5_rows_are_table5s_science_scores_and_all_items_are_listed():
    assert RP.FIGURE5 and set(RP.FIGURE5) <= set(RP.TABLE5)
    assert {(r.source.key, r.method, r.value) for r in RP.FIGURE5} == {
        ("issue9", "sft", "68.1"), ("issue9", "sdft", "69.6"), ("unnamed_lr1e-5", "sft", "50.6"),
        ("unnamed_lr1e-5", "sdft", "48.3"), ("tinker_qwen3_5_moe", "sft", "29.19"),
        ("tinker_qwen3_5_moe", "sdft", "46.55")}
    assert set(RP.ALL) == {*RP.TABLE5, *RP.ICL_CHECK, *RP.FIGURE8}


def test_a_change_is_printed_as_a_change_and_a_level_as_a_level():
    for r in RP.changes(RP.ALL):
        assert r.value[0] in "−+" or " → " in r.value, r
    for r in RP.levels(RP.ALL):
        assert r.value[0].isdigit() and r.number == float(r.value), r
    assert not RP.changes(RP.ICL_CHECK) and not RP.changes(RP.FIGURE8)


def test_rows_name_the_tasks_rows_and_columns_of_their_tables():
    from experiments import figure8, icl_check, table5

    for r in RP.TABLE5:
        assert r.task in (table5.PAPER_TABLE5 if isinstance(r, RP.Level) else [*table5.PAPER_TABLE5, None]), r
        assert r.method in (table5.METHODS if isinstance(r, RP.Level) else [*table5.METHODS, None]), r
    for r in RP.levels(RP.TABLE5):
        assert r.column in ["new_task", *table5.PRIOR, "prior_avg"], r
    for r in RP.ICL_CHECK:
        assert (r.task in icl_check.PAPER_ICL, r.method in icl_check.ROLES, r.column) == (True, True, "accuracy")
    for r in RP.FIGURE8:
        assert (r.task, r.method in figure8.TEACHERS, r.column in ("final", "best", "drop")) == ("tooluse", True, True)
    for item in (RP.TABLE5, RP.ICL_CHECK, RP.FIGURE8):  # one number per cell: none would hide another
        cells = [(r.task, r.method, r.column, r.source) for r in RP.levels(item)]
        assert len(cells) == len(set(cells))
    keys = {s.key for s in {r.source for r in RP.ALL}}
    assert len(keys) == len({r.source for r in RP.ALL}) and all(re.fullmatch(r"[\w.-]+", k) for k in keys)


def test_change_lines_group_by_source_and_name_the_methods():
    titles = {"sft": "SFT", "sdft": "SDFT (ours)"}.get
    lines = RP.change_lines(RP.TABLE5, "science", titles)
    assert "- *repro (official repo issue #9)*: prior-task average, change: SFT −5.3, SDFT −4.2." in lines
    assert RP.change_lines(RP.TABLE5, "tooluse", titles) == [
        "- *repro (official repo issue #9)*: tool-use accuracy as a fraction, before → after training (method not "
        "stated): 0.559 → 0.574."]
    assert any("held-out backward transfer" in line and "SFT −3.3, SDFT −1.0" in line
               for line in RP.change_lines(RP.TABLE5, None, titles))
    assert RP.change_lines(RP.TABLE5, "medical", titles) == []
    assert RP.legend_line(()) == "" and "KickItLikeShika/sdft-reproduction-note: Qwen2.5-7B-Instruct, lr 2e-5, 400 " \
        "steps" in RP.legend_line(RP.TABLE5)
