"""Evaluation as a function: ``evaluate(model, task, cfg) -> dict``, the content of ``eval.json``.

    from data_prep.registry import get_task
    from eval import evaluate
    from eval.config import build_eval_config
    from eval.evaluation import run_config_of

    run = "results/table5/embedded_tool/sdft/seed0"
    cfg = build_eval_config({"prior_suite": "embedded"}, run_config=run_config_of(run))  # the run's preset
    result = evaluate(run, get_task("embedded_tool"), cfg, output_dir=run)
    result["scores"]  # every score, each with its source (task variant or prior benchmark), metric, value, n

``python -m eval.run`` is this function behind a command line.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from data_prep.task import Task, load_records
from eval.config import VARIANTS, EvalConfig
from eval.judge import judge_for
from sdft.run_io import InvalidJSONFile, read_json, read_yaml, write_text_atomic


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


def evaluate(model, task: Task | None, cfg: EvalConfig, *, tokenizer=None, judge=None,
             output_dir: str | Path | None = None) -> dict[str, Any]:
    """Evaluate ``model`` on ``task`` (and the prior-capability suite ``cfg.prior_suite``); return the content of
    ``eval.json``.

    ``model``: a run directory (``config.yaml`` + ``model/``: its model is evaluated), a hub id, a local path,
    ``embedded:NAME``, a LoRA adapter folder (a ``use_peft`` run's ``model/``: its merged copy ``model_merged/`` when
    there is one, else the base it names with the adapter merged in on loading, transformers only), or a loaded
    causal LM with its ``tokenizer`` (or a ``(model, tokenizer)`` pair). ``task``: the
    :class:`~data_prep.task.Task` (``data_prep.registry.get_task``); ``None`` with ``cfg.skip_task``. ``cfg``: every
    option (:func:`eval.config.build_eval_config` resolves it from the preset, the evaluated run and the values
    given). Judge-scored tasks use ``judge`` (an object like ``eval.judge.LLMJudge``), else
    :func:`eval.judge.judge_for` the task with ``cfg.judge_model``: the task's ``local_judge`` when no judge model is
    named and it has one (``embedded_knowledge``: ``data_prep.fact_judge.FactJudge``, offline), else an LLMJudge.

    The result holds ``evaluations.<variant>`` (``scores``, ``settings``, ``n``), ``prior.<suite>``, run facts and
    ``scores`` (one flat list of every score with its ``source``). With ``output_dir``, writes
    ``<output_dir>/eval.json`` (keeping the evaluations of other variants and suites already in it) and
    ``<output_dir>/predictions_<variant>.jsonl`` (one line per example); without, writes nothing.
    Both are written atomically (a temporary file, then ``os.replace``). Raises :class:`eval.prior.PriorSuiteError`
    when the prior suite cannot run here (before any generation when that can be known), :class:`EvaluationError`
    when the arguments do not fit together or the existing ``eval.json`` is not valid JSON (naming the file).
    """
    if cfg.variant not in VARIANTS:
        raise EvaluationError(f"unknown variant {cfg.variant!r}; expected one of {', '.join(VARIANTS)}")
    if task is None and not cfg.skip_task:
        raise EvaluationError("a task is required (no run directory to take it from)")
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
    variant, template, n, max_new, batch_size = cfg.variant, cfg.template, cfg.n, cfg.max_new_tokens, cfg.batch_size
    limit = int(cfg.limit) if cfg.limit is not None and cfg.limit >= 1 else cfg.limit
    out_dir = Path(output_dir) if output_dir is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    eval_path = out_dir / "eval.json" if out_dir is not None else None
    # read before any work: an unreadable eval.json to merge into fails the evaluation at once
    result: dict[str, Any] = _read_existing(eval_path) if eval_path and eval_path.exists() else {}

    from eval.prior import preflight

    if cfg.prior_suite != "none":  # fail fast, before any generation, when the suite cannot run here
        preflight(cfg.prior_suite, cfg.prior_benchmarks, cfg.ifeval_punkt_fallback, cfg.allow_code_execution)

    from eval.generation import vllm_available
    from sdft.adapters import is_adapter_dir, merged_dir
    from sdft.models import is_embedded, load_model_and_tokenizer, load_tokenizer, resolve_model_path

    backend = cfg.backend
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
    result.update({"model": model_label, "model_path": path, "run_config": run_cfg or None, "preset": cfg.preset})
    t0 = time.time()
    if not cfg.skip_task:
        from eval.task_eval import evaluate_task, write_predictions

        if judge is None and task.judge is not None:  # the task's local judge, unless a judge model is named
            judge = judge_for(task, cfg.judge_model, timeout=cfg.judge_timeout, deadline=cfg.judge_deadline)
        records = load_records(task, cfg.split, seed=cfg.seed, n=n, data_dir=cfg.data_dir)
        ev = evaluate_task(model, tokenizer, records, task, variant=variant, template=template,
                           max_new_tokens=max_new, batch_size=batch_size, passk=cfg.passk, seed=cfg.seed,
                           judge=judge, backend=backend)
        preds = ev.pop("predictions")
        pred_name = None
        if out_dir is not None:
            pred_name = f"predictions_{variant}.jsonl"
            write_predictions(out_dir / pred_name, preds)
        ev["settings"].update({"model": model_label, "split": cfg.split, "seed": cfg.seed, "n_requested": n,
                               "predictions": pred_name})
        if cfg.kl_base:
            from eval.kl import kl_to_base
            from sdft.models import load_model

            hf_model = model if not isinstance(model, str) else load_model(model_ref)
            base = load_model(cfg.kl_base)
            kl = kl_to_base(hf_model, base, tokenizer, records, context="teacher" if variant == "teacher" else "student",
                            template=template, max_new_tokens=max_new, batch_size=batch_size, seed=cfg.seed)
            ev["scores"].append({"metric": "kl_to_base_seq", "value": kl["kl_seq"], "unit": "nats", "n": kl["n_samples"],
                                 "base": cfg.kl_base, **{k: v for k, v in kl.items() if k not in ("kl_seq",)}})
        ev["wall_s"] = round(time.time() - t0, 1)
        result["evaluations"][variant] = ev
    if cfg.prior_suite != "none":
        from eval.generation import release_vllm
        from eval.prior import evaluate_prior

        release_vllm()
        prior = evaluate_prior(model, tokenizer, cfg.prior_suite, limit, allow_code_execution=cfg.allow_code_execution,
                               batch_size=cfg.prior_batch_size or batch_size, backend=backend,
                               punkt_fallback=cfg.ifeval_punkt_fallback, benchmarks=cfg.prior_benchmarks,
                               seed=cfg.seed, loglikelihood=cfg.prior_loglikelihood)
        result.setdefault("prior", {})[cfg.prior_suite] = prior
    result["scores"] = flatten_scores(result)
    if eval_path is not None:
        write_eval_json(eval_path, result)
    return result


def run_config_of(model) -> dict | None:
    """The ``config.yaml`` of ``model`` when it is a run directory (what :func:`eval.config.build_eval_config` takes
    the preset and the teacher template from); else None."""
    return None if not isinstance(model, (str, Path)) else resolve_model_arg(model)[1]


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
