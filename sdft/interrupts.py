"""Clean stops on SIGTERM and SIGINT (Ctrl-C): finish the step, write a checkpoint, say "interrupted", let go.

SLURM and most schedulers send SIGTERM some time before SIGKILL (SLURM's ``KillWait``, 30 s by default; ``sbatch
--signal`` can ask for more). While ``sdft.train`` trains, ``catch_stop_signals`` turns the first SIGTERM or SIGINT
into a request; ``sdft.training.StopOnSignal`` ends training at the end of the current optimizer step and has the Trainer write a
checkpoint there (a complete one, ``sdft.checkpoints``); ``sdft.train`` then marks the manifest ``interrupted``,
releases the run's lock and exits with 128 + the signal's number (143 for SIGTERM, 130 for SIGINT). Rerunning the
same command resumes from that checkpoint to the model an uninterrupted run makes (``tests/sdft/test_resume.py``).

A second stop signal is not waited on: SIGINT raises ``KeyboardInterrupt`` at once, SIGTERM ends the
process (its default). With several processes the stop is agreed on: each step ends with a one-element all-reduce
(max) of the processes' requests, so every process stops after the same step, whichever got the signal.

The checkpoint protocol (``sdft.selection``) does not evaluate the step a stop ends on: an uninterrupted run would
not have evaluated it, and a scheduler's grace period is shorter than an evaluation.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """The first stop signal this process received, and whether training stopped for it (on any process)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.stopped_at: int | None = None  # the step training ended on, once StopOnSignal stopped it

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def stopped(self) -> bool:
        return self.stopped_at is not None

    @property
    def signal_name(self) -> str | None:
        return signal.Signals(self.signum).name if self.signum is not None else None


class RunInterrupted(BaseException):
    """Training stopped on a signal; the run directory holds a checkpoint of ``step`` to resume from. Not an
    ``Exception``, as ``KeyboardInterrupt`` is not: code that catches a run's errors and goes on (a grid running its
    runs one after another in one process) stops too."""

    def __init__(self, signum: int, step: int | None, run_dir):
        self.signum, self.step, self.run_dir = signum, step, run_dir
        name = signal.Signals(signum).name
        where = f"after step {step}, checkpoint written" if step is not None else "before training stopped"
        super().__init__(f"{run_dir}: interrupted by {name} ({where}); rerun the same command to resume")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


_ACTIVE: StopRequest | None = None


def active_request() -> StopRequest | None:
    """The request of the enclosing ``catch_stop_signals`` block, if any."""
    return _ACTIVE


def training_interrupted() -> bool:
    """Whether training is ending because of a stop signal (read by callbacks that should not run then)."""
    return _ACTIVE is not None and _ACTIVE.stopped


@contextmanager
def catch_stop_signals() -> Iterator[StopRequest]:
    """Within the block the first SIGTERM / SIGINT is recorded in the yielded ``StopRequest`` instead of ending the
    process; the previous handlers are put back on leaving. Outside the main thread (where Python cannot install
    handlers) nothing is caught and the request stays empty."""
    global _ACTIVE
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}

    def handle(signum, frame):
        if request.signum is not None:  # asked twice: do what the signal does by default
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
        request.signum = signum
        print(f"[sdft.train] {signal.Signals(signum).name} received: stopping after this step and writing a "
              "checkpoint (send it again to stop at once)", flush=True)

    outer, _ACTIVE = _ACTIVE, request
    try:
        for s in STOP_SIGNALS:
            signal.signal(s, handle)
        yield request
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        _ACTIVE = outer
