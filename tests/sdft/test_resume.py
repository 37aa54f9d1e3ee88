"""Interrupted runs resume to the model an uninterrupted run makes, bit for bit, from any epoch.

Each method trains 10 steps of a 4-step epoch (smoke: 8 records, batch 2), so every interruption below falls in the
second epoch, where TRL's own sampler replayed the first epoch's order on resume (``EpochSeededRepeatSampler``).
"""

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from sdft.checkpoints import checkpoint_problem


def _command(method, model, out):
    sdft_only = ["teacher_update_rate=0.3"] if method == "sdft" else []  # an EMA teacher that moves
    return ["--method", method, "--preset", "smoke", f"model={model}", f"output_dir={out}", "max_steps=10",
            "save_steps=2", "learning_rate=0.01", "save_total_limit=10", "keep_checkpoints=true",
            "checkpoint_selection=final", *sdft_only]


@pytest.fixture(scope="module")
def uninterrupted(tiny_model_path, tmp_path_factory, run_module):
    """method -> the run directory of a run nothing interrupted (made once per method, in a process of its own as
    the interrupted runs are)."""
    made = {}

    def run(method):
        if method not in made:
            out = tmp_path_factory.mktemp(f"straight-{method}")
            done = run_module("sdft.train", _command(method, tiny_model_path, out))
            assert done.returncode == 0, done.stderr[-3000:]
            made[method] = out
        return made[method]
    return run


def _last_checkpoint(run_dir):
    return max((run_dir / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))


def _assert_same_weights(a, b, what):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{what} {k}: max |diff| {(a[k] - b[k]).abs().max().item():.3g}"


@pytest.mark.slow
@pytest.mark.parametrize("method,how", [("sdft", "SIGKILL"), ("sft", "SIGKILL"), ("sdft", "SIGTERM"),
                                        ("sft", "SIGTERM"), ("sdft", "SIGINT")])
def test_interrupted_in_second_epoch_resumes_bitwise(method, how, tiny_model_path, uninterrupted, tmp_path,
                                                     run_module):
    """The interrupted run and its resumption are each a process of their own (tests/sdft/interrupted_train.py)."""
    straight, cut = uninterrupted(method), tmp_path / "cut"
    died = run_module("tests.sdft.interrupted_train", _command(method, tiny_model_path, cut),
                      env={**os.environ, "INTERRUPT": how})
    manifest = json.loads((cut / "manifest.json").read_text())
    if how == "SIGKILL":
        assert died.returncode == -9, died.stderr[-3000:]
        assert manifest["status"] == "running" and (cut / ".lock").exists()  # nothing could run after SIGKILL
    else:  # finished step 6, wrote its checkpoint, said so, let go of the directory
        assert died.returncode == 128 + {"SIGTERM": 15, "SIGINT": 2}[how], died.stderr[-3000:]
        assert f"interrupted by {how} (after step 6, checkpoint written)" in died.stderr
        assert manifest["status"] == "interrupted" and manifest["signal"] == how
        assert manifest["stopped_at_step"] == 6
        assert not (cut / ".lock").exists()
    assert not (cut / "model").exists()
    assert _last_checkpoint(cut).name == "checkpoint-6" and checkpoint_problem(_last_checkpoint(cut)) is None

    resumed = run_module("sdft.train", _command(method, tiny_model_path, cut))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((cut / "manifest.json").read_text())["resumed_from"].endswith("checkpoint-6")
    _assert_same_weights(load_file(str(straight / "model" / "model.safetensors")),
                         load_file(str(cut / "model" / "model.safetensors")), "student")
    if method == "sdft":  # the EMA teacher too (rate 0.3: it moved)
        assert _last_checkpoint(straight).name == _last_checkpoint(cut).name == "checkpoint-10"
        _assert_same_weights(load_file(str(_last_checkpoint(straight) / "teacher_model.safetensors")),
                             load_file(str(_last_checkpoint(cut) / "teacher_model.safetensors")), "teacher")
    # the student really moved away from the checkpoint it resumed from
    mid = load_file(str(cut / "checkpoints" / "checkpoint-6" / "model.safetensors"))
    final = load_file(str(cut / "model" / "model.safetensors"))
    assert any(not torch.equal(mid[k], final[k]) for k in mid if k in final)
    # every training step's loss is logged once, as in the uninterrupted run
    def loss_steps(run_dir):
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        return [r["step"] for r in rows if "loss" in r]
    assert loss_steps(cut) == loss_steps(straight) == list(range(1, 11))


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


def test_epoch_seeded_sampler_gives_each_epoch_the_order_of_an_uninterrupted_trl_sampler():
    from trl.trainer.utils import RepeatSampler

    from sdft.trainer import EpochSeededRepeatSampler

    kw = dict(data_source=list(range(10)), mini_repeat_count=2, batch_size=2, repeat_count=1, shuffle=True, seed=3)
    trl_sampler = RepeatSampler(**kw)  # one generator across epochs, as an uninterrupted run iterates it
    trl_orders = [list(trl_sampler) for _ in range(4)]
    assert len({tuple(o) for o in trl_orders}) == 4  # the epochs really are shuffled differently
    for epoch in range(4):
        fresh = EpochSeededRepeatSampler(**kw)  # a resumed process builds a new sampler
        fresh.set_epoch(epoch)
        assert list(fresh) == trl_orders[epoch]
        assert list(fresh) == trl_orders[epoch]  # iterating again in the same epoch repeats it


def test_a_stop_signal_is_recorded_not_fatal_and_the_handlers_are_put_back():
    import signal

    from sdft.interrupts import active_request, catch_stop_signals

    before = signal.getsignal(signal.SIGTERM)
    with catch_stop_signals() as stop:
        assert active_request() is stop and not stop.requested
        signal.raise_signal(signal.SIGTERM)
        assert stop.requested and stop.signal_name == "SIGTERM" and not stop.stopped
        with pytest.raises(KeyboardInterrupt):  # asked again (here Ctrl-C): stops at once
            signal.raise_signal(signal.SIGINT)
        assert stop.signal_name == "SIGTERM"
    assert active_request() is None and signal.getsignal(signal.SIGTERM) is before
