"""The local launcher's processes (experiments/processes.py): a fork of the preloaded server behaves as the fresh
``python -m`` process it replaces -- argv, environment, thread count, session, log, exit status, signals."""

import json
import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from experiments import processes

MODULE = "tests.experiments.process_probe"


@pytest.fixture(params=["forked", "fresh"])
def mode(request, monkeypatch):
    monkeypatch.setenv("SDFT_FRESH_PROCESSES", "1" if request.param == "fresh" else "0")
    return request.param


def _wait_for(path, child, seconds=120):
    deadline = time.time() + seconds
    while not path.exists():
        assert child.poll() is None and time.time() < deadline, "the probe never wrote its file"
        time.sleep(0.05)
    return json.loads(path.read_text())


def test_a_run_gets_its_argv_environment_threads_session_log_and_exit_status(tmp_path, mode, monkeypatch):
    out, log = tmp_path / "seen.json", tmp_path / "run.log"
    log.write_text("an earlier run's output\n")
    env = {**os.environ, "SDFT_PROBE": f"value for {mode}"}
    child = processes.start(MODULE, [str(out), "3"], log, env, threads=1)
    assert child.wait() == 3 and child.returncode == 3 and child.poll() == 3
    seen = json.loads(out.read_text())
    assert seen["argv"] == [str(out), "3"] and seen["main"] == "__main__"
    assert seen["probe_env"] == f"value for {mode}" and seen["threads"] == 1
    assert seen["sid"] == seen["pid"] != os.getsid(0)  # its own session: a terminal's Ctrl-C is the launcher's
    assert log.read_text() == "probe: stdout line\nprobe: stderr line\n"  # truncated, then both streams

    # appended to, and two threads when asked
    child = processes.start(MODULE, [str(out), "0"], log, env, threads=2, append=True)
    assert child.wait() == 0 and json.loads(out.read_text())["threads"] == 2
    assert log.read_text().count("probe: stdout line") == 2

    # in a working directory of its own when asked (relative paths in its argv are read from there); by default in
    # the launcher's at the call, as a fresh process (the fork server kept the one it started in)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**env, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}  # a fresh interpreter finds the probe
    monkeypatch.chdir(elsewhere)
    child = processes.start(MODULE, [str(out), "0"], log, env, threads=1)
    assert child.wait() == 0 and json.loads(out.read_text())["cwd"] == str(elsewhere)
    monkeypatch.chdir(tmp_path)
    child = processes.start(MODULE, ["seen.json", "0"], log, env, threads=1, cwd=elsewhere)
    assert child.wait() == 0 and json.loads((elsewhere / "seen.json").read_text())["cwd"] == str(elsewhere)


def test_a_signal_passed_on_reaches_the_run_which_stops_as_interrupted(tmp_path, mode):
    out, log = tmp_path / "seen.json", tmp_path / "run.log"
    child = processes.start(MODULE, [str(out), "0", "wait"], log, dict(os.environ), threads=1)
    seen = _wait_for(out, child)
    assert seen["pid"] == child.pid
    child.send_signal(signal.SIGTERM)
    code = child.wait()
    assert code == 128 + signal.SIGTERM and processes.interrupted(code) and not processes.interrupted(1)
    child.send_signal(signal.SIGTERM)  # after its end: nothing to signal, no error


def test_a_run_left_in_the_launchers_process_group_when_asked(tmp_path, mode):
    out = tmp_path / "seen.json"
    child = processes.start(MODULE, [str(out), "0"], tmp_path / "run.log", dict(os.environ), threads=1,
                            own_session=False)
    assert child.wait() == 0
    assert json.loads(out.read_text())["sid"] == os.getsid(0)


def test_a_forked_runs_exit_status_reaches_every_thread_waiting_for_it_while_others_start_runs(tmp_path,
                                                                                               monkeypatch):
    """The launchers wait for runs from several threads and start runs from others; the fork server reports an exit
    status once, so a read of it racing another used to come back as 255 (experiments/processes.py). A fresh
    interpreter's status is ``subprocess``'s, which locks its own reads."""
    monkeypatch.setenv("SDFT_FRESH_PROCESSES", "0")
    for attempt in range(3):
        out = tmp_path / f"seen{attempt}.json"
        child = processes.start(MODULE, [str(out), "0", "wait"], tmp_path / "run.log", dict(os.environ), threads=1)
        _wait_for(out, child)
        with ThreadPoolExecutor(max_workers=6) as pool:
            waiting = [pool.submit(child.wait) for _ in range(4)]
            polling = [pool.submit(lambda c=child: [c.poll() for _ in range(2000)]) for _ in range(2)]
            child.send_signal(signal.SIGTERM)
            # each start reads the status of the runs that have ended, this one's among them
            quick = [processes.start(MODULE, [str(tmp_path / f"quick{attempt}_{i}.json"), "4"], tmp_path / "q.log",
                                     dict(os.environ), threads=1, append=True) for i in range(3)]
            assert [w.result(timeout=120) for w in waiting] == [128 + signal.SIGTERM] * 4
            assert all(code in (None, 128 + signal.SIGTERM) for p in polling for code in p.result(timeout=120))
        assert [q.wait() for q in quick] == [4, 4, 4]
        assert child.returncode == child.poll() == child.wait() == 128 + signal.SIGTERM


def test_waiting_for_a_run_can_time_out_and_the_run_goes_on(tmp_path, mode):
    out = tmp_path / "seen.json"
    child = processes.start(MODULE, [str(out), "0", "wait"], tmp_path / "run.log", dict(os.environ), threads=1)
    _wait_for(out, child)
    with pytest.raises(subprocess.TimeoutExpired):
        child.wait(timeout=0.2)
    assert child.poll() is None
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=60) == 128 + signal.SIGTERM
