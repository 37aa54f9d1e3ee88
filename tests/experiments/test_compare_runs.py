"""experiments/compare_runs.py: the numbers of two result folders' runs, matched by path, compared exactly."""

import json

import pytest

from experiments.compare_runs import main, numbers


def _eval(value, acc, chosen=24):
    return {"scores": [{"source": "t/student", "metric": "accuracy", "value": value, "n": 100,
                        "settings": {"model": "/some/where"}}],
            "prior": {"embedded": {"wall_s": 3.0, "benchmarks": {
                "commonsense": {"value": acc * 100, "wall_s": 1.0, "all_metrics": {"acc,none": acc}}}}},
            "checkpoint": {"chosen_step": chosen, "chosen_val": 50.0, "final_step": 32, "final_val": 40.0,
                           "steps": {"8": 10.0, "24": 50.0, "32": 40.0},
                           "final_test": {"student": {"scores": [{"metric": "accuracy", "value": 30.0}]}}}}


def _write(root, run, evaluation):
    path = root / run / "eval.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(evaluation))


def test_numbers_hold_scores_prior_metrics_and_the_checkpoint_choice_not_times_or_paths():
    flat = numbers(_eval(37.0, 0.5))
    assert flat["scores/t/student/accuracy"] == 37.0 and flat["scores/t/student/accuracy/n"] == 100
    assert flat["prior/embedded/commonsense/acc,none"] == 0.5
    assert flat["checkpoint/chosen_step"] == 24 and flat["checkpoint/val@8"] == 10.0
    assert flat["checkpoint/final/student/accuracy"] == 30.0
    assert not any("wall" in k or "settings" in k for k in flat)


def test_same_runs_pass_and_a_differing_number_is_named_with_both_values(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    _write(a, "task/sft/seed0", _eval(37.0, 0.5))
    _write(b, "task/sft/seed0", {**_eval(37.0, 0.5), "model_path": "/elsewhere"})  # paths and times may differ
    _write(a, "task/sdft/seed0", _eval(12.0, 0.5))
    _write(b, "task/sdft/seed0", _eval(12.0, 0.5))
    _write(b, "task/base/seed0", _eval(1.0, 0.5))  # only in one folder: listed, not compared
    main([str(a), str(b), "--output", str(tmp_path / "same.md")])
    out = capsys.readouterr().out
    assert "2 of 2 runs found in both hold the same numbers" in out and "1 run(s) only in the second" in out
    assert (tmp_path / "same.md").read_text() == out

    (b / "task/sdft/seed0/eval.json").write_text(json.dumps(_eval(12.0, 0.51, chosen=32)))
    with pytest.raises(SystemExit) as stop:
        main([str(a), str(b)])
    assert stop.value.code == 1
    out = capsys.readouterr().out
    assert "1 of 2 runs found in both hold the same numbers" in out
    assert "prior/embedded/commonsense/acc,none: 0.5 vs 0.51" in out and "checkpoint/chosen_step: 24 vs 32" in out


def test_folders_without_a_common_run_are_an_error(tmp_path):
    (tmp_path / "a").mkdir()
    _write(tmp_path / "b", "t/m/seed0", _eval(1.0, 0.5))
    with pytest.raises(SystemExit, match="no run's eval.json is in both"):
        main([str(tmp_path / "a"), str(tmp_path / "b")])
