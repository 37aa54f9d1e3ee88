"""Where a training run's time goes, measured by the run itself and written into its own files.

Timing reads clocks only: no value computed, random number drawn or operation order changes with it (on CUDA the
device is synchronized at each phase boundary, so that a phase's seconds are its own kernels'; that changes no
value either).

* :class:`PhaseTimer` accumulates wall seconds per named phase until they are taken. Phases nest, and a phase counts
  its own seconds only: those of the phases opened inside it are theirs. So the phases of a step never count a
  second twice, and they add up to at most the step's wall-clock.
* :class:`TimedSteps`, a ``transformers.Trainer`` mixin, logs a step's phases on its line of ``metrics.jsonl`` as
  ``time/<phase>_s`` (seconds since the previous logged step; every phase of the trainer on every line, 0 when it did
  not run). Every trainer of this repository has three:

  ``time/forward_backward_s``  from the start of the optimizer step (``on_step_begin``) to the optimizer: the
                               forward and backward passes of its micro-batches, gradient clipping, the Trainer's
                               bookkeeping in between, less the phases below that run inside it;
  ``time/optimizer_s``         ``optimizer.step()`` (``on_pre_optimizer_step`` to ``on_optimizer_step``);
  ``time/checkpoint_s``        writing a resumable checkpoint. transformers saves after logging the step, so the
                               save of step S is on the line of step S+1 (the last one on no line).

  SDFT (``sdft.trainer``) splits its forward-backward span further: ``time/rollout_s`` (``sample_rollouts``:
  generating the rollouts, their log-probabilities, their health), ``time/teacher_s`` (the teacher's forward),
  ``time/student_s`` (the student's forward and the loss: per-token terms, importance weights, token health), and
  the rest of the span, which is then the backward pass, gradient clipping and bookkeeping, as
  ``time/backward_s``; with the fused EMA teacher, ``time/ema_s`` (its update after each step).
  What no phase covers (the data loader, the learning-rate schedule, logging, the checkpoint protocol's validation
  probes, whose seconds are in their own files) is the line's interval less the phases.
* :data:`RUN_CLOCK` records the start-up of the training run of this process, written into ``manifest.json`` as
  ``startup`` (:meth:`RunClock.startup`).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

from transformers import TrainerCallback

PREFIX = "time/"
SUFFIX = "_s"


def phase_key(phase: str) -> str:
    """The ``metrics.jsonl`` key of a phase: ``time/<phase>_s``."""
    return f"{PREFIX}{phase}{SUFFIX}"


def device_synchronizer() -> Callable[[], None] | None:
    """``torch.cuda.synchronize`` where CUDA runs the work (kernels run asynchronously there), else None."""
    import torch

    return torch.cuda.synchronize if torch.cuda.is_available() else None


class PhaseTimer:
    """Wall seconds per named phase, each phase's own (module docstring), accumulated until :meth:`take`.

    ``phases``: the phases always reported (0 when they did not run); a phase first timed later is reported from
    then on. ``synchronize``: called at every boundary before the clock is read (``device_synchronizer``)."""

    def __init__(self, phases: Iterable[str] = (), synchronize: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.perf_counter):
        self._seconds = dict.fromkeys(phases, 0.0)
        self._open: list[list] = []  # the open phases, innermost last: [name, start, seconds of phases inside it]
        self._synchronize, self._clock = synchronize, clock

    def declare(self, *phases: str) -> None:
        """Report ``phases`` on every :meth:`take` from now on, 0 when they did not run."""
        for name in phases:
            self._seconds.setdefault(name, 0.0)

    def _now(self) -> float:
        if self._synchronize is not None:
            self._synchronize()
        return self._clock()

    def start(self, phase: str) -> None:
        """Open ``phase`` inside the phases open now (:meth:`phase` for a block of code)."""
        self._open.append([phase, self._now(), 0.0])

    def stop(self, phase: str) -> None:
        """Close ``phase``, the innermost open one: its own seconds are added to it, all of them to the phase
        around it (which does not count them as its own)."""
        if not self._open or self._open[-1][0] != phase:
            raise RuntimeError(f"timing phase {phase!r} is not the innermost open phase "
                               f"({[p[0] for p in self._open]})")
        now = self._now()
        _, began, inside = self._open.pop()
        self._seconds[phase] = self._seconds.get(phase, 0.0) + (now - began) - inside
        if self._open:
            self._open[-1][2] += now - began

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the block as phase ``name``."""
        self.start(name)
        try:
            yield
        finally:
            self.stop(name)

    def take(self) -> dict[str, float]:
        """``{time/<phase>_s: seconds}`` since the last take (microseconds), and start again from 0."""
        out = {phase_key(name): round(seconds, 6) for name, seconds in self._seconds.items()}
        self._seconds = dict.fromkeys(self._seconds, 0.0)
        return out

    def clear(self) -> None:
        """Forget the open phases and the seconds not taken yet (a new ``train()`` call)."""
        self._open.clear()
        self._seconds = dict.fromkeys(self._seconds, 0.0)


class StepPhases(TrainerCallback):
    """The phases the training loop's events delimit: ``span`` from ``on_step_begin`` to ``on_pre_optimizer_step``
    (the trainer's own phases nest inside it), ``optimizer`` from there to ``on_optimizer_step``. Also tells
    :data:`RUN_CLOCK` when the first step begins."""

    def __init__(self, timer: PhaseTimer, span: str):
        self.timer, self.span = timer, span

    def on_train_begin(self, args, state, control, **kwargs):
        self.timer.clear()

    def on_step_begin(self, args, state, control, **kwargs):
        RUN_CLOCK.step_began()
        self.timer.start(self.span)

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.timer.stop(self.span)
        self.timer.start("optimizer")

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.timer.stop("optimizer")


class TimedSteps:
    """``transformers.Trainer`` mixin (before the Trainer among the bases): the step's phases on its logged line
    (module docstring). ``timed_phases``: the phases every line reports; ``step_span``: the name of the
    forward-backward span (``StepPhases``). A subclass times its own phases with ``self.phase_timer.phase(name)``
    (names in ``timed_phases``, or declared with ``self.phase_timer.declare``)."""

    timed_phases: tuple[str, ...] = ("forward_backward", "optimizer", "checkpoint")
    step_span = "forward_backward"

    def __init__(self, *args, **kwargs):
        self.phase_timer = PhaseTimer(self.timed_phases, device_synchronizer())  # before the Trainer's set-up uses it
        super().__init__(*args, **kwargs)
        self.add_callback(StepPhases(self.phase_timer, self.step_span))

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """The parent's, with the phases since the last training line on a training step's line (the one with the
        step's ``loss``)."""
        if "loss" in logs:
            logs = {**logs, **self.phase_timer.take()}
        super().log(logs, start_time)

    def _save_checkpoint(self, model, trial):
        with self.phase_timer.phase("checkpoint"):
            super()._save_checkpoint(model, trial)


class RunClock:
    """The start-up of the training run in this process (``sdft.train`` starts it when the run's manifest is
    written; ``sdft.training.load_student`` adds its loads; ``StepPhases`` marks the first optimizer step)."""

    def __init__(self):
        self.runs = 0  # runs started in this process
        self.started: float | None = None
        self.first_step: float | None = None
        self.model_load_s = 0.0

    def start(self, at: float | None = None) -> None:
        """A run starts at POSIX time ``at`` (default now)."""
        self.runs += 1
        self.started = time.time() if at is None else at
        self.first_step, self.model_load_s = None, 0.0

    def step_began(self) -> None:
        if self.first_step is None:
            self.first_step = time.time()

    @contextmanager
    def loading(self) -> Iterator[None]:
        """Time the block as loading a model (and its tokenizer)."""
        began = time.perf_counter()
        try:
            yield
        finally:
            self.model_load_s += time.perf_counter() - began

    def startup(self) -> dict:
        """The manifest's ``startup``: ``process_started`` (the process's creation, local time);
        ``process_to_run_s``, from then to the run's start (the manifest's ``started``: the interpreter, imports,
        config and data; null for a later run of the same process, whose earlier runs came between);
        ``run_to_first_step_s``, from the run's start to its first optimizer step (model loading, the trainer's
        set-up, the teacher's copy, a resumed checkpoint; null when no step ran); ``model_load_s``, the seconds of
        every model and tokenizer load of the run (re-invoke's second stage and offline distillation's teacher
        load another, after or before the first step)."""
        created = process_created()
        return {
            "process_started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(created)),
            "process_to_run_s": round(self.started - created, 2) if self.runs == 1 and self.started else None,
            "run_to_first_step_s": round(self.first_step - self.started, 2)
            if self.first_step is not None and self.started is not None else None,
            "model_load_s": round(self.model_load_s, 2),
        }


def process_created() -> float:
    """POSIX time at which this process was created."""
    import psutil

    return psutil.Process().create_time()


RUN_CLOCK = RunClock()
