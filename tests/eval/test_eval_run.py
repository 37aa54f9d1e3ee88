"""eval.run end to end on a smoke run directory (tiny random model), and the paper-suite error offline."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from sdft.models import load_model_and_tokenizer

    d = tmp_path_factory.mktemp("run")
    model, tok = load_model_and_tokenizer("embedded:tiny-llama")
    model.save_pretrained(d / "model")
    tok.save_pretrained(d / "model")
    (d / "config.yaml").write_text(yaml.safe_dump({"task": "embedded_tool", "preset": "smoke", "method": "sdft",
                                                   "teacher_template": "same_format", "model": "embedded:tiny-llama"}))
    return d


def test_run_dir_student_teacher_passk(run_dir):
    from eval.run import main

    assert main(["--model", str(run_dir), "--n", "4", "--max-new-tokens", "8", "--kl-base", "embedded:tiny-llama"]) == 0
    assert main(["--model", str(run_dir), "--n", "3", "--max-new-tokens", "6", "--teacher", "--passk", "3"]) == 0
    ev = json.loads((run_dir / "eval.json").read_text())
    assert set(ev["evaluations"]) == {"student", "teacher"}
    st, te = ev["evaluations"]["student"], ev["evaluations"]["teacher"]
    assert st["task"] == "embedded_tool" and st["n"] == 4 and te["n"] == 3
    assert te["settings"]["template"] == "same_format"  # from the run's config
    acc = next(s for s in st["scores"] if s["metric"] == "tool_call_match")
    preds = [json.loads(line) for line in (run_dir / "predictions_student.jsonl").read_text().splitlines()]
    assert len(preds) == 4 and {"id", "response", "reference", "score", "n_tokens"} <= set(preds[0])
    assert acc["value"] == pytest.approx(100 * sum(p["score"] for p in preds) / 4)
    toks = next(s for s in st["scores"] if s["metric"] == "mean_generated_tokens")
    assert toks["value"] == pytest.approx(sum(p["n_tokens"] for p in preds) / 4) and 0 < toks["value"] <= 8
    pk = next(s for s in te["scores"] if s["metric"] == "pass@k")
    assert list(pk["values"]) == ["1", "2", "3"] and pk["samples_per_prompt"] == 3
    vals = list(pk["values"].values())
    assert vals == sorted(vals)  # pass@k is non-decreasing in k
    tpreds = [json.loads(line) for line in (run_dir / "predictions_teacher.jsonl").read_text().splitlines()]
    assert all(len(p["samples"]) == 3 for p in tpreds)
    assert st["settings"]["decoding"]["decoding"] == "greedy"
    kl = next(s for s in st["scores"] if s["metric"] == "kl_to_base_seq")
    assert abs(kl["value"]) < 1e-4 and kl["unit"] == "nats"  # the run's model is the untrained tiny model itself
    sources = {s["source"] for s in ev["scores"]}
    assert {"embedded_tool/student", "embedded_tool/teacher"} <= sources


def test_paper_suite_without_hub_is_a_clear_error(run_dir, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "eval.run", "--model", str(run_dir), "--prior-suite", "paper",
                           "--skip-task", "--output", str(tmp_path / "o")], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "hub" in proc.stderr and "cache" in proc.stderr and "hellaswag" in proc.stderr
