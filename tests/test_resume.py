"""A run killed (SIGKILL) after its first checkpoint resumes to the same final student and EMA teacher."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

KILLER = textwrap.dedent("""
    import os, signal, sys
    from transformers import TrainerCallback
    import sdft.training
    from sdft.config import build_config, parse_overrides
    from sdft.train import run_training

    class KillAfterFirstCheckpoint(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)

    original = sdft.training.run_callbacks
    sdft.training.run_callbacks = lambda *args, **kwargs: original(*args, **kwargs) + [KillAfterFirstCheckpoint()]
    run_training(build_config("smoke", "sdft", overrides=parse_overrides(sys.argv[1:])))
""")


def _overrides(model, out):
    return [f"model={model}", f"output_dir={out}", "max_steps=5", "save_steps=2", "teacher_update_rate=0.3",
            "learning_rate=0.01", "save_total_limit=5", "keep_checkpoints=true"]


def _teacher_state(run_dir):
    ckpts = sorted((run_dir / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    return load_file(str(ckpts[-1] / "teacher_model.safetensors")), ckpts[-1].name


@pytest.mark.slow
def test_killed_run_resumes_to_identical_weights(tiny_model_path, tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    cmd = [sys.executable, "-m", "sdft.train", "--method", "sdft", "--preset", "smoke"]
    ok = subprocess.run(cmd + _overrides(tiny_model_path, straight), capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr[-3000:]

    died = subprocess.run([sys.executable, "-c", KILLER] + _overrides(tiny_model_path, killed),
                          capture_output=True, text=True, timeout=300)
    assert died.returncode == -9, died.stderr[-3000:]
    assert [p.name for p in (killed / "checkpoints").iterdir()] == ["checkpoint-2"]
    assert not (killed / "model").exists()

    resumed = subprocess.run(cmd + _overrides(tiny_model_path, killed), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout
    assert json.loads((killed / "manifest.json").read_text())["resumed_from"].endswith("checkpoint-2")

    a = load_file(str(straight / "model" / "model.safetensors"))
    b = load_file(str(killed / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-6, rtol=1e-5, msg=lambda m: f"student {k}: {m}")
    ta, na = _teacher_state(straight)
    tb, nb = _teacher_state(killed)
    assert na == nb == "checkpoint-5"
    for k in ta:
        torch.testing.assert_close(tb[k], ta[k], atol=1e-6, rtol=1e-5, msg=lambda m: f"teacher {k}: {m}")
    # the student really moved away from the checkpoint it resumed from
    mid = load_file(str(killed / "checkpoints" / "checkpoint-2" / "model.safetensors"))
    assert any(not torch.equal(mid[k], b[k]) for k in mid if k in b)


def test_completed_run_deletes_its_checkpoints_unless_asked_to_keep_them(tiny_model_path, tmp_path):
    from sdft.config import build_config
    from sdft.train import run_training

    base = dict(model=tiny_model_path, max_steps=2, save_steps=1)
    dropped = run_training(build_config("smoke", "sdft", overrides={**base, "output_dir": str(tmp_path / "a")}))
    kept = run_training(build_config("smoke", "sdft", overrides={**base, "output_dir": str(tmp_path / "b"),
                                                                  "keep_checkpoints": True}))
    assert (dropped / "model" / "model.safetensors").exists() and not (dropped / "checkpoints").exists()
    # save_total_limit=1 (the default) keeps only the newest resume point while training
    assert [p.name for p in (kept / "checkpoints").iterdir()] == ["checkpoint-2"]
