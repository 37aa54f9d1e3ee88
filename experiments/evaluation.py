"""Glue between the experiment grid and ``eval``: evaluate one run of a grid with :func:`eval.evaluate`.

Per run directory (``results/<experiment>/<task>/<method>/<run_id>/``):
  * ``eval.json`` -- the test split (student prompt, greedy) and the prior-capability suite,
  * ``val/eval.json`` -- the validation split, when the run is one point of a sweep (for model selection).
The prior suite of a base model is computed once per (model, suite, limit) and reused for every task
(``<results>/_prior_cache/``): it does not depend on the task. Collecting the files into tables:
:mod:`experiments.reporting`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from data_prep.registry import get_task
from eval import evaluate
from eval.config import build_eval_config
from eval.evaluation import _read_existing, flatten_scores, run_config_of, write_eval_json
from eval.prior import suite_fingerprint
from experiments.grid import RunSpec, trains
from sdft.config_layers import load_preset
from sdft.plugins import as_list, import_plugins
from sdft.run_io import read_json


def prior_suite_for(preset: str) -> str:
    """The prior-capability suite a section's runs are evaluated on (``experiments.prior_suite`` of the preset)."""
    return load_preset(preset)["experiments"]["prior_suite"]


def _results_root(spec: RunSpec) -> Path:
    return Path(spec.run_dir).parents[2]


def evaluate_model(model, task: str | None = None, output_dir: str | Path | None = None, **values: Any) -> dict:
    """:func:`eval.evaluate` of ``model`` on the task registered as ``task`` (default: the run directory's task),
    with the :class:`~eval.config.EvalConfig` of ``values`` (``eval.config.build_eval_config``: the preset's
    ``eval:`` block below them, the run's own values when ``model`` is a run directory, whose recorded plugins are
    imported first)."""
    run_config = run_config_of(model) or {}
    import_plugins(as_list(run_config.get("include"), "the run's config.yaml: include"))
    cfg = build_eval_config(values, run_config=run_config)
    task = task or run_config.get("task")
    return evaluate(model, get_task(task) if task and not cfg.skip_task else None, cfg, output_dir=output_dir)


def evaluate_run(spec: RunSpec, cfg, model: str, with_validation: bool = False, prior: bool = True,
                 also_tasks: dict[str, str] | None = None) -> Path:
    """Write ``eval.json`` for one run: test-split accuracy and the prior suite (and ``val/`` for sweeps).

    The model is prompted as its method says (``Method.eval_variant``: the query, or the source text and the query
    for Oracle RAG). ``spec.eval_options``: ``EvalConfig`` values of every evaluation of the run (e.g.
    ``allow_code_execution``); they win over the run's own values, as on a command line. ``prior=False``: no
    prior-capability suite (a section that reports none, e.g. Table 1).
    ``also_tasks``: ``{folder: task}``, other test sets of the same model, each written to
    ``<run_dir>/<folder>/eval.json`` before the run's own ``eval.json`` (which marks the run done), e.g. the paper
    preset's indirect knowledge questions, a task of their own (``{"ood": "knowledge_ood"}``).
    Under the checkpoint protocol (a run with ``selection.json``, ``sdft.selection``) everything above is of the
    checkpoint with the best validation score; the final model's test split goes to ``<run_dir>/final/eval.json``
    and both are summed up in ``eval.json``'s ``checkpoint`` block.
    """
    run_dir = Path(spec.run_dir)
    selection = reported_checkpoint(run_dir, model) if trains(spec.method) else None
    if selection is not None:
        model = selection["model"]
    suite = prior_suite_for(spec.preset) if prior else "none"
    common = {"preset": spec.preset, "seed": spec.seed, "variant": cfg.method_spec.eval_variant,
              "template": getattr(cfg, "teacher_template", None), "data_dir": getattr(cfg, "data_dir", None)}

    def run(split: str, output_dir: Path, prior_suite: str, which: str | None = None, task=cfg.task_spec) -> dict:
        evaluated = which or model
        eval_cfg = build_eval_config({**common, "split": split, "prior_suite": prior_suite, **spec.eval_options},
                                     run_config=run_config_of(evaluated))
        return evaluate(evaluated, task, eval_cfg, output_dir=output_dir)

    if with_validation:
        run("val", run_dir / "val", "none")
    if selection is not None and selection["final_model"] is not None:  # the final model's test score, beside
        run("test", run_dir / FINAL_DIR, "none", selection["final_model"])
    for folder, other in (also_tasks or {}).items():
        run("test", run_dir / folder, "none", task=get_task(other))
    cache = None
    if prior and not trains(spec.method):  # an untrained model's prior suite does not depend on the task
        # the suite's items are part of the key: a cache made on other items is never merged into new results
        key = hashlib.sha256(json.dumps([model, suite, suite_fingerprint(suite), spec.preset, spec.seed,
                                         spec.eval_options], sort_keys=True).encode()).hexdigest()[:16]
        cache = _results_root(spec) / "_prior_cache" / f"{key}.json"
    if cache is not None and cache.exists():
        result = run("test", run_dir, "none")
        _merge_prior(run_dir / "eval.json", result, json.loads(cache.read_text()), suite)
    else:
        run("test", run_dir, suite)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            partial = cache.with_name(f"{cache.name}.{os.getpid()}.partial")  # runs in parallel read whole files
            shutil.copyfile(run_dir / "eval.json", partial)
            os.replace(partial, cache)
    if selection is not None:
        _write_checkpoint_block(run_dir, selection)
    return run_dir / "eval.json"


FINAL_DIR = "final"  # <run_dir>/final/eval.json: the final model's test split, when another checkpoint is reported


def reported_checkpoint(run_dir: Path, final_model: str) -> dict | None:
    """Under the checkpoint protocol (``sdft.selection``; a run with ``selection.json``): the model to report --
    ``best_model/`` when the chosen step is not the last, else the final model -- and the final model to evaluate
    beside it (None when it is the reported one). None for a run without the protocol."""
    from sdft.selection import read_selection

    selection = read_selection(run_dir)
    if selection is None:
        return None
    chosen_is_final = selection["chosen_step"] == selection["final_step"]
    best = run_dir / selection.get("model_dir", "best_model")
    if not chosen_is_final and not best.is_dir():
        raise RuntimeError(f"{run_dir / 'selection.json'}: chose step {selection['chosen_step']} but {best} is missing")
    return {**selection, "model": final_model if chosen_is_final else str(best),
            "final_model": None if chosen_is_final else final_model}


def _write_checkpoint_block(run_dir: Path, selection: dict) -> None:
    """Add the protocol's facts to ``<run_dir>/eval.json``: chosen and final step, their validation scores, and the
    final model's test scores (``experiments.reporting`` reads ``selection.json`` where a run lacks them)."""
    path = run_dir / "eval.json"
    result = _read_existing(path)
    final_eval = run_dir / FINAL_DIR / "eval.json"
    final_scores = None
    if selection["final_model"] is not None:
        final_scores = {v: {"scores": e["scores"], "answers": e.get("answers")}
                        for v, e in read_json(final_eval).get("evaluations", {}).items()}
    result["checkpoint"] = {
        "selection": "best_val", "criterion": selection.get("criterion"), "chosen_step": selection["chosen_step"],
        "chosen_val": selection.get("chosen_val"), "final_step": selection["final_step"],
        "final_val": selection.get("final_val"), "steps": selection.get("steps"),
        "final_test": final_scores if final_scores is not None else "same as the reported checkpoint",
    }
    write_eval_json(path, result)


def _merge_prior(eval_path: Path, result: dict, cached: dict, suite: str) -> None:
    result.setdefault("prior", {})[suite] = {**cached["prior"][suite], "reused_from_cache": True}
    result["scores"] = flatten_scores(result)
    write_eval_json(eval_path, result)
