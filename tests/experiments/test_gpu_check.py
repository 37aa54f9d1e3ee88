"""experiments/gpu_check.sh: loud failure without CUDA, its checks, and its CPU dry run end to end."""

import json
import math
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "experiments" / "gpu_check.sh"


def _run(args, out, **env):
    environ = {**os.environ, **env}
    return subprocess.run(["bash", str(SCRIPT), *args, str(out)], capture_output=True, text=True, timeout=300,
                          env=environ, cwd=str(ROOT))


def test_without_a_cuda_device_the_check_fails_loudly_and_logs_why(tmp_path):
    out = tmp_path / "gpu_check"
    proc = _run([], out, CUDA_VISIBLE_DEVICES="")  # no GPU visible, whatever this machine has
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "FAIL: no CUDA device" in proc.stdout and "--cpu-dry-run" in proc.stdout
    assert "FAIL: no CUDA device" in (out / "gpu_check.log").read_text()
    assert not (out / "gpu_check.json").exists()


def _report(**changes):
    step = {"step": 1, "seconds": 0.5, "max_memory_allocated_bytes": 2 ** 30}
    run = {"steps": [step, {**step, "step": 2}], "losses": [0.1, 0.2], "param_dtype": "torch.bfloat16",
           "device": "cuda:0", "max_memory_allocated_bytes": 2 ** 30}
    from experiments.gpu_check import speed_switch_defaults

    lora = {"saved_adapter": True, "saved_merged": True, "trainable_params": 10, "total_params": 1000}
    report = {"environment": {"vllm": None},
              "train": [{**run, "method": "sdft", "config": {"gradient_checkpointing": True, "bf16": True,
                                                            "use_vllm": False, **speed_switch_defaults()}},
                        {**run, "method": "sft", "config": {"gradient_checkpointing": True, "bf16": True}},
                        {**run, **lora, "method": "sdft+lora",
                         "config": {"gradient_checkpointing": True, "bf16": True, "use_vllm": False, "use_peft": True,
                                    **speed_switch_defaults()}},
                        {**run, **lora, "method": "sft+lora",
                         "config": {"gradient_checkpointing": True, "bf16": True, "use_peft": True}}],
              "eval": [{"method": m, "metric": "tool_call_match", "value": 25.0, "n": 4,
                        "decoding": {"decoding": "greedy"}} for m in ("sdft", "sft", "sdft+lora", "sft+lora")]}
    for path, value in changes.items():
        *keys, last = path.split(".")
        node = report
        for k in keys:
            node = node[int(k)] if isinstance(node, list) else node[k]
        node[last] = value
    return report


@pytest.mark.parametrize("changes,match", [
    ({"train.0.losses": [0.1, math.nan]}, "sdft: losses"),
    ({"train.1.steps": [{"step": 1, "seconds": 0.5}]}, "sft: 1 steps timed, expected 2"),
    ({"train.0.param_dtype": "torch.float32"}, "sdft: trained torch.float32 weights"),
    ({"train.0.config": {"gradient_checkpointing": True, "bf16": True, "use_vllm": False, "fused_ema": False}},
     "sdft: config fused_ema=False, expected True"),
    ({"environment.vllm": "0.31.0"}, "sdft: config use_vllm=False, expected True"),
    ({"train.1.max_memory_allocated_bytes": 0}, "sft: torch.cuda.max_memory_allocated is 0"),
    ({"eval.1.n": 3}, "sft evaluation"),
    ({"eval.0.decoding": {"decoding": "sample"}}, "sdft evaluation was not greedy"),
    ({"train.2.saved_merged": False}, "sdft+lora: model/ holds no adapter or model_merged/ no merged model"),
    ({"train.3.trainable_params": 1000}, "sft+lora: 1000 of 1000 parameters trained"),
    ({"train.3.config": {"gradient_checkpointing": True, "bf16": True, "use_peft": False}},
     "sft+lora: config use_peft=False, expected True"),
])
def test_the_checks_catch_what_must_not_happen(changes, match):
    from experiments.gpu_check import checks

    assert checks(_report(), steps=2, eval_n=4, dry_run=False) == []
    failures = checks(_report(**changes), steps=2, eval_n=4, dry_run=False)
    assert any(match in f for f in failures), failures


def test_the_table5_cells_must_each_write_a_score():
    from experiments.gpu_check import table5_failures

    good = {"returncode": 0, "table": True, "runs": {m: {"new_task": 10.0} for m in ("base", "sft", "sdft")}}
    assert table5_failures(good) == []
    assert "no eval.json with a score for ['sdft']" in table5_failures(
        {**good, "runs": {**good["runs"], "sdft": {"new_task": None}}})[0]
    assert "exit status 1" in table5_failures({**good, "returncode": 1})[0]


def test_the_table5_cells_keep_their_results_and_lose_their_weights(tmp_path):
    from experiments.gpu_check import drop_weights

    run = tmp_path / "embedded_tool" / "sft" / "seed0"
    for name in ("eval.json", "config.yaml", "metrics.jsonl", "model/model.safetensors", "model/config.json",
                 "best_model/model.safetensors", "checkpoints/checkpoint-8/optimizer.pt", "checkpoints/x.json"):
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text("x")
    (tmp_path / "table5.md").write_text("x")
    assert drop_weights(tmp_path) == 4
    kept = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert kept == ["embedded_tool/sft/seed0/config.yaml", "embedded_tool/sft/seed0/eval.json",
                    "embedded_tool/sft/seed0/metrics.jsonl", "embedded_tool/sft/seed0/model/config.json", "table5.md"]


@pytest.mark.slow
def test_the_cpu_dry_run_trains_sdft_and_sft_with_and_without_lora_evaluates_all_and_reports_step_times(tmp_path):
    out = tmp_path / "gpu_check"
    proc = _run(["--cpu-dry-run", "--steps=3", "--eval-n=2"], out)
    log = (out / "gpu_check.log").read_text()
    assert proc.returncode == 0, log[-4000:] + proc.stderr[-2000:]
    assert log.rstrip().endswith("[gpu_check] PASS")
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["mode"] == "cpu-dry-run" and report["failures"] == [] and report["model"] == "embedded:tiny-llama"
    assert [r["method"] for r in report["train"]] == ["sdft", "sft", "sdft+lora", "sft+lora"]
    for run in report["train"]:
        assert [s["step"] for s in run["steps"]] == [1, 2, 3]
        assert all(s["seconds"] > 0 for s in run["steps"]) and all(math.isfinite(v) for v in run["losses"])
        assert run["config"]["gradient_checkpointing"] is True and run["config"]["bf16"] is False
        assert run["param_dtype"] == "torch.float32" and run["peak_rss_bytes"] > 0
        assert run["planned_peak_gib"] > 0  # the memory planner's view of the run
        for step in run["steps"]:  # one line per step, with its time and the memory
            assert f"[gpu_check] {run['method']} step {step['step']}/3: {step['seconds']:.3f} s" in log
        lora = run["method"].endswith("+lora")
        assert run["config"]["use_peft"] is lora and run["saved_adapter"] is lora and run["saved_merged"] is lora
        assert (run["trainable_params"] < run["total_params"] / 2) is lora
    assert report["train"][0]["config"]["use_vllm"] is False and report["train"][0]["config"]["fused_lm_head"]
    assert [(e["method"], e["n"], e["decoding"]["decoding"]) for e in report["eval"]] == [
        (m, 2, "greedy") for m in ("sdft", "sft", "sdft+lora", "sft+lora")]
    assert "torch.cuda.max_memory_allocated" in log
    assert "mini Table 5 cells (Base, SFT, SDFT on embedded_tool): skipped (CPU dry run" in log
    assert report["table5"] == {"skipped": "CPU dry run: the mini cells run on a GPU only"}
    assert not (out / "runs").exists()  # the run directories are removed unless --keep-runs
