"""eval/sandbox.py: model-written code cannot read the evaluator's secrets, outlive its time-out, exhaust memory,
write outside its directory or reach the network; and the record of protections says what actually holds."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eval import sandbox
from eval.lm_eval_tasks.utils import humaneval_pass_at_k, humaneval_predictions, run_code_test

ROOT = Path(__file__).resolve().parents[2]
SECRET = "SECRET-sandbox-test-3f9a1c"

# exits 0 only when it found the secret: in its own environment, its parent's /proc environ, or any process's
FIND_SECRET = f"""
import os, sys
found = ["own env"] if {SECRET!r} in os.environ.get("OPENAI_API_KEY", "") else []
for pid in [str(os.getppid())] + [p for p in os.listdir("/proc") if p.isdigit()]:
    try:
        with open(f"/proc/{{pid}}/environ", "rb") as f:
            if {SECRET!r}.encode() in f.read():
                found.append(pid)
    except OSError:
        pass
print(found)
sys.exit(0 if found else 1)
"""

# run in a fresh interpreter that has the secret in its environment from the start (/proc/<pid>/environ shows
# a process's initial environment, not later os.environ changes); eval/sandbox.py is loaded by path, standard
# library only, so that a bare system python can run it too
HELPER = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("sandbox_under_test", sys.argv[1])
sandbox = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sandbox)
mode = sys.argv[2] if len(sys.argv) > 2 else None
res = sandbox.run_program(sys.stdin.read(), 5.0, mode=mode)
print(json.dumps({"passed": res.passed, "stdout": res.stdout, "stderr": res.stderr, "mode": res.mode,
                  "protections": sandbox.protections() if mode is None else None}))
"""


def _run_with_secret(program: str, *mode: str, python: str = sys.executable, prefix: list[str] = ()) -> dict:
    env = {**os.environ, "OPENAI_API_KEY": SECRET}
    proc = subprocess.run([*prefix, python, "-c", HELPER, str(ROOT / "eval" / "sandbox.py"), *mode], input=program,
                          capture_output=True, text=True, env=env, cwd="/", timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _processes_with(marker: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        pids.append(int(entry))
            except OSError:
                pass
    return pids


def _wait_gone(marker: str, seconds: float = 2.0) -> list[int]:
    deadline = time.time() + seconds
    while (left := _processes_with(marker)) and time.time() < deadline:
        time.sleep(0.1)
    return left


def test_correct_program_passes_wrong_fails():
    assert run_code_test("def f(x):\n    return x + 1\nassert f(1) == 2\n")
    assert not run_code_test("def f(x):\n    return x\nassert f(1) == 2\n")
    res = sandbox.run_program("import sys\nprint('out')\nsys.exit(3)\n", 5.0)
    assert (res.returncode, res.passed, res.timed_out, res.stdout.strip()) == (3, False, False, "out")
    res = sandbox.run_program("import time\ntime.sleep(30)\n", 1.0)
    assert res.timed_out and not res.passed and res.returncode is None


def test_secret_not_readable(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    assert not run_code_test(FIND_SECRET)  # in this process: the child's own environment is fresh
    out = _run_with_secret(FIND_SECRET)  # the parent's initial environment holds the secret
    assert out["protections"]["parent_environ_hidden"], out["protections"]
    assert not out["passed"], out
    assert out["stdout"].strip() == "[]"


def test_plain_mode_record_is_honest():
    # the fallback without namespaces or uid: the same program finds the secret, and the record says so
    out = _run_with_secret(FIND_SECRET, "plain")
    assert out["passed"] and out["mode"] == "plain", out
    record = sandbox._describe("plain", {}, {})
    assert not record["parent_environ_hidden"] and not record["network_isolated"]


def _lingering_program(marker: str, sleep: float) -> str:
    return f"""
import subprocess, sys, time
for new_session in (False, True):
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", {marker!r}], start_new_session=new_session)
time.sleep({sleep})
"""


@pytest.mark.parametrize("sleep", [30, 0])  # killed at the time-out / exits 0 leaving children behind
def test_no_process_left_behind(sleep):
    marker = f"sandbox-linger-marker-{os.getpid()}-{sleep}"
    try:
        res = sandbox.run_program(_lingering_program(marker, sleep), 2.0)
        assert res.timed_out == (sleep > 0)
        # the grandchild in the program's process group is always killed; the one that started a new session
        # only where the record says every descendant is (PID namespace, or the sandbox uid's processes)
        left = _wait_gone(marker)
        assert len(left) == (0 if sandbox.protections()["all_descendants_killed"] else 1)
    finally:
        for pid in _processes_with(marker):
            os.kill(pid, 9)


def test_plain_mode_kills_its_process_group_only():
    marker = f"sandbox-linger-marker-{os.getpid()}-plain"
    try:
        sandbox.run_program(_lingering_program(marker, 30), 2.0, mode="plain")
        time.sleep(0.5)
        assert len(_processes_with(marker)) == 1  # the grandchild in a new session escapes killpg
        assert not sandbox._describe("plain", {}, {})["all_descendants_killed"]
    finally:
        for pid in _processes_with(marker):
            os.kill(pid, 9)


def test_memory_limit():
    res = sandbox.run_program("buf = bytearray(4 << 30)\nbuf[-1] = 1\n", 5.0)
    assert not res.passed and not res.timed_out and res.returncode != 0  # stopped by the limit, not the timeout
    assert "MemoryError" in res.stderr


def test_resource_limits_in_child():
    separate_uid = sandbox.protections()["separate_uid"] is not None
    program = f"""
import resource, sys
want = {{resource.RLIMIT_AS: {sandbox.MEMORY_BYTES}, resource.RLIMIT_FSIZE: {sandbox.FILE_BYTES},
        resource.RLIMIT_CORE: 0, resource.RLIMIT_CPU: 4}}
if {separate_uid}:
    want[resource.RLIMIT_NPROC] = {sandbox.NPROC}
sys.exit(0 if all(resource.getrlimit(k)[0] == v for k, v in want.items()) else 1)
"""
    assert sandbox.run_program(program, 3.0).passed
    big = sandbox.run_program("open('big', 'wb').write(b'x' * (20 << 20))\n", 3.0)
    assert not big.passed and "File too large" in big.stderr


def test_writes_outside_its_directory(tmp_path):
    outside = tmp_path / "world-writable"
    outside.mkdir()
    outside.chmod(0o777)
    program = f"open({str(outside / 'escaped.txt')!r}, 'w').write('x')\nopen('inside.txt', 'w').write('x')\n"
    res = sandbox.run_program(program, 3.0)
    if sandbox.protections()["private_tmp"]:
        assert not res.passed and not (outside / "escaped.txt").exists()
    else:  # not contained here: the record must say so, and the write indeed lands
        assert res.passed and (outside / "escaped.txt").exists()


def _listener():
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    srv.setblocking(False)
    return srv


def _accepted(srv) -> bool:
    try:
        srv.accept()[0].close()
        return True
    except BlockingIOError:
        return False


@pytest.mark.parametrize("mode", [None, "plain"])
def test_network(mode):
    srv = _listener()
    port = srv.getsockname()[1]
    program = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2).close()\n"
    try:
        res = sandbox.run_program(program, 5.0, mode=mode)
        # where the record says the network is not contained, the connection must indeed go through
        contained = sandbox.protections()["network_isolated"] if mode is None else False
        assert res.passed == (not contained) and _accepted(srv) == (not contained), (res, contained)
    finally:
        srv.close()


def test_unprivileged_user_fallback():
    """As a user without root: user namespaces when allowed (secret hidden), else plain (and recorded so)."""
    python = "/usr/bin/python3"
    if os.geteuid() != 0 or not shutil.which("setpriv") or not os.access(python, os.X_OK):
        pytest.skip("needs root (to become an unprivileged user), setpriv and a system python")
    prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    check = subprocess.run([*prefix, python, "-c", "import sys; sys.exit(sys.version_info < (3, 10))"],
                           capture_output=True, cwd="/")
    if check.returncode != 0 or not os.access(ROOT / "eval" / "sandbox.py", os.R_OK):
        pytest.skip("the system python cannot run the sandbox module as an unprivileged user")
    out = _run_with_secret(FIND_SECRET, python=python, prefix=prefix)
    record = out["protections"]
    assert record["mode"] in ("userns", "plain") and record["separate_uid"] is None
    assert out["passed"] == (not record["parent_environ_hidden"]), out


def test_humaneval_task_is_lm_evals_with_the_sandbox():
    import lm_eval
    from lm_eval.tasks._yaml_loader import load_yaml

    ours = load_yaml(ROOT / "eval" / "lm_eval_tasks" / "sdft_humaneval.yaml", resolve_func=False)
    theirs = load_yaml(Path(lm_eval.__file__).parent / "tasks" / "humaneval" / "humaneval.yaml", resolve_func=False)

    def shared(cfg):
        cfg = json.loads(json.dumps(cfg, default=str))
        cfg.pop("task")
        cfg["metric_list"][0].pop("metric")
        cfg["filter_list"][0]["filter"][0].pop("filter_fn")
        return cfg

    assert shared(ours) == shared(theirs)
    resolved = load_yaml(ROOT / "eval" / "lm_eval_tasks" / "sdft_humaneval.yaml")  # imports utils as lm-eval does
    assert resolved["metric_list"][0]["metric"].__name__ == "humaneval_pass_at_k"
    assert resolved["filter_list"][0]["filter"][0]["filter_fn"].__name__ == "humaneval_predictions"


def test_humaneval_metric_runs_through_the_sandbox():
    docs = [{"prompt": "def add(a, b):\n"}]
    preds = humaneval_predictions([["    return a + b\n", "    return a * b\n"]], docs)
    assert preds == [["def add(a, b):\n    return a + b\n", "def add(a, b):\n    return a * b\n"]]
    ref = "def check(f):\n    assert f(2, 3) == 5\ncheck(add)"
    assert humaneval_pass_at_k([ref], preds, k=[1, 2]) == {"pass@1": 0.5, "pass@2": 1.0}
    assert humaneval_pass_at_k([ref], [[preds[0][1]]], k=[1]) == {"pass@1": 0.0}
    leak = "import os, sys\nsys.exit(0 if os.environ.get('OPENAI_API_KEY') else 1)\n"
    assert humaneval_pass_at_k(["pass"], [[leak]], k=1) == {"pass@1": 0.0}


@pytest.mark.slow
def test_humaneval_task_end_to_end_through_lm_eval(tmp_path):
    # sdft_humaneval.yaml with two local problems instead of the hub data set; each prompt ends in a comment so
    # that any one-line completion keeps the program as written: pass@1 is then exactly 1/2
    import lm_eval
    from lm_eval.tasks import TaskManager

    from eval.prior import _make_lm
    from sdft.models import load_model_and_tokenizer

    rows = [{"prompt": f"def add(a, b):\n    return a {op} b\n#", "test": "def check(f):\n    assert f(2, 3) == 5\n",
             "entry_point": "add"} for op in "+-"]
    (tmp_path / "local_data.py").write_text(
        "import datasets\n\n\ndef load(**kwargs):\n"
        f"    return datasets.DatasetDict({{'test': datasets.Dataset.from_list({rows!r})}})\n")
    (tmp_path / "local_humaneval.yaml").write_text(
        f"include: {ROOT / 'eval' / 'lm_eval_tasks' / 'sdft_humaneval.yaml'}\ntask: local_humaneval\n"
        "custom_dataset: !function local_data.load\ndataset_path: json\n"
        "generation_kwargs:\n  until: [\"\\n\"]\n  max_gen_toks: 4\n  do_sample: false\n")
    model, tok = load_model_and_tokenizer("embedded:tiny-llama")
    res = lm_eval.simple_evaluate(model=_make_lm(model, tok, "hf", 2, None, "shared_context"),
                                  tasks=["local_humaneval"],
                                  task_manager=TaskManager(include_path=str(tmp_path), include_defaults=False),
                                  confirm_run_unsafe_code=True, log_samples=False, bootstrap_iters=0)
    assert res["results"]["local_humaneval"]["pass@1,create_test"] == 0.5
