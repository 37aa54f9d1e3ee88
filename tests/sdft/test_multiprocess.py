"""Training on two processes (data parallel, gloo on the CPU), against one process.

One launch (``accelerate launch --multi_gpu --num_processes 2 tests/sdft/mp_worker.py``, which on a machine without CUDA
is two CPU processes in a gloo group; ``use_cpu=true`` keeps it there on any machine) runs every command-line
method and the one-step runs of the equivalence tests through ``sdft.train.main``; the tests below read what it
left. (``accelerate launch --cpu --num_processes 2`` would start ONE process: accelerate's CPU launcher starts N only
through mpirun.)

Speed switches (``sdft.sdft_config.SpeedSwitches``), defaults of the smoke preset:
  * two processes: ``fused_ema``, ``loss_chunk_size=64``, ``teacher_inference_mode``, ``lean_logits`` on;
    ``fused_lm_head`` and ``sequence_microbatches`` off (automatically; the trainer prints that it turned them off,
    checked below); ``rollout_dtype`` / ``teacher_dtype`` unset.
  * the one-process reference of the SDFT equivalence: the same, with ``fused_lm_head=false`` set, so both sides
    run the same loss path. (The fused path agrees with it to float rounding -- tests/sdft/test_perf.py -- but after one
    AdamW step, whose update lr * g / (|g| + eps) magnifies rounding where |g| is near eps, its weights differ from
    the unfused path's by up to ~6e-6 here, more than the 1e-6 this test holds the two process layouts to.)

SDFT's equivalence runs sample greedily (``generation_kwargs={do_sample: false}``): sampled rollouts of 2 x 2
prompts and of 1 x 4 prompts come from different random streams, greedy ones are the same tokens, so the two layouts
train on the same rollouts and the test compares the optimizer step itself.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).resolve().parent / "mp_worker.py"
METHODS = ("sdft", "sft", "dft", "reinvoke")
# The equivalence step is plain SGD at lr 1 (the worker's ONE_STEP), so a weight's difference is its gradient's:
# AdamW's first step divides each gradient by its own magnitude, and a weight whose gradient is near Adam's eps
# turns float rounding into a visible difference (measured: 1.8e-6 on 1 of 8192 weights, all others within 1e-7).
EQUIVALENCE_STEP = dict(optim="sgd", learning_rate=1.0, warmup_steps=0)
# SDFT's first-step loss is a KL between near-equal distributions (teacher = student weights), about 2e-4: its
# float32 rounding is absolute, so the loss is compared with an absolute floor as well
LOSS_TOL = dict(rel=1e-5, abs=1e-7)
WEIGHT_TOL = dict(rtol=1e-5, atol=1e-6)
FUSED_OFF_LINE = "[sdft] fused_lm_head and sequence_microbatches are off"


class Launch(NamedTuple):
    out: Path  # what the worker left: runs/, dumps/, writes-rank*.json
    stdout: str
    model: str  # the tiny model it trained from (a copy of ``tiny_model_path``, shared by the test workers)


def _launch(folder: Path, tiny_model_path: str) -> None:
    model, out = folder / "model", folder / "out"
    shutil.copytree(tiny_model_path, model)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
           str(WORKER), str(out), str(model)]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    (folder / "stdout.txt").write_text(proc.stdout)


@pytest.fixture(scope="module")
def launched(tiny_model_path, once_per_session) -> Launch:
    """The two-process worker's run, launched once per test session (the test workers share it)."""
    folder = once_per_session("multiprocess", lambda f: _launch(f, tiny_model_path))
    return Launch(folder / "out", (folder / "stdout.txt").read_text(), str(folder / "model"))


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _first_step(run_dir: Path) -> dict:
    return next(row for row in _metrics(run_dir) if row.get("step") == 1 and "loss" in row)


def _assert_same_weights(got: dict, want: dict, what: str) -> None:
    assert got.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], **WEIGHT_TOL, msg=lambda m, k=k: f"{what} {k}: {m}")


# ------------------------------------------------------------------------------------------------ every method
@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_each_method_trains_on_two_processes_into_one_run_directory(method, launched):
    from transformers import AutoModelForCausalLM

    from sdft.checkpoints import checkpoint_problem

    out, stdout, _ = launched
    run = out / "runs" / method
    assert stdout.count(f"-> {run.resolve()}\n") == 1, "the run's banner is printed once, by the main process"
    assert f"{method} on embedded_tool (8 records), model " in stdout and "2 processes (MULTI_CPU)" in stdout
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["created_by"] == "sdft.train"
    assert not (run / ".lock").exists()
    # exactly one model: model/, loadable, and the weights every process ended with
    models = sorted(p.parent.relative_to(run).as_posix() for p in run.rglob("config.json")
                    if "checkpoints" not in p.relative_to(run).parts)
    assert models == ["model"]
    model = AutoModelForCausalLM.from_pretrained(run / "model")
    saved = {k: v.detach() for k, v in model.state_dict().items()}
    last = "checkpoints" if method != "reinvoke" else "stage2_reinvoke"
    for rank in (0, 1):
        student = load_file(str(out / "dumps" / method / f"{last}-student-rank{rank}.safetensors"))
        for k in student:
            assert torch.equal(saved[k], student[k]), f"rank {rank} ended with other weights than model/ ({k})"
    # one metrics row per logged step and stage: only the main process appends
    rows = [(r.get("stage"), r["step"]) for r in _metrics(run) if "loss" in r]
    assert len(rows) == len(set(rows)) and {s for _, s in rows} == {1, 2}
    # the checkpoints the processes wrote together are complete (the main process marks them after the others)
    folders = sorted(run.rglob("checkpoint-2"))
    assert len(folders) == (2 if method == "reinvoke" else 1)
    for folder in folders:
        assert checkpoint_problem(folder) is None
        assert {"rng_state_0.pth", "rng_state_1.pth"} <= {p.name for p in folder.iterdir()}
    if method == "reinvoke":
        done = json.loads((run / "checkpoints" / "stage1_done.json").read_text())
        assert Path(done["final_checkpoint"]).is_dir()


@pytest.mark.slow
def test_only_the_main_process_writes_the_run_directories(launched):
    out, _, _ = launched
    main = json.loads((out / "writes-rank0.json").read_text())
    other = json.loads((out / "writes-rank1.json").read_text())
    # the recorder sees the main process's writes (so an empty list of the other's means something)
    for name in METHODS:
        for f in ("manifest.json", "config.yaml", "splits.json", "config.lock.json", ".lock", "metrics.jsonl"):
            assert any(rel == f"{name}/{f}" for _, rel in main), f"no write of {name}/{f} recorded"
    assert any(rel.endswith("teacher_model.safetensors") for _, rel in main)
    # the other process writes only what transformers writes per process: its RNG state in each checkpoint
    for event, rel in other:
        folder, name = rel.rsplit("/", 1) if event != "os.mkdir" else (rel, None)
        assert folder.split("/")[-1].startswith("checkpoint-"), (event, rel)
        assert name in (None, "rng_state_1.pth"), (event, rel)
    assert any(name == "rng_state_1.pth" for _, name in (r.rsplit("/", 1) for _, r in other))


@pytest.mark.slow
def test_fused_head_turned_off_on_two_processes_is_logged(launched):
    _, stdout, _ = launched
    assert stdout.count(FUSED_OFF_LINE) == 3  # sdft, eq_sdft, re-invoke's stage 2: once per SDFT trainer


# ------------------------------------------------------------------------------------------------ EMA teacher
@pytest.mark.slow
def test_ema_teacher_is_identical_on_both_processes(launched):
    out, _, model = launched
    dumps = out / "dumps" / "sdft"
    t0, t1 = (load_file(str(dumps / f"checkpoints-teacher-rank{r}.safetensors")) for r in (0, 1))
    initial = load_file(str(Path(model) / "model.safetensors"))
    assert t0.keys() == t1.keys()
    for k in t0:
        assert torch.equal(t0[k], t1[k]), f"the ranks' EMA teachers differ at {k}"
    assert any(not torch.equal(t0[k], initial[k]) for k in initial), "the teacher never moved"
    # the checkpoint's teacher (written by the main process) is that teacher
    saved = load_file(str(out / "runs" / "sdft" / "checkpoints" / "checkpoint-2" / "teacher_model.safetensors"))
    for k in saved:
        assert torch.equal(saved[k], t0[k])
    # after one step the teacher is phi_1 = phi_0 + alpha (theta_1 - phi_0), phi_0 = theta_0, on each process
    theta1 = load_file(str(out / "runs" / "eq_sdft" / "model" / "model.safetensors"))
    for r in (0, 1):
        teacher = load_file(str(out / "dumps" / "eq_sdft" / f"checkpoints-teacher-rank{r}.safetensors"))
        for k in theta1:
            torch.testing.assert_close(teacher[k], torch.lerp(initial[k], theta1[k], 0.1), atol=1e-7, rtol=1e-6)


# ------------------------------------------------------------------------------------------------ equivalence
def _one_process_reference(method: str, model: str, run_dir: Path, **overrides) -> Path:
    from sdft.config import build_config
    from sdft.train import run_training

    values = dict(model=model, output_dir=str(run_dir), use_cpu=True, max_steps=1, save_steps=1000,
                  per_device_train_batch_size=4, **EQUIVALENCE_STEP, **overrides)
    return run_training(build_config("smoke", method, overrides=values))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["sft", "sdft"])
def test_two_processes_of_batch_2_take_the_step_of_one_process_of_batch_4(method, launched, tmp_path):
    out, _, model = launched
    extra = {"generation_kwargs": {"do_sample": False}, "fused_lm_head": False} if method == "sdft" else {}
    ref = _one_process_reference(method, model, tmp_path / "one", **extra)
    two = out / "runs" / f"eq_{method}"
    a, b = _first_step(ref), _first_step(two)
    assert a["epoch"] == b["epoch"] == 0.5  # both saw 4 of the 8 records
    for key in ("loss", "grad_norm"):
        assert b[key] == pytest.approx(a[key], **LOSS_TOL), key
    want = load_file(str(ref / "model" / "model.safetensors"))
    got = load_file(str(two / "model" / "model.safetensors"))
    initial = load_file(str(Path(model) / "model.safetensors"))
    assert max((want[k] - initial[k]).abs().max().item() for k in want) > 5e-4, "the step moved nothing"
    _assert_same_weights(got, want, f"{method}: 2 x 2 vs 1 x 4")
    if method == "sft":
        # the same step with each process averaging over its own tokens (average_tokens_across_devices=false) is
        # another step: what this test would see if the token mean were not global
        local = load_file(str(out / "runs" / "eq_sft_local_mean" / "model" / "model.safetensors"))
        assert max((local[k] - want[k]).abs().max().item() for k in want) > 100 * WEIGHT_TOL["atol"]


# ------------------------------------------------------------------------------------------------ launchers, configs
def test_launch_warnings_name_what_accelerate_did_not_start():
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from sdft.train import launch_warnings

    one = SimpleNamespace(num_processes=1, distributed_type=DistributedType.NO)
    two_cpu = SimpleNamespace(num_processes=2, distributed_type=DistributedType.MULTI_CPU)
    # what `accelerate launch --cpu --num_processes 2` exports (one process, no WORLD_SIZE)
    cpu_launch = {"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    (line,) = launch_warnings(one, cpu_launch)
    assert "started ONE process" in line
    assert launch_warnings(one, {"ACCELERATE_USE_CPU": "True"}) == []  # --cpu with one process, as asked
    assert launch_warnings(two_cpu, {**cpu_launch, "WORLD_SIZE": "2", "LOCAL_RANK": "0"}) == []
    (line,) = launch_warnings(two_cpu, {"ACCELERATE_USE_FSDP": "true", "WORLD_SIZE": "2"})
    assert "FSDP" in line and "DDP" in line


def _launch_args(config_file: Path):
    """accelerate's own reading of a launch config: its parser and its validation, as ``accelerate launch`` does."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    args = launch_command_parser().parse_args(["--config_file", str(config_file), "-m", "sdft.train"])
    return _validate_launch_command(args)


# (experiments/accelerate/zero2.yaml and zero3.yaml: tests/sdft/test_deepspeed.py)
def test_fsdp_config_is_read_by_accelerate():
    args, defaults, _ = _launch_args(ROOT / "experiments" / "accelerate" / "fsdp.yaml")
    assert args.use_fsdp and not args.use_deepspeed and args.num_processes == 8
    unknown = [k for k in defaults.fsdp_config if not hasattr(args, k)]
    assert unknown == [], f"keys accelerate's launcher does not know (it would ignore them): {unknown}"
    assert args.fsdp_sharding_strategy == "FULL_SHARD" and args.fsdp_auto_wrap_policy == "TRANSFORMER_BASED_WRAP"
