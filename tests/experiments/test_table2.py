"""Table 2 (answer-only demonstrations, a reasoning model): the section end to end on smoke, the paper grid, the
stand-in task."""

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.section_scripts import paper_dry_run, run_section, section_ok

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_run_table2_smoke_reports_accuracy_and_tokens_of_the_predictions(tmp_path):
    out = tmp_path / "table2"
    args = ["--preset", "smoke", "--results-dir", str(out)]
    section_ok("table2", *args, "--jobs", "2")
    table = pd.read_csv(out / "table2.csv").set_index("method")
    assert table.index.tolist() == ["base", "sft", "sdft"]
    for method in table.index:
        run = out / "embedded_science_answer_only" / method / "seed0"
        preds = [json.loads(line) for line in (run / "predictions_student.jsonl").read_text().splitlines()]
        row = table.loc[method]
        # one seed: the table's cells are the run's per-answer means
        assert row["tokens"] == pytest.approx(sum(p["n_tokens"] for p in preds) / len(preds))
        assert row["new_task"] == pytest.approx(100 * sum(p["score"] for p in preds) / len(preds))
        assert row["truncated"] == pytest.approx(100 * sum(not p["finished"] for p in preds) / len(preds))
        assert row["n_items"] == len(preds) and row["n_seeds"] == 1
        assert all(n["n_tokens"] <= 32 for n in preds)  # the smoke preset's evaluation budget
    assert table["paper_new_task"].tolist() == [31.2, 23.5, 43.7]
    assert table["paper_tokens"].tolist() == [4612, 3273, 4180]
    import yaml

    cfg = yaml.safe_load((out / "embedded_science_answer_only" / "sft" / "seed0" / "config.yaml").read_text())
    assert cfg["task"] == "embedded_science_answer_only"  # SFT trained on the answer-only demonstrations
    md = (out / "table2.md").read_text()
    assert "Avg. # of tokens" in md and "*4612.0*" in md and "not comparable" in md
    assert all(not json.loads(p.read_text()).get("prior") for p in out.glob("*/*/*/eval.json"))  # no prior suite
    again = run_section("table2", *args)
    assert again.returncode == 0 and again.stdout.count("skipped") == 3, again.stdout[-2000:]


def test_paper_dry_run_prints_the_grid_with_the_reasoning_model():
    proc = paper_dry_run("table2")
    assert "[table2] preset paper: 9 runs (base: 3, sft: 3, sdft: 3)" in proc.stdout
    assert "model: allenai/Olmo-3-7B-Think; tasks: medical_answer_only" in proc.stdout
    assert "up to 16384 new tokens" in proc.stdout


def _grid(preset, tmp_path, extra=()):
    from experiments import section, table2

    args = section.build_parser(None, table2.EXPERIMENT, table2.METHODS).parse_args(
        ["--preset", preset, "--results-dir", str(tmp_path), *extra])
    specs = section.build_grid(args, table2.EXPERIMENT, table2.METHODS, table2.RECIPES)
    return table2.adjust_grid(args, specs)


def test_every_paper_run_is_the_reasoning_model_with_the_long_budget(tmp_path):
    specs = _grid("paper", tmp_path, ["--seeds", "1"])
    configs = {s.method: s.config() for s in specs}
    assert {c.model for c in configs.values()} == {"allenai/Olmo-3-7B-Think"}  # Base too, which has no recipe
    assert {c.task for c in configs.values()} == {"medical_answer_only"}
    assert configs["sdft"].training.max_completion_length == 8192
    assert all(s.eval_options["max_new_tokens"] == 16384 for s in specs)
    assert {Path(s.recipe).parent.name for s in specs if s.recipe} == {"olmo-3-7b-think"}


def test_mini_stand_in_gives_the_rollouts_and_answers_twice_the_mini_budget(tmp_path):
    specs = _grid("mini", tmp_path)
    configs = {s.method: s.config() for s in specs}
    assert {c.model for c in configs.values()} == {"embedded:smollm2-135m-instruct"}
    assert configs["sdft"].training.max_completion_length == 128
    assert all(s.eval_options == {"max_new_tokens": 128} for s in specs)
    # a model named on the command line wins over the preset's
    assert {s.config().model for s in _grid("mini", tmp_path, ["model=embedded:tiny-llama"])} == \
        {"embedded:tiny-llama"}


def test_the_answer_only_task_is_embedded_science_with_the_demonstration_cut_to_the_answer():
    from data_prep.registry import get_task, load_task

    for split in ("train", "test"):
        full, short = load_task("embedded_science", split, n=20), load_task("embedded_science_answer_only", split, n=20)
        assert [r["prompt"] for r in short] == [r["prompt"] for r in full]
        assert [r["reference"] for r in short] == [r["reference"] for r in full]
        assert all(s["demonstration"] == f"<answer>{s['reference']}</answer>" != f["demonstration"]
                   for s, f in zip(short, full))
        assert {r["task"] for r in short} == {"embedded_science_answer_only"}
    assert get_task("embedded_science_answer_only").shown_as == "medical_answer_only"
