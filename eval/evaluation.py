"""Evaluation as a function: ``evaluate(model, task, ...) -> dict``, the content of ``eval.json``.

    from eval import evaluate

    result = evaluate("results/table5/embedded_tool/sdft/seed0", split="test", prior_suite="embedded",
                      output_dir="results/table5/embedded_tool/sdft/seed0")
    result["scores"]  # every score, each with its source (task variant or prior benchmark), metric, value, n

``python -m eval.run`` is this function behind a command line.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from data_prep.registry import get_task, load_task
from eval.judge import judge_for
from sdft.plugins import PluginError, as_list, import_plugins, merge
from sdft.run_io import InvalidJSONFile, read_json, read_yaml, write_text_atomic

PRESET_EVAL: dict[str, dict[str, Any]] = {
    # prior_batch_size: lm-eval's batch for the prior suite (32: the embedded suite's generation tasks run ~2x
    # faster on a CPU than at 8, same scores; eval/README.md)
    "smoke": dict(n=8, max_new_tokens=32, prior_limit=2, batch_size=8, prior_batch_size=32),
    # mini: 64 new tokens, the mini training's max completion length (the embedded answers take 10-40 tokens)
    "mini": dict(n=None, max_new_tokens=64, prior_limit=None, batch_size=8, prior_batch_size=32),
    "paper": dict(n=None, max_new_tokens=2048, prior_limit=None, batch_size=32, prior_batch_size=32),
}
VARIANTS = ("student", "teacher", "rag")


class EvaluationError(ValueError):
    """The arguments of an evaluation do not fit together (no task, a run directory without its model, ...)."""


def resolve_model_arg(model: str | Path) -> tuple[str, dict | None, Path | None]:
    """(model path or name, run config or None, run dir or None)."""
    path = Path(model)
    if (path / "config.yaml").is_file() and (path / "model").is_dir():
        return str(path / "model"), read_yaml(path / "config.yaml") or {}, path
    if (path / "config.yaml").is_file() and not (path / "model").is_dir():
        raise EvaluationError(f"{path} is a run directory without model/ (trained with save_model=false?)")
    return str(model), None, None


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name.strip("/"))[-80:]


def default_output_dir(model: str | Path, task: str | None = None) -> Path:
    """Where ``python -m eval.run`` writes without ``--output``: the run directory, else
    ``results/eval/<task>/<model>``."""
    _, _, run_dir = resolve_model_arg(model)
    return run_dir or Path("results") / "eval" / (task or "prior") / _slug(str(model))


def evaluate(model, task: str | None = None, *, tokenizer=None, split: str = "test", seed: int = 0,
             n: int | None = None, data_dir: str | None = None, preset: str | None = None,
             variant: str = "student", template: str | None = None, max_new_tokens: int | None = None,
             batch_size: int | None = None, passk: int | None = None, kl_base: str | None = None,
             prior_suite: str = "none", prior_benchmarks: list[str] | None = None, limit: float | None = None,
             allow_code_execution: bool = False, ifeval_punkt_fallback: bool = False,
             judge_model: str | None = None, judge=None, judge_timeout: float | None = None,
             judge_deadline: float | None = None, backend: str = "auto", output_dir: str | Path | None = None,
             skip_task: bool = False, include: list[str] | None = None) -> dict[str, Any]:
    """Evaluate ``model`` on ``task`` (and a prior-capability suite); return the content of ``eval.json``.

    ``model``: a run directory (``config.yaml`` + ``model/``: its model is evaluated; task, preset and teacher
    template default to the run's), a hub id, a local path, ``embedded:NAME``, a LoRA adapter folder (a ``use_peft``
    run's ``model/``: its merged copy ``model_merged/`` when there is one, else the base it names with the adapter
    merged in on loading, transformers only), or a loaded causal LM with its
    ``tokenizer`` (or a ``(model, tokenizer)`` pair). ``variant``: ``student`` (the plain prompt), ``teacher``
    (the demonstration-conditioned prompt with ``template``) or ``rag`` (oracle RAG). ``preset`` (``smoke`` |
    ``mini`` | ``paper``; default the run's, else ``mini``) sets ``n``, ``max_new_tokens``, ``batch_size`` (the
    prior suite's too when given; else the preset's ``prior_batch_size``) and the lm-eval ``limit`` not given. ``passk``: samples per prompt for pass@k; ``kl_base``: also estimate KL(model ||
    this model) on the task prompts. ``prior_suite``: ``paper`` | ``embedded`` | ``none``, restricted to
    ``prior_benchmarks``. Judge-scored tasks use ``judge`` (an object like ``eval.judge.LLMJudge``), else an LLMJudge
    of ``judge_model`` when one is named, else the task's ``local_judge`` if it has one (``embedded_knowledge``:
    ``data_prep.fact_judge.FactJudge``, offline), else an LLMJudge of the default model. ``skip_task``: only the prior
    suite. ``include``: plugins (``sdft.plugins``: module names, ``.py`` files, directories) imported before the
    task is looked up, with those a run directory recorded (its ``include``) and those of ``$SDFT_INCLUDE``.

    The result holds ``evaluations.<variant>`` (``scores``, ``settings``, ``n``), ``prior.<suite>``, run facts and
    ``scores`` (one flat list of every score with its ``source``). With ``output_dir``, writes
    ``<output_dir>/eval.json`` (keeping the evaluations of other variants and suites already in it) and
    ``<output_dir>/predictions_<variant>.jsonl`` (one line per example); without, writes nothing.
    Both are written atomically (a temporary file, then ``os.replace``). Raises :class:`eval.prior.PriorSuiteError`
    when the prior suite cannot run here (before any generation when that can be known), :class:`EvaluationError`
    when the arguments do not fit together, the task is unknown, a plugin cannot be imported or the existing
    ``eval.json`` is not valid JSON (naming the file).
    """
    if variant not in VARIANTS:
        raise EvaluationError(f"unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    if isinstance(model, tuple):
        model, tokenizer = model
    loaded = not isinstance(model, (str, Path))
    if loaded and tokenizer is None:
        raise EvaluationError("a loaded model needs its tokenizer (tokenizer=...)")
    if loaded:
        model_ref, run_cfg = getattr(model, "name_or_path", None) or type(model).__name__, {}
    else:
        model_ref, run_cfg, _ = resolve_model_arg(model)
        run_cfg = run_cfg or {}
    model_label = model_ref if loaded else str(model)
    task = task or run_cfg.get("task")
    if not task and not skip_task:
        raise EvaluationError("a task is required (no run directory to take it from)")
    _import_plugins_and_check(task if not skip_task else None, include, run_cfg.get("include"))
    preset = preset or (run_cfg.get("preset") if run_cfg.get("preset") in PRESET_EVAL else "mini")
    if preset not in PRESET_EVAL:
        raise EvaluationError(f"unknown preset {preset!r}; expected one of {sorted(PRESET_EVAL)}")
    pv = PRESET_EVAL[preset]
    n = n if n is not None else pv["n"]
    max_new = max_new_tokens or pv["max_new_tokens"]
    prior_batch_size = batch_size or pv["prior_batch_size"]
    batch_size = batch_size or pv["batch_size"]
    limit = limit if limit is not None else pv["prior_limit"]
    if limit is not None and limit >= 1:
        limit = int(limit)
    template = template or run_cfg.get("teacher_template") or "paper"
    out_dir = Path(output_dir) if output_dir is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    eval_path = out_dir / "eval.json" if out_dir is not None else None
    # read before any work: an unreadable eval.json to merge into fails the evaluation at once
    result: dict[str, Any] = _read_existing(eval_path) if eval_path and eval_path.exists() else {}

    from eval.prior import preflight

    if prior_suite != "none":  # fail fast, before any generation, when the suite cannot run here
        preflight(prior_suite, prior_benchmarks, ifeval_punkt_fallback, allow_code_execution)

    from eval.generation import vllm_available
    from sdft.adapters import is_adapter_dir, merged_dir
    from sdft.models import is_embedded, load_model_and_tokenizer, load_tokenizer, resolve_model_path

    adapter = not loaded and is_adapter_dir(model_ref)
    if adapter and (merged_dir(model_ref) / "config.json").is_file():  # a LoRA run's merged copy (merge=true)
        model_ref, adapter = str(merged_dir(model_ref)), False
    if backend == "auto":
        backend = "vllm" if not loaded and vllm_available() and not is_embedded(model_ref) and not adapter else "hf"
    if adapter and backend == "vllm":
        raise EvaluationError(f"{model_ref} is a LoRA adapter and vLLM loads full models: evaluate with --backend hf "
                              f"(the base with the adapter merged in), or train with merge=true (writes "
                              f"{merged_dir(model_ref)})")
    if loaded:
        if backend == "vllm":
            raise EvaluationError("the vllm backend takes a model reference (a path or id), not a loaded model")
        path = model_ref
    else:
        path = resolve_model_path(model_ref)
        if backend == "vllm":
            model, tokenizer = path, load_tokenizer(model_ref)
        else:
            model, tokenizer = load_model_and_tokenizer(model_ref)

    result.setdefault("evaluations", {})
    result.update({"model": model_label, "model_path": path, "run_config": run_cfg or None, "preset": preset})
    t0 = time.time()
    if not skip_task:
        from eval.task_eval import evaluate_task, write_predictions

        if judge is None and get_task(task).judge is not None:  # the task's local judge, unless a model is named
            judge = judge_for(task, judge_model, timeout=judge_timeout, deadline=judge_deadline)
        records = load_task(task, split, seed=seed, n=n, data_dir=data_dir)
        ev = evaluate_task(model, tokenizer, records, task, variant=variant, template=template,
                           max_new_tokens=max_new, batch_size=batch_size, passk=passk, seed=seed,
                           judge=judge, backend=backend)
        preds = ev.pop("predictions")
        pred_name = None
        if out_dir is not None:
            pred_name = f"predictions_{variant}.jsonl"
            write_predictions(out_dir / pred_name, preds)
        ev["settings"].update({"model": model_label, "split": split, "seed": seed, "n_requested": n,
                               "predictions": pred_name})
        if kl_base:
            from eval.kl import kl_to_base
            from sdft.models import load_model

            hf_model = model if not isinstance(model, str) else load_model(model_ref)
            base = load_model(kl_base)
            kl = kl_to_base(hf_model, base, tokenizer, records, context="teacher" if variant == "teacher" else "student",
                            template=template, max_new_tokens=max_new, batch_size=batch_size, seed=seed)
            ev["scores"].append({"metric": "kl_to_base_seq", "value": kl["kl_seq"], "unit": "nats", "n": kl["n_samples"],
                                 "base": kl_base, **{k: v for k, v in kl.items() if k not in ("kl_seq",)}})
        ev["wall_s"] = round(time.time() - t0, 1)
        result["evaluations"][variant] = ev
    if prior_suite != "none":
        from eval.generation import release_vllm
        from eval.prior import evaluate_prior

        release_vllm()
        prior = evaluate_prior(model, tokenizer, prior_suite, limit, allow_code_execution=allow_code_execution,
                               batch_size=prior_batch_size, backend=backend, punkt_fallback=ifeval_punkt_fallback,
                               benchmarks=prior_benchmarks, seed=seed)
        result.setdefault("prior", {})[prior_suite] = prior
    result["scores"] = flatten_scores(result)
    if eval_path is not None:
        write_eval_json(eval_path, result)
    return result


def _import_plugins_and_check(task: str | None, include: list[str] | None, recorded: Any) -> None:
    """Import the plugins given and those the run recorded; an unknown task is an :class:`EvaluationError` naming
    it (and ``--include``), before any model is loaded."""
    try:
        import_plugins(merge(as_list(include), as_list(recorded, "the run's config.yaml: include")))
        if task is not None:
            get_task(task)
    except (PluginError, KeyError) as err:
        raise EvaluationError(str(err)) from err


def _read_existing(eval_path: Path) -> dict[str, Any]:
    """The eval.json that new evaluations are merged into; :class:`EvaluationError` naming it when unreadable."""
    try:
        return read_json(eval_path)
    except InvalidJSONFile as err:
        raise EvaluationError(str(err)) from None


def write_eval_json(path: str | Path, result: dict) -> None:
    """Write ``result`` to ``path`` atomically (a reader never sees a truncated file)."""
    write_text_atomic(path, json.dumps(result, indent=2, default=str))


def flatten_scores(result: dict) -> list[dict]:
    """One flat list of every score in eval.json, each naming its source (task variant or prior benchmark)."""
    flat = []
    for variant, ev in result.get("evaluations", {}).items():
        for s in ev["scores"]:
            flat.append({"source": f"{ev['task']}/{variant}", **s,
                         "settings": {k: ev["settings"].get(k) for k in ("decoding", "template", "model", "task")}})
    for suite, prior in result.get("prior", {}).items():
        for name, b in prior["benchmarks"].items():
            flat.append({"source": f"prior:{suite}:{name}", "metric": b["metric"], "value": b["value"], "unit": "percent",
                         "n": b["n"], "settings": {"task": b["task"], "chat_template": b["chat_template"],
                                                   "num_fewshot": b["num_fewshot"], "limit": prior["limit"]}})
        if prior.get("average") is not None:
            flat.append({"source": f"prior:{suite}", "metric": "average", "value": prior["average"], "unit": "percent",
                         "n": len(prior.get("average_of", prior["benchmarks"])),
                         "settings": {"skipped": sorted(prior["skipped"]), "average_of": prior.get("average_of")}})
    return flat
