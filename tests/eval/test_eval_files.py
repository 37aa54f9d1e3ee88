"""Result files: eval.json and predictions written atomically; an invalid eval.json is an error naming it, and the
grid does not count its run as done."""

import json

import pytest

from data_prep.registry import get_task
from eval.config import build_eval_config
from eval.evaluation import EvaluationError, evaluate, write_eval_json
from eval.task_eval import write_predictions
from sdft.run_io import InvalidJSONFile, read_json, write_text_atomic

TRUNCATED = '{"evaluations": {"student": {"task": "embedded_tool", "scores": [{"metric": "tool_call_m'


def _fail_fsync(monkeypatch):
    def fsync(fd):
        raise OSError("disk full (injected)")

    monkeypatch.setattr("os.fsync", fsync)


@pytest.mark.parametrize("write", [lambda p: write_eval_json(p, {"new": 1}),
                                   lambda p: write_predictions(p, [{"id": "new"}])], ids=["eval.json", "predictions"])
def test_a_write_that_fails_leaves_the_old_file_whole(tmp_path, monkeypatch, write):
    path = tmp_path / "result"
    path.write_text("old content\n")
    _fail_fsync(monkeypatch)
    with pytest.raises(OSError, match="injected"):
        write(path)
    assert path.read_text() == "old content\n"
    assert [p.name for p in tmp_path.iterdir()] == ["result"]  # no temporary file left behind
    monkeypatch.undo()
    write(path)
    assert path.read_text() != "old content\n" and [p.name for p in tmp_path.iterdir()] == ["result"]


def test_write_text_atomic_keeps_a_readable_mode(tmp_path):
    path = tmp_path / "eval.json"
    write_text_atomic(path, "{}")
    assert path.stat().st_mode & 0o777 == 0o644 and read_json(path) == {}


def test_read_json_names_the_invalid_file(tmp_path):
    path = tmp_path / "eval.json"
    path.write_text(TRUNCATED)
    with pytest.raises(InvalidJSONFile, match=str(path)):
        read_json(path)


def test_evaluate_and_eval_run_name_a_truncated_eval_json(tmp_path):
    from eval.run import main

    out = tmp_path / "out"
    out.mkdir()
    (out / "eval.json").write_text(TRUNCATED)
    with pytest.raises(EvaluationError, match=f"{out / 'eval.json'}: not valid JSON"):
        evaluate("embedded:tiny-llama", get_task("embedded_tool"), build_eval_config({"n": 2, "max_new_tokens": 2}),
                 output_dir=out)
    with pytest.raises(SystemExit, match=f"error: {out / 'eval.json'}: not valid JSON"):
        main(["--model", "embedded:tiny-llama", "--task", "embedded_tool", "--n", "2", "--max-new-tokens", "2",
              "--output", str(out)])
    assert (out / "eval.json").read_text() == TRUNCATED


def _tree(tmp_path, text, where="eval.json"):
    run_dir = tmp_path / "results" / "embedded_tool" / "base" / "seed0"
    (run_dir / "val").mkdir(parents=True)
    valid = json.dumps({"evaluations": {"student": {"scores": [{"metric": "m", "value": 50.0, "unit": "percent"}]}}})
    (run_dir / "eval.json").write_text(valid)
    (run_dir / where).write_text(text)
    return run_dir


@pytest.mark.parametrize("where", ["eval.json", "val/eval.json"])
def test_collect_runs_names_a_truncated_eval_json(tmp_path, where):
    from experiments.reporting import collect_runs

    run_dir = _tree(tmp_path, TRUNCATED, where)
    with pytest.raises(InvalidJSONFile, match=str(run_dir / where)):
        collect_runs(tmp_path / "results")


@pytest.mark.parametrize("where", ["eval.json", "val/eval.json"])
def test_the_grid_reruns_a_run_whose_eval_json_is_invalid(tmp_path, capsys, where):
    from experiments.grid import RunSpec, is_done, run_local

    run_dir = _tree(tmp_path, TRUNCATED, where)
    spec = RunSpec("table5", "embedded_tool", "base", 0, "smoke", str(run_dir))
    ran = []

    def execute(s):
        ran.append(s.run_dir)
        write_eval_json(run_dir / "eval.json", {"evaluations": {}})

    run_local([spec], execute)
    assert ran == [str(run_dir)]
    out = capsys.readouterr().out
    assert f"{run_dir / where} is not valid JSON" in out and "evaluating the run again" in out
    assert (run_dir / (where + ".invalid")).read_text() == TRUNCATED  # kept for inspection
    assert is_done(spec)
    run_local([spec], execute)
    assert ran == [str(run_dir)] and "done before, skipped" in capsys.readouterr().out


def test_a_valid_or_missing_eval_json(tmp_path):
    from experiments.grid import RunSpec, is_done

    run_dir = _tree(tmp_path, "{}")
    assert is_done(RunSpec("t", "embedded_tool", "base", 0, "smoke", str(run_dir)))
    assert not is_done(RunSpec("t", "embedded_tool", "base", 0, "smoke", str(tmp_path / "nothing")))
