"""Prior capabilities through lm-evaluation-harness (0.4.x) and its Python API.

Two suites:

* ``paper`` -- the paper's six benchmarks (hellaswag, mmlu, truthfulqa, winogrande, humaneval, ifeval), one
  headline metric each, chosen to match the paper's Qwen2.5-7B-Instruct base row (see eval/README.md for the
  reasoning). Needs the Hugging Face hub or the data sets in the local HF cache.
* ``embedded`` -- tasks written for this repository (``eval/lm_eval_tasks``, 112-196 items each) that STAND IN
  for the six benchmarks on a CPU, offline, one stand-in per benchmark (and ``arithmetic``, an extra that runs
  only when named and is left out of the average). Their numbers are not comparable with the paper's.

``humaneval`` / ``sdft_code`` execute model-written code: they run only with ``allow_code_execution=True``
(lm-eval's ``confirm_run_unsafe_code``); otherwise they are reported as skipped. Both run each program in
:mod:`eval.sandbox` (HumanEval through ``lm_eval_tasks/sdft_humaneval.yaml``, lm-eval's humaneval task with
the sandbox in place of HF evaluate's in-process ``code_eval``); the result records the sandbox's protections
as ``code_sandbox``.

ifeval imports NLTK's ``punkt_tab`` (and tries to download it at import time). Offline, when it is not
installed, :func:`ensure_punkt_tab` raises a clear error, or with ``punkt_fallback=True`` writes a Punkt
model without learned parameters (a short hand-written abbreviation list only) under the repo cache and
puts it on NLTK's path; the run then records ``ifeval_punkt: fallback`` because sentence counts can differ.
"""

from __future__ import annotations

import os
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval.sandbox import protections
from sdft.errors import UserError

TASKS_DIR = Path(__file__).resolve().parent / "lm_eval_tasks"


class PriorSuiteError(UserError, RuntimeError):
    """A prior-capability suite cannot run here; the message says why and what to do."""


@dataclass(frozen=True)
class Benchmark:
    task: str  # lm-eval task or group name
    metric: str  # key in lm-eval's results, "<metric>,<filter>"
    num_fewshot: int | None = 0
    chat_template: bool = False
    unsafe: bool = False
    hub_datasets: tuple[str, ...] = ()
    paper_base: float | None = None  # Qwen2.5-7B-Instruct, the paper's Table 5 base row
    stand_in_for: tuple[str, ...] = ()
    note: str = ""
    # not a stand-in for one of the paper's six benchmarks: runs only when named in ``benchmarks``, and is
    # never part of the suite's average (which mirrors the paper's average over its six benchmarks)
    extra: bool = False


PAPER_SUITE: dict[str, Benchmark] = {
    "hellaswag": Benchmark("hellaswag", "acc,none", 0, hub_datasets=("Rowan/hellaswag",), paper_base=62.0,
                           note="acc (not acc_norm, ~80 for this model), 0-shot"),
    "humaneval": Benchmark("sdft_humaneval", "pass@1,create_test", 0, unsafe=True,
                           hub_datasets=("openai/openai_humaneval",), paper_base=65.8,
                           note="lm-eval's humaneval, programs run in eval/sandbox.py; completion prompt, greedy "
                                "pass@1, no chat template"),
    "ifeval": Benchmark("ifeval", "inst_level_loose_acc,none", 0, hub_datasets=("google/IFEval",), paper_base=74.3,
                        note="instruction-level loose, no chat template: the authors' answer (their repository's "
                             "issue 17) and their lm_eval command"),
    "mmlu": Benchmark("mmlu", "acc,none", 0, hub_datasets=("cais/mmlu",), paper_base=71.7, note="acc, 0-shot"),
    "truthfulqa": Benchmark("truthfulqa_mc1", "acc,none", 0, hub_datasets=("truthfulqa/truthful_qa",),
                            paper_base=47.9, note="mc1 (mc2 is ~64 for this model)"),
    "winogrande": Benchmark("winogrande", "acc,none", 0, hub_datasets=("allenai/winogrande",), paper_base=71.1,
                            note="acc, 0-shot"),
}

EMBEDDED_SUITE: dict[str, Benchmark] = {  # one stand-in per benchmark of the paper's suite (eval/README.md)
    "commonsense": Benchmark("sdft_commonsense", "acc,none", stand_in_for=("hellaswag",)),
    "winograd": Benchmark("sdft_winograd", "acc,none", stand_in_for=("winogrande",)),
    "facts": Benchmark("sdft_facts", "acc,none", stand_in_for=("mmlu",)),
    "truthful": Benchmark("sdft_truthful", "acc,none", stand_in_for=("truthfulqa",)),
    "instructions": Benchmark("sdft_instructions", "prompt_level_acc,none", chat_template=True,
                              stand_in_for=("ifeval",)),
    "code": Benchmark("sdft_code", "pass@1,none", unsafe=True, stand_in_for=("humaneval",)),
    "arithmetic": Benchmark("sdft_arithmetic", "exact_match,first_number", extra=True,
                            note="not one of the paper's six: only when named, never in the average"),
}
SUITES = {"paper": PAPER_SUITE, "embedded": EMBEDDED_SUITE}
# accuracy of a uniform random pick on the multiple-choice stand-ins (tests/eval/test_eval_prior.py checks it
# against the data files)
CHANCE = {"commonsense": 0.25, "winograd": 0.5, "facts": 0.25, "truthful": 0.25}
# how the hf backend scores loglikelihood requests: each context once for all its continuations
# (eval/shared_context_lm.py), or lm-eval's HFLM, one full row per request (the reference)
LOGLIKELIHOOD = ("shared_context", "lm_eval")


# ------------------------------------------------------------------------------------------------ checks

def hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False") or \
            os.environ.get("HF_DATASETS_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


def dataset_cached(repo_id: str) -> bool:
    """True when the data set is in the local HF hub cache or the ``datasets`` cache."""
    try:
        from huggingface_hub import snapshot_download

        snapshot_download(repo_id, repo_type="dataset", local_files_only=True)
        return True
    except Exception:
        pass
    import datasets.config

    folder = Path(datasets.config.HF_DATASETS_CACHE) / repo_id.replace("/", "___")
    return folder.exists() and any(folder.iterdir())


def check_hub_data(benchmarks: dict[str, Benchmark]) -> bool:
    """Raise PriorSuiteError when the hub is unreachable and a benchmark's data set is not cached.

    Returns whether the run must be offline (cache only).
    """
    if hub_reachable():
        return False
    missing = [f"{name} ({repo})" for name, b in benchmarks.items() for repo in b.hub_datasets if not dataset_cached(repo)]
    if missing:
        raise PriorSuiteError(
            "the paper's prior-capability benchmarks need the Hugging Face hub or a local HF cache of their data "
            f"sets; the hub is not reachable here and these are not cached: {', '.join(missing)}. Run once where "
            "huggingface.co is reachable (the data sets are then cached under ~/.cache/huggingface), or set "
            "HF_HOME to a copied cache, or use --prior-suite embedded (offline stand-ins)."
        )
    return True


_ABBREVIATIONS = ["mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "inc", "ltd", "co",
                  "corp", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
                  "no", "fig", "u.s", "a.m", "p.m", "approx", "dept", "est", "gen", "gov", "mt", "ave"]


def ensure_punkt_tab(fallback: bool = False) -> str:
    """Make NLTK's punkt_tab loadable for ifeval. Returns ``installed`` or ``fallback``; raises if neither."""
    import nltk

    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
        return "installed"
    except LookupError:
        pass
    if not fallback:
        raise PriorSuiteError(
            "ifeval needs NLTK's 'punkt_tab' tokenizer data, which is not installed and cannot be downloaded "
            "offline. Install it where the internet is reachable (`python -m nltk.downloader punkt_tab`) and copy "
            "the nltk_data folder here (or point $NLTK_DATA at it), or pass --ifeval-punkt-fallback to use a "
            "parameter-free Punkt model (sentence counts may differ slightly; recorded in eval.json)."
        )
    from sdft.models import cache_dir

    root = cache_dir() / "nltk_data"
    folder = root / "tokenizers" / "punkt_tab" / "english"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "abbrev_types.txt").write_text("\n".join(_ABBREVIATIONS) + "\n")
    for name in ("collocations.tab", "sent_starters.txt", "ortho_context.tab"):
        (folder / name).touch()
    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))
    nltk.data.find("tokenizers/punkt_tab/english/")
    return "fallback"


def preflight(suite: str, benchmarks: list[str] | None = None, punkt_fallback: bool = False,
              allow_code_execution: bool = True) -> dict[str, Any]:
    """Check that a suite can run here (hub or cached data, NLTK data); raises PriorSuiteError with the fix."""
    if suite not in SUITES:
        raise ValueError(f"unknown prior suite {suite!r}; expected one of {sorted(SUITES)}")
    specs = {k: v for k, v in SUITES[suite].items()
             if (benchmarks is None or k in benchmarks) and (allow_code_execution or not v.unsafe)}
    extra: dict[str, Any] = {}
    if suite == "paper":
        if check_hub_data(specs):
            os.environ["HF_DATASETS_OFFLINE"] = "1"
            os.environ["HF_HUB_OFFLINE"] = "1"
            extra["hub"] = "offline, local cache"
        if "ifeval" in specs:
            extra["ifeval_punkt"] = ensure_punkt_tab(punkt_fallback)
    return extra


# ------------------------------------------------------------------------------------------------ run

def _n_samples(results: dict, task: str) -> int | None:
    """Number of documents evaluated for a task, summed over the subtasks of a group (recursively)."""
    ns = results.get("n-samples", {})
    if task in ns:
        return ns[task].get("effective")
    subs = results.get("group_subtasks", {}).get(task)
    if not subs:
        return None
    vals = [_n_samples(results, s) for s in subs]
    return sum(vals) if all(v is not None for v in vals) else None


def suite_fingerprint(suite: str) -> str | None:
    """sha256 (16 hex digits) of the embedded suite's task files and data (``None`` for the paper suite): two
    results with the same fingerprint were scored on the same items with the same task definitions."""
    if suite != "embedded":
        return None
    import hashlib

    h = hashlib.sha256()
    for path in sorted([*TASKS_DIR.glob("sdft_*.yaml"), TASKS_DIR / "utils.py", *(TASKS_DIR / "data").glob("*.jsonl")]):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def select_benchmarks(suite: str, benchmarks: list[str] | None = None,
                      allow_code_execution: bool = False) -> tuple[dict[str, Benchmark], dict[str, str]]:
    """The benchmarks of ``suite`` that run, and ``{name: why}`` for those skipped.

    ``benchmarks`` (names) restricts the suite; without it every benchmark but the extras runs. Unsafe
    benchmarks (model-written code) are skipped unless ``allow_code_execution``.
    """
    if suite not in SUITES:
        raise ValueError(f"unknown prior suite {suite!r}; expected one of {sorted(SUITES)}")
    specs = dict(SUITES[suite])
    if benchmarks:
        unknown = set(benchmarks) - set(specs)
        if unknown:
            raise ValueError(f"unknown benchmarks {sorted(unknown)} for suite {suite!r}; known: {sorted(specs)}")
        specs = {k: v for k, v in specs.items() if k in benchmarks}
    else:
        specs = {k: v for k, v in specs.items() if not v.extra}
    skipped = {}
    for name, spec in list(specs.items()):
        if spec.unsafe and not allow_code_execution:
            skipped[name] = "executes model-written code: pass --allow-code-execution to run it"
            del specs[name]
    return specs, skipped


def evaluate_prior(model, tokenizer=None, suite: str = "embedded", limit: int | float | None = None, *,
                   allow_code_execution: bool = False, batch_size: int | str = 8, backend: str = "hf",
                   punkt_fallback: bool = False, benchmarks: list[str] | None = None, max_length: int | None = None,
                   seed: int = 0, loglikelihood: str = "shared_context") -> dict[str, Any]:
    """Run a prior-capability suite on ``model`` (a loaded HF model with ``tokenizer``, or a path for vLLM).

    Returns ``{"suite", "benchmarks": {name: {task, metric, value (0-100), n, ..., wall_s}}, "average", ...,
    "wall_s"}``: each benchmark is one ``lm_eval.simple_evaluate`` call, timed (``wall_s``, seconds, the suite's
    in total).
    ``average`` is over the benchmarks that ran except the extras (``Benchmark.extra``; named in
    ``average_of``); ``skipped`` names the others and why. Extras run only when ``benchmarks`` names them.
    ``loglikelihood`` picks how the ``hf`` backend scores loglikelihood requests (one of ``LOGLIKELIHOOD``);
    ``loglikelihood`` in the result names the one that ran (``lm_eval`` for the vLLM backend).
    """
    specs, skipped = select_benchmarks(suite, benchmarks, allow_code_execution)
    extra: dict[str, Any] = preflight(suite, list(specs), punkt_fallback)

    import lm_eval
    from lm_eval.tasks import TaskManager

    lm = _make_lm(model, tokenizer, backend, batch_size, max_length, loglikelihood)
    # The embedded suite needs only our YAML tasks: skipping lm-eval's own index of thousands of task
    # configs saves seconds per call (the paper suite needs that index, and our sdft_humaneval).
    task_manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=suite != "embedded")
    out: dict[str, Any] = {}
    t0 = time.time()
    # one lm-eval call per benchmark (its seconds are its own: wall_s), those without the chat template first
    for name, spec in sorted(specs.items(), key=lambda item: item[1].chat_template):
        began = time.perf_counter()
        with _no_environment_report():
            res = lm_eval.simple_evaluate(
                model=lm, tasks=[spec.task], num_fewshot=None, limit=limit, task_manager=task_manager,
                apply_chat_template=spec.chat_template, confirm_run_unsafe_code=allow_code_execution,
                log_samples=False, random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
                fewshot_random_seed=seed, bootstrap_iters=0,
            )
        metrics = res["results"].get(spec.task, {})
        if spec.metric not in metrics:
            raise RuntimeError(f"{spec.task}: metric {spec.metric!r} not in lm-eval results {sorted(metrics)}")
        value = float(metrics[spec.metric])
        out[name] = {
            "task": spec.task, "metric": spec.metric, "value": 100.0 * value, "n": _n_samples(res, spec.task),
            "num_fewshot": spec.num_fewshot, "chat_template": spec.chat_template, "paper_base": spec.paper_base,
            "stand_in_for": list(spec.stand_in_for) or None, "note": spec.note or None,
            "in_average": not spec.extra,
            "all_metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and "stderr" not in k},
            "wall_s": round(time.perf_counter() - began, 1),
        }
    if any(spec.unsafe for spec in specs.values()):
        extra["code_sandbox"] = protections()
    averaged = [k for k in out if not specs[k].extra]
    values = [out[k]["value"] for k in averaged]
    return {
        "suite": suite, "label": "STAND-IN tasks written for this repo, not the paper's benchmarks" if suite == "embedded"
        else "paper benchmarks (lm-evaluation-harness)",
        "benchmarks": out, "average": sum(values) / len(values) if values else None, "average_of": averaged,
        "skipped": skipped,
        "limit": limit, "lm_eval_version": _lm_eval_version(), "backend": backend, "wall_s": round(time.time() - t0, 1),
        "loglikelihood": "lm_eval" if backend == "vllm" else loglikelihood,
        "tasks_fingerprint": suite_fingerprint(suite),
        **extra,
    }


@contextmanager
def _no_environment_report():
    """``lm_eval.simple_evaluate`` without its closing environment report: ``add_env_info`` (torch's
    ``collect_env``, which runs pip and git in ~10 subprocesses, about 1 s a call on 2 cores: 70 % of the suite's
    time on the tiny model, 5 s of every ``mini`` evaluation) and ``get_git_commit_hash`` (git in a subprocess).
    Nothing of them reaches our result; the run's manifest records the versions and the commit. The two lm-eval
    functions this module replaces, during its own calls only, checked against lm-eval 0.4.13."""
    import lm_eval.evaluator as evaluator

    originals = {"add_env_info": evaluator.add_env_info, "get_git_commit_hash": evaluator.get_git_commit_hash}
    evaluator.add_env_info = lambda storage: None
    evaluator.get_git_commit_hash = lambda: None
    try:
        yield
    finally:
        for name, function in originals.items():
            setattr(evaluator, name, function)


def _lm_eval_version() -> str:
    from importlib.metadata import version

    return version("lm_eval")


def _make_lm(model, tokenizer, backend: str, batch_size, max_length, loglikelihood: str):
    """lm-eval's model object for ``backend``; for ``hf``, :class:`SharedContextHFLM` or lm-eval's ``HFLM`` by
    ``loglikelihood``."""
    if loglikelihood not in LOGLIKELIHOOD:
        raise ValueError(f"unknown loglikelihood path {loglikelihood!r}; expected one of {LOGLIKELIHOOD}")
    if backend == "vllm":
        if not isinstance(model, str):
            raise ValueError("the vLLM backend of lm-eval needs a model path or id")
        from lm_eval.models.vllm_causallms import VLLM

        return VLLM(pretrained=model, batch_size="auto", max_length=max_length)
    from lm_eval.models.huggingface import HFLM

    from eval.shared_context_lm import SharedContextHFLM

    lm_class = SharedContextHFLM if loglikelihood == "shared_context" else HFLM
    if isinstance(model, str):
        return lm_class(pretrained=model, batch_size=batch_size, max_length=max_length)
    kwargs: dict[str, Any] = {}
    if max_length:
        kwargs["max_length"] = max_length
    return lm_class(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, **kwargs)
