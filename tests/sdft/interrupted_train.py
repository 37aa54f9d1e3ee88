"""``python -m tests.sdft.interrupted_train ARGS``: ``sdft.train``'s command line in a process that interrupts itself,
as ``INTERRUPT`` says: ``SIGKILL`` right after checkpoint-6 is written, or ``SIGTERM`` / ``SIGINT`` sent to itself at
the end of step 5 (the run finishes step 6 and checkpoints). Used by the resume tests (test_resume.py,
test_adapters.py)."""

import os
import signal
import sys

if __name__ == "__main__":
    from transformers import TrainerCallback

    import sdft.training
    from sdft.train import main

    how = getattr(signal, os.environ["INTERRUPT"])

    class Interrupt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if how != signal.SIGKILL and state.global_step == 5:
                os.kill(os.getpid(), how)

        def on_save(self, args, state, control, **kwargs):
            if how == signal.SIGKILL and state.global_step == 6:
                os.kill(os.getpid(), how)

    original = sdft.training.run_callbacks
    sdft.training.run_callbacks = lambda *args, **kwargs: original(*args, **kwargs) + [Interrupt()]
    main(sys.argv[1:])
