"""Shared fixtures. Every test runs offline: the Hugging Face hub is never contacted."""

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# pytest-xdist runs the suite on 2 worker processes (pyproject.toml's addopts): one torch thread each, and for the
# runs they start, so that two workers do not ask 4 threads of 2 cores (set before anything imports torch).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real public records beside the checkout (../shared/data); tests using it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> str:
    """A freshly built tiny Llama + locally trained tokenizer, saved to a temporary folder."""
    from sdft.models import build_tiny_model, build_tiny_tokenizer

    path = tmp_path_factory.mktemp("tiny-llama")
    tok = build_tiny_tokenizer()
    model = build_tiny_model(tok, seed=0)
    model.config.name_or_path = str(path)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def varied_copy():
    """A function ``(model, seed) -> model``: a copy of ``model`` in eval mode with N(0, 0.2) noise (seeded) added
    to every weight. The random tiny model repeats one token in every row; the larger weights make its rows differ,
    so that greedy rows end at different steps."""
    import copy

    import torch

    def make(model, seed: int):
        model = copy.deepcopy(model).eval()
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * 0.2)
        return model

    return make


@pytest.fixture(scope="session")
def run_module(tmp_path_factory):
    """A function ``(module, argv, env=None, timeout=300, cwd=None) -> subprocess.CompletedProcess``: ``python -m
    module argv`` (from ``cwd`` if given) run as the launchers run every run, forked from the preloaded server of
    :mod:`experiments.processes` (a process of its own that starts without 7 s of imports), with this process's
    thread count. Its stdout and stderr, one log, are both fields of the result; a run past ``timeout`` is killed
    and the timeout raised."""
    import subprocess

    import torch

    from experiments import processes

    logs = tmp_path_factory.mktemp("run_module")

    def run(module: str, argv: list[str], env: dict[str, str] | None = None, timeout: float = 300, cwd=None):
        log = logs / f"{len(list(logs.iterdir()))}.log"
        code = processes.run_to_end(module, list(argv), log, dict(os.environ if env is None else env),
                                    threads=torch.get_num_threads(), timeout=timeout, cwd=cwd)
        output = log.read_text()
        return subprocess.CompletedProcess([module, *argv], code, stdout=output, stderr=output)

    return run


@pytest.fixture(scope="session")
def once_per_session(tmp_path_factory, worker_id):
    """A function ``(name, make) -> Path``: a folder that ``make(folder)`` fills once per test session, whichever
    pytest-xdist worker asks first; a worker asking while it is being made waits for it (a file lock), then every
    worker reads the same folder. (A module- or session-scoped fixture runs once per *worker* that runs its tests:
    with ``--dist worksteal`` both workers often do, and an expensive one ran twice.) A ``make`` that raised is
    redone by the next asker."""
    import shutil

    from filelock import FileLock

    # under xdist: the session's folder that holds every worker's own (popen-gw0, popen-gw1); else this session's
    root = tmp_path_factory.getbasetemp() if worker_id == "master" else tmp_path_factory.getbasetemp().parent

    def get(name: str, make) -> Path:
        folder = root / f"shared-{name}"
        with FileLock(str(root / f"shared-{name}.lock")):
            if not (folder / ".made").exists():
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir()
                make(folder)
                (folder / ".made").touch()
        return folder

    return get


def pytest_collection_modifyitems(config, items):
    """Modules holding end-to-end (``slow``) tests first, in their collected order otherwise: on two workers the
    longest modules start early and the many short ones fill in behind them, instead of one long module running
    alone at the end."""
    slow = {item.nodeid.split("::")[0] for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in slow)  # a stable sort: False (slow) first
