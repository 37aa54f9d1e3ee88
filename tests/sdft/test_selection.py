"""The paper's checkpoint protocol (sdft.selection): choosing from evaluation files, the run's reported model, and
a smoke run under it."""

import json

import pytest
import torch
from safetensors.torch import load_file

from sdft.run_io import SELECTION_DIR, read_step_files
from sdft.selection import choose_step, selection_summary


def _write_steps(run_dir, values, collapsed=()):
    (run_dir / SELECTION_DIR).mkdir(parents=True)
    for step, value in values.items():
        row = {"step": step, "metric": "tool_call_match", "value": value, "n": 50,
               "answers": {"collapsed": step in collapsed}}
        (run_dir / SELECTION_DIR / f"step{step}.json").write_text(json.dumps(row))


def test_choose_step_takes_the_best_and_ties_to_the_earlier():
    assert choose_step({8: 40.0, 16: 55.0, 24: 55.0, 32: 50.0}) == 16
    assert choose_step({32: 10.0, 8: 10.0}) == 8  # order of the mapping does not matter
    assert choose_step({8: 0.0}) == 8
    with pytest.raises(ValueError):
        choose_step({})


def test_selection_from_hand_made_evaluation_files(tmp_path):
    _write_steps(tmp_path, {8: 40.0, 16: 62.0, 24: 62.0, 32: 12.0}, collapsed={32})
    steps = read_step_files(tmp_path)
    assert list(steps) == [8, 16, 24, 32]  # numeric order, not the files' names' order
    summary = selection_summary(steps, final_step=32, metric="tool_call_match")
    assert summary["chosen_step"] == 16 and summary["chosen_val"] == 62.0
    assert summary["final_val"] == 12.0 and summary["collapsed_steps"] == [32]
    assert summary["model_dir"] == "best_model"
    assert selection_summary({32: {"value": 5.0}}, 32, None)["model_dir"] == "model"


def test_the_reported_model_of_a_run(tmp_path):
    from experiments.evaluation import reported_checkpoint

    assert reported_checkpoint(tmp_path, "final") is None  # no selection.json: the final model, as before
    (tmp_path / "selection.json").write_text(json.dumps({"chosen_step": 16, "final_step": 32,
                                                         "model_dir": "best_model"}))
    with pytest.raises(RuntimeError, match="best_model"):
        reported_checkpoint(tmp_path, str(tmp_path / "model"))
    (tmp_path / "best_model").mkdir()
    picked = reported_checkpoint(tmp_path, str(tmp_path / "model"))
    assert picked["model"] == str(tmp_path / "best_model") and picked["final_model"] == str(tmp_path / "model")
    (tmp_path / "selection.json").write_text(json.dumps({"chosen_step": 32, "final_step": 32, "model_dir": "model"}))
    picked = reported_checkpoint(tmp_path, str(tmp_path / "model"))
    assert picked["model"] == str(tmp_path / "model") and picked["final_model"] is None


@pytest.mark.slow
def test_selection_keeps_the_chosen_steps_weights_and_does_not_change_training(tmp_path):
    """A smoke SDFT run under best_val: best_model/ holds the weights of the chosen step (equal to the trainer's
    checkpoint of that step), and the final model is bit-identical to a run without the evaluations."""
    from sdft.train import main

    common = ["--method", "sdft", "--preset", "smoke", "keep_checkpoints=true", "save_steps=1",
              "save_total_limit=null", "selection_steps=1"]
    with_sel, without = tmp_path / "best_val", tmp_path / "final"
    main([*common, "--output-dir", str(with_sel), "checkpoint_selection=best_val"])
    main([*common, "--output-dir", str(without), "checkpoint_selection=final"])
    a, b = (load_file(str(d / "model" / "model.safetensors")) for d in (with_sel, without))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not (without / "selection.json").exists()

    # the health of every step is in metrics.jsonl (sdft.health), with the rollouts' format rate of the task
    from sdft.run_io import read_metrics

    logged = [m for m in read_metrics(with_sel) if "loss" in m]
    assert len(logged) == 3
    for key in ("length_mean", "truncated_share", "eos_share", "distinct_share", "distinct_prefix_share",
                "first_token_mode_share", "format_rate", "student_entropy", "teacher_entropy", "divergence_mean",
                "divergence_max"):
        assert all(isinstance(m.get(f"health/{key}"), float) for m in logged), key
    assert all(m["health/divergence_max"] >= m["health/divergence_mean"] for m in logged)

    summary = json.loads((with_sel / "selection.json").read_text())
    steps = read_step_files(with_sel)
    assert sorted(steps) == [1, 2, 3] and summary["final_step"] == 3
    assert summary["chosen_step"] == choose_step({s: v["value"] for s, v in steps.items()})
    chosen = summary["chosen_step"]
    if chosen != 3:
        best = load_file(str(with_sel / "best_model" / "model.safetensors"))
        ckpt = load_file(str(with_sel / "checkpoints" / f"checkpoint-{chosen}" / "model.safetensors"))
        assert all(torch.equal(best[k], ckpt[k]) for k in best)
    else:
        assert not (with_sel / "best_model").exists()  # the final model is the chosen one: no second copy


def test_the_selection_judge_is_said_off_when_it_cannot_run(monkeypatch, capsys):
    from data_prep.registry import get_task
    from eval.judge import LLMJudge
    from sdft.config import build_config
    from sdft.training import selection_callback, selection_judge

    assert selection_judge(get_task("embedded_tool")) == (None, None)  # rule-based scorer
    judge, problem = selection_judge(get_task("embedded_knowledge"))  # an offline local judge
    assert judge is not None and problem is None and not isinstance(judge, LLMJudge)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    judge, problem = selection_judge(get_task("knowledge"))
    assert judge is None and "OPENAI_API_KEY" in problem
    cfg = build_config("smoke", "sft", overrides={"task": "knowledge"})
    assert selection_callback(cfg, "unused") is None
    assert "best_val is off for this run" in capsys.readouterr().out
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    assert isinstance(selection_judge(get_task("knowledge"))[0], LLMJudge)
