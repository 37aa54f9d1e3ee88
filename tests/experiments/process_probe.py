"""Run by tests/experiments/test_processes.py as ``python -m tests.experiments.process_probe OUT CODE [wait]``:
writes what the process sees to OUT (JSON), prints a line, then exits with CODE (after a SIGTERM when ``wait``)."""

import json
import os
import signal
import sys
import time

if __name__ == "__main__":
    import torch

    out, code = sys.argv[1], int(sys.argv[2])
    seen = {"argv": sys.argv[1:], "pid": os.getpid(), "sid": os.getsid(0), "threads": torch.get_num_threads(),
            "probe_env": os.environ.get("SDFT_PROBE"), "main": __name__, "cwd": os.getcwd()}
    print("probe: stdout line", flush=True)
    print("probe: stderr line", file=sys.stderr, flush=True)
    if sys.argv[3:] == ["wait"]:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))  # a run's checkpoint-and-stop
        with open(out, "w") as f:
            json.dump(seen, f)
        while True:
            time.sleep(0.05)
    with open(out, "w") as f:
        json.dump(seen, f)
    raise SystemExit(code)
