"""sdft.timing: the phase timer's arithmetic (a hand clock), and the seconds a smoke run writes into its own files:
every step phase on every training line, never negative, adding up to at most the line's wall-clock interval; the
validation probes' seconds; the manifest's start-up. Properties only: nothing here asserts a speed."""

import json

import pytest

from sdft.timing import PhaseTimer, RunClock

ROUNDING_S = 0.002  # metrics.jsonl's times are rounded to the millisecond, the probes' seconds too
SDFT_PHASES = {"rollout", "teacher", "student", "backward", "optimizer", "ema", "checkpoint"}
SFT_PHASES = {"forward_backward", "optimizer", "checkpoint"}


class HandClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_phase_counts_its_own_seconds_and_the_phases_inside_it_theirs():
    clock = HandClock()
    timer = PhaseTimer(["outer", "inner", "idle"], clock=clock)
    timer.start("outer")
    clock.now = 1.0
    with timer.phase("inner"):
        clock.now = 3.5
    clock.now = 4.0
    with timer.phase("inner"):  # a phase entered twice adds up
        clock.now = 4.25
    clock.now = 5.0
    timer.stop("outer")
    assert timer.take() == {"time/outer_s": 5.0 - 2.5 - 0.25, "time/inner_s": 2.75, "time/idle_s": 0.0}
    assert timer.take() == {"time/outer_s": 0.0, "time/inner_s": 0.0, "time/idle_s": 0.0}  # taken: from 0 again
    with timer.phase("late"):  # a phase not declared is reported from its first use on
        clock.now = 6.0
    timer.declare("declared")
    assert timer.take() == {"time/outer_s": 0.0, "time/inner_s": 0.0, "time/idle_s": 0.0, "time/late_s": 1.0,
                            "time/declared_s": 0.0}


def test_phases_must_close_innermost_first_and_synchronize_at_every_boundary():
    calls = []
    timer = PhaseTimer(synchronize=lambda: calls.append(1), clock=HandClock())
    timer.start("a")
    timer.start("b")
    with pytest.raises(RuntimeError, match="innermost"):
        timer.stop("a")
    timer.stop("b")
    timer.stop("a")
    assert len(calls) == 4
    timer.start("a")
    timer.clear()  # a new train() call: nothing open, nothing counted
    timer.start("b")
    timer.stop("b")
    assert set(timer.take()) == {"time/a_s", "time/b_s"}


def test_the_run_clock_counts_the_process_start_up_of_its_first_run_only():
    clock = RunClock()
    clock.start()
    with clock.loading():
        pass
    first = clock.startup()
    assert first["process_to_run_s"] > 0 and first["run_to_first_step_s"] is None and first["model_load_s"] >= 0
    clock.step_began()
    assert clock.startup()["run_to_first_step_s"] is not None
    clock.start()
    assert clock.startup()["process_to_run_s"] is None  # a later run of the process: its earlier runs came between


@pytest.mark.parametrize("method, phases", [("sdft", SDFT_PHASES), ("sft", SFT_PHASES)])
def test_a_smoke_run_writes_its_step_phases_probe_seconds_and_start_up(method, phases, tmp_path):
    from sdft.run_io import read_metrics, read_step_files
    from sdft.timing import RUN_CLOCK
    from sdft.train import main

    run = tmp_path / "run"
    main(["--method", method, "--preset", "smoke", "--output-dir", str(run), "selection_steps=1"])
    lines = [row for row in read_metrics(run) if "loss" in row]
    assert [row["step"] for row in lines] == [1, 2, 3]
    probes = read_step_files(run)
    assert sorted(probes) == [1, 2, 3]
    begin = RUN_CLOCK.first_step  # the first step's phases come after it began
    for row in lines:
        got = {k[len("time/"):-len("_s")]: v for k, v in row.items() if k.startswith("time/")}
        assert set(got) == phases, row["step"]
        assert all(v >= 0 for v in got.values()), got
        probe = probes[row["step"]]["wall_s"]  # the probe of step S runs before S's line is written
        assert probe >= 0
        assert sum(got.values()) + probe <= row["time"] - begin + ROUNDING_S, (row["step"], got, probe)
        begin = row["time"]
    assert sum(row["time/checkpoint_s"] for row in lines) > 0  # smoke saves at step 2: on step 3's line
    startup = json.loads((run / "manifest.json").read_text())["startup"]
    assert startup["run_to_first_step_s"] >= 0 and 0 <= startup["model_load_s"] <= startup["run_to_first_step_s"] + 0.01
    assert startup["process_to_run_s"] is None or startup["process_to_run_s"] > 0
