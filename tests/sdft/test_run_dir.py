"""Run directories that never lie: complete checkpoints only, one config and one run per directory, --force on
our directories only, a clear error for a missing local model."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sdft.checkpoints import MARKER, checkpoint_problem, mark_complete, resume_point, rotate_checkpoints
from sdft.run_dir import LOCK_FILE, RunDirRefused, RunLock, fingerprint
from sdft.train import main


def _argv(out, model, method="sft", *extra):
    return ["--method", method, "--preset", "smoke", "--output-dir", str(out), f"model={model}", *extra]


def _lock(run_dir: Path, pid: int, host: str | None = None) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    path.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(), "started": "earlier"}))
    return path


def _finished_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _fake_checkpoint(folder: Path, complete: bool = True) -> Path:
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"x" * 10)
    if complete:
        mark_complete(folder)
    return folder


def _weights(path: Path) -> dict:
    return load_file(str(path))


# ------------------------------------------------------------------------------------------------ checkpoints
def test_a_checkpoint_is_complete_only_with_its_marker_and_every_file_it_lists(tmp_path, capsys):
    older = _fake_checkpoint(tmp_path / "checkpoint-2")
    newer = _fake_checkpoint(tmp_path / "checkpoint-4")
    assert checkpoint_problem(older) is None and resume_point(tmp_path) == str(newer)

    (newer / "model.safetensors").write_bytes(b"x" * 3)  # changed after the marker was written
    assert "model.safetensors has 3 bytes" in checkpoint_problem(newer)
    (newer / "model.safetensors").unlink()
    assert checkpoint_problem(newer) == "model.safetensors is missing"
    partial = _fake_checkpoint(tmp_path / "checkpoint-6", complete=False)  # interrupted before its marker
    assert MARKER in checkpoint_problem(partial)

    capsys.readouterr()
    assert resume_point(tmp_path) == str(older)
    printed = capsys.readouterr().out
    assert f"not resuming from {partial}: no {MARKER}" in printed
    assert f"not resuming from {newer}: model.safetensors is missing" in printed


def test_rotation_keeps_the_newest_complete_checkpoints_only(tmp_path):
    for step, complete in [(2, True), (4, True), (6, True), (8, False)]:
        _fake_checkpoint(tmp_path / f"checkpoint-{step}", complete=complete)
    rotate_checkpoints(tmp_path, limit=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-4", "checkpoint-6"]
    rotate_checkpoints(tmp_path, limit=None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-4", "checkpoint-6"]


def test_a_checkpoint_without_the_teacher_weights_is_not_resumed(tiny_model_path, tmp_path):
    from data_prep import load_task
    from sdft.config import build_config
    from sdft.self_distillation import build_sdft_trainer

    cfg = build_config("smoke", "sdft", overrides={"model": tiny_model_path, "output_dir": str(tmp_path)})
    trainer = build_sdft_trainer(cfg, load_task("embedded_tool", "train", n=2), tmp_path)
    (tmp_path / "checkpoint-2").mkdir()
    with pytest.raises(FileNotFoundError, match="checkpoint-2 has no teacher_model.safetensors"):
        trainer._load_from_checkpoint(str(tmp_path / "checkpoint-2"))


def _fail_teacher_write_at(monkeypatch, step: int) -> None:
    """Make writing the teacher's weights of ``checkpoint-<step>`` raise: a run killed between transformers' part
    of a save and ours (HF has written the checkpoint and, before this change, rotated the older one away)."""
    import safetensors.torch

    real = safetensors.torch.save_file

    def save_file(tensors, filename, *args, **kwargs):
        if filename.endswith(f"checkpoint-{step}/teacher_model.safetensors"):
            raise KeyboardInterrupt("killed between the checkpoint's writes")
        return real(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "save_file", save_file)


@pytest.mark.slow
def test_a_run_killed_between_the_checkpoint_writes_resumes_from_the_previous_complete_one(
        tiny_model_path, tmp_path, monkeypatch, capsys):
    keys = ["max_steps=6", "save_steps=2", "keep_checkpoints=true", "learning_rate=0.01", "teacher_update_rate=0.3"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    main(_argv(straight, tiny_model_path, "sdft", *keys))
    expected = _weights(straight / "model" / "model.safetensors")
    expected_teacher = _weights(straight / "checkpoints" / "checkpoint-6" / "teacher_model.safetensors")

    with monkeypatch.context() as patch:
        _fail_teacher_write_at(patch, 4)
        with pytest.raises(KeyboardInterrupt):
            main(_argv(killed, tiny_model_path, "sdft", *keys))
    ckpts = killed / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["checkpoint-2", "checkpoint-4"]  # save_total_limit=1 waited
    assert checkpoint_problem(ckpts / "checkpoint-2") is None and checkpoint_problem(ckpts / "checkpoint-4")

    capsys.readouterr()
    assert main(_argv(killed, tiny_model_path, "sdft", *keys)) == killed
    printed = capsys.readouterr().out
    assert f"not resuming from {ckpts / 'checkpoint-4'}: no {MARKER}" in printed
    assert f"(resuming from {ckpts / 'checkpoint-2'})" in printed
    resumed = _weights(killed / "model" / "model.safetensors")
    teacher = _weights(ckpts / "checkpoint-6" / "teacher_model.safetensors")
    assert resumed.keys() == expected.keys() and teacher.keys() == expected_teacher.keys()
    assert [k for k in expected if not torch.equal(resumed[k], expected[k])] == [], "student differs"
    assert [k for k in expected_teacher if not torch.equal(teacher[k], expected_teacher[k])] == [], "teacher differs"

    # the newest checkpoint's teacher deleted (and the model lost): that checkpoint is passed over, by path
    (ckpts / "checkpoint-6" / "teacher_model.safetensors").unlink()
    shutil.rmtree(killed / "model")
    capsys.readouterr()
    main(_argv(killed, tiny_model_path, "sdft", *keys))
    printed = capsys.readouterr().out
    assert f"not resuming from {ckpts / 'checkpoint-6'}: teacher_model.safetensors is missing" in printed
    assert "resuming from" not in printed.replace("not resuming from", "")  # no complete checkpoint: from the start
    again = _weights(killed / "model" / "model.safetensors")
    assert [k for k in expected if not torch.equal(again[k], expected[k])] == [], "student differs"


@pytest.mark.slow
def test_a_partial_checkpoint_is_skipped_with_a_message(tiny_model_path, tmp_path, capsys):
    out = tmp_path / "run"
    argv = _argv(out, tiny_model_path, "sft", "max_steps=2", "save_steps=2", "keep_checkpoints=true")
    main(argv)
    shutil.rmtree(out / "model")  # the run lost its model and its checkpoint lost trainer_state.json
    (out / "checkpoints" / "checkpoint-2" / "trainer_state.json").unlink()
    capsys.readouterr()
    assert main(argv) == out
    printed = capsys.readouterr().out
    assert f"not resuming from {out / 'checkpoints' / 'checkpoint-2'}: trainer_state.json is missing" in printed
    assert json.loads((out / "manifest.json").read_text())["status"] == "completed"
    assert (out / "model" / "model.safetensors").exists()


# ------------------------------------------------------------------------------------------------ ownership
def test_force_refuses_a_directory_that_sdft_train_did_not_create(tiny_model_path, tmp_path):
    out = tmp_path / "d"
    out.mkdir()
    (out / "notes.txt").write_text("x")
    for extra in (["--force"], []):
        with pytest.raises(SystemExit, match=r"holds files that sdft.train did not create \(notes.txt\)"):
            main(_argv(out, tiny_model_path, "sft", *extra))
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"] and (out / "notes.txt").read_text() == "x"


def test_the_command_line_requires_a_run_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="no run directory given: pass --output-dir DIR"):
        main(["--method", "sft", "--preset", "smoke"])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_changed_config_is_refused_naming_the_keys_and_force_retrains(tiny_model_path, tmp_path, capsys):
    out = tmp_path / "run"
    argv = _argv(out, tiny_model_path, "sft", "max_steps=1")
    main(argv)
    model = (out / "model" / "model.safetensors").read_bytes()
    lock = json.loads((out / "config.lock.json").read_text())
    assert lock["created_by"] == "sdft.train" and lock["config"]["learning_rate"] == pytest.approx(1e-3)
    assert json.loads((out / "manifest.json").read_text())["config_fingerprint"] == lock["fingerprint"]

    with pytest.raises(SystemExit) as refused:
        main(argv + ["learning_rate=0.5", "seed=3"])
    message = str(refused.value)
    assert "a completed run of another config" in message and "--force" in message and "--output-dir" in message
    assert "learning_rate: 0.001 -> 0.5" in message and "seed: 0 -> 3" in message
    assert (out / "model" / "model.safetensors").read_bytes() == model

    # keys that do not change the weights may differ: the completed run is skipped
    capsys.readouterr()
    assert main(argv + ["logging_steps=5", "save_steps=1", "keep_checkpoints=true", "report_to=none"]) == out
    assert "is complete; skipping" in capsys.readouterr().out

    assert main(argv + ["learning_rate=0.5", "--force"]) == out
    assert json.loads((out / "config.lock.json").read_text())["config"]["learning_rate"] == 0.5
    assert (out / "model" / "model.safetensors").read_bytes() != model


def _drop_from_lock(run_dir: Path, key: str) -> None:
    """Rewrite ``config.lock.json`` as a version of this repository before ``key`` existed would have written it."""
    path = run_dir / "config.lock.json"
    lock = json.loads(path.read_text())
    del lock["config"][key]
    lock["fingerprint"] = fingerprint(lock["config"])[0]
    path.write_text(json.dumps(lock))


def test_a_key_added_since_the_run_counts_as_unchanged_only_at_its_default(tiny_model_path, tmp_path, capsys):
    out = tmp_path / "run"
    argv = _argv(out, tiny_model_path, "sdft", "max_steps=1")
    main(argv)
    _drop_from_lock(out, "teacher_context")  # the run predates the field; it behaved as the default, "answer"

    capsys.readouterr()
    assert main(argv) == out
    printed = capsys.readouterr().out
    assert "predates the config keys teacher_context" in printed and "is complete; skipping" in printed

    with pytest.raises(SystemExit) as refused:  # another value than the default is another config
        main(argv + ["teacher_context=text"])
    assert "teacher_context: 'answer' -> 'text'" in str(refused.value)

    _drop_from_lock(out, "learning_rate")  # a key with a default that the preset changes (smoke: 1e-3)
    with pytest.raises(SystemExit) as refused:
        main(argv)
    assert "learning_rate: 5e-05 -> 0.001" in str(refused.value)


@pytest.mark.slow
def test_a_killed_run_is_not_resumed_with_another_config(tiny_model_path, tmp_path, monkeypatch):
    out = tmp_path / "run"
    argv = _argv(out, tiny_model_path, "sdft", "max_steps=6", "save_steps=2")
    with monkeypatch.context() as patch:
        _fail_teacher_write_at(patch, 4)
        with pytest.raises(KeyboardInterrupt):
            main(argv)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    with pytest.raises(SystemExit, match=r"an unfinished run \(status interrupted\) of another config(.|\n)*"
                                         r"divergence: 'forward' -> 'reverse'"):
        main(argv + ["divergence=reverse"])
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before  # nothing rewritten, config.yaml included
    assert "divergence: forward" in (out / "config.yaml").read_text()


def test_the_fingerprint_ignores_only_the_keys_that_do_not_change_the_weights():
    from sdft.config import build_config

    base = build_config("smoke", "sdft", overrides={"output_dir": "a"}).to_dict()
    same = build_config("smoke", "sdft", overrides={"output_dir": "b", "logging_steps": 7, "save_total_limit": 3,
                                                    "keep_checkpoints": True, "save_model": False}).to_dict()
    other = build_config("smoke", "sdft", overrides={"output_dir": "a", "teacher_update_rate": 0.5}).to_dict()
    assert fingerprint(base)[0] == fingerprint(same)[0] != fingerprint(other)[0]


# ------------------------------------------------------------------------------------------------ the lock
def test_a_directory_in_use_is_refused(tiny_model_path, tmp_path):
    out = tmp_path / "run"
    _lock(out, pid=os.getpid())  # this process holds it: a live run
    with pytest.raises(SystemExit, match=f"is in use by another run: pid {os.getpid()} "):
        main(_argv(out, tiny_model_path))
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        _lock(out, pid=child.pid)
        with pytest.raises(SystemExit, match=f"pid {child.pid} on host {socket.gethostname()}"):
            main(_argv(out, tiny_model_path, "sft", "--force"))
    finally:
        child.kill()
        child.wait()
    _lock(out, pid=child.pid, host="another-host")  # another host's process cannot be checked: still in use
    with pytest.raises(RunDirRefused, match="another-host"):
        RunLock(out).acquire()
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]


def test_a_stale_lock_is_taken_over_with_a_message(tmp_path, capsys):
    dead = _finished_pid()
    path = _lock(tmp_path, pid=dead)
    with RunLock(tmp_path):
        assert f"taking over the stale lock {path} of pid {dead}" in capsys.readouterr().out
        assert json.loads(path.read_text())["pid"] == os.getpid()
        with pytest.raises(RunDirRefused, match="in use"):  # held: a second taker is refused
            RunLock(tmp_path).acquire()
    assert not path.exists()


def test_a_run_into_a_directory_with_a_stale_lock_takes_it_over_and_removes_it(tiny_model_path, tmp_path, capsys):
    out = tmp_path / "run"
    _lock(out, pid=_finished_pid())
    assert main(_argv(out, tiny_model_path, "sft", "max_steps=1")) == out
    assert "taking over the stale lock" in capsys.readouterr().out
    assert not (out / LOCK_FILE).exists()
    assert json.loads((out / "manifest.json").read_text())["created_by"] == "sdft.train"


def test_the_manifest_records_the_thread_count_the_run_trained_with(tiny_model_path, tmp_path, monkeypatch):
    """Thread counts change float32 results, so a run records its own: ``SDFT_NUM_THREADS``, applied before the
    manifest is written."""
    before = torch.get_num_threads()
    asked = before + 1
    monkeypatch.setenv("SDFT_NUM_THREADS", str(asked))
    try:
        out = main(_argv(tmp_path / "run", tiny_model_path, "sft", "max_steps=1"))
        assert torch.get_num_threads() == asked
    finally:
        torch.set_num_threads(before)
    assert json.loads((out / "manifest.json").read_text())["cpu"]["torch_threads"] == asked


@pytest.mark.parametrize("value", ["two", "0", "-1", "1.5"])
def test_a_thread_count_that_is_not_one_or_more_is_refused_naming_the_variable(value, monkeypatch):
    from sdft.errors import ConfigError
    from sdft.run_io import apply_thread_setting

    monkeypatch.setenv("SDFT_NUM_THREADS", value)
    before = torch.get_num_threads()
    with pytest.raises(ConfigError, match=f"SDFT_NUM_THREADS='{value}'"):
        apply_thread_setting()
    assert torch.get_num_threads() == before


# ------------------------------------------------------------------------------------------------ the model
@pytest.mark.parametrize("name", ["/no/such/model", "./no-such-model", "../no/such", "~/no-such-model", "a/b/c"])
def test_a_missing_local_model_names_the_path(name):
    from sdft.models import ModelNotFoundError, resolve_model_path

    with pytest.raises(ModelNotFoundError, match="no such model directory: .*" + name.split("/")[-1]):
        resolve_model_path(name)


def test_hub_ids_and_existing_folders_pass(tmp_path):
    from sdft.models import ModelNotFoundError, resolve_model_path

    assert resolve_model_path("Qwen/Qwen2.5-7B-Instruct") == "Qwen/Qwen2.5-7B-Instruct"
    assert resolve_model_path("gpt2") == "gpt2"
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    assert resolve_model_path(str(tmp_path)) == str(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()  # a folder that is no model is named, with the file it lacks, not looked up on the hub
    with pytest.raises(ModelNotFoundError, match=f"{empty}: no config.json"):
        resolve_model_path(str(empty))


def test_a_second_build_of_an_embedded_model_keeps_the_first_whole_folder_and_leaves_nothing_temporary(tmp_path):
    """Embedded models are built into the cache on first use, so two runs started together on a fresh machine
    both build one: each writes its own temporary copy; the first rename wins, the second is dropped without an
    error. A folder an interrupted older build left without its config is replaced."""
    from sdft.models import _atomic_save, build_tiny_model, build_tiny_tokenizer, model_folder_problem

    tok = build_tiny_tokenizer()
    model = build_tiny_model(tok, seed=0)
    path = tmp_path / "models" / "tiny-llama"
    _atomic_save(path, model, tok, {"build": "first"})
    _atomic_save(path, model, tok, {"build": "second"})  # the other process, finishing later
    assert json.loads((path / "provenance.json").read_text())["build"] == "first"
    assert model_folder_problem(path) is None and [p.name for p in path.parent.iterdir()] == ["tiny-llama"]
    shutil.rmtree(path)
    path.mkdir()
    (path / "model.safetensors").write_bytes(b"cut")  # no config.json: not a finished build
    _atomic_save(path, model, tok, {"build": "third"})
    assert json.loads((path / "provenance.json").read_text())["build"] == "third" and model_folder_problem(path) is None
    assert [p.name for p in path.parent.iterdir()] == ["tiny-llama"]


def test_training_a_missing_local_model_fails_before_the_run_directory_is_made(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(SystemExit, match="no such model directory: /no/such/model"):
        main(_argv(out, "/no/such/model"))
    assert not out.exists()


# ------------------------------------------------------------------------------------------------ re-invoke
def test_reinvoke_ignores_a_stage_marker_whose_model_is_gone(tmp_path, capsys):
    from sdft.baselines.reinvoke import _stage1_done

    marker = tmp_path / "stage1_done.json"
    marker.write_text(json.dumps({"final_checkpoint": str(tmp_path / "checkpoint-3"), "metrics": {}}))
    assert _stage1_done(marker) is None
    assert f"ignoring {marker}" in capsys.readouterr().out
    (tmp_path / "checkpoint-3").mkdir()
    assert _stage1_done(marker)["metrics"] == {}
