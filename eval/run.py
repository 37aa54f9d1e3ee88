"""Evaluate a run directory or a model on a task (and optionally a prior-capability suite).

    python -m eval.run --model <run dir | HF id | path | embedded:NAME> --task <name> [--split test]
        [--prior-suite paper|embedded|none] [--preset smoke|mini|paper] [--n N] [--teacher] [--rag]
        [--passk N] [--kl-base MODEL] [--output DIR]

A run directory (from ``python -m sdft.train``) holds ``config.yaml`` and ``model/``: the model in ``model/``
is evaluated, the task and teacher template default to the run's, and results go into the run directory.

Writes ``<output>/eval.json`` (every score with its metric name, n and settings; evaluations of other variants
already in the file are kept) and ``<output>/predictions_<variant>.jsonl`` (one line per example).
Exit status 2 with a one-line message when a prior suite cannot run here (e.g. no hub for ``paper``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml

PRESET_EVAL: dict[str, dict[str, Any]] = {
    "smoke": dict(n=8, max_new_tokens=32, prior_limit=2, batch_size=8),
    # mini: 64 new tokens, the mini training's max completion length (the embedded answers take 10-40 tokens)
    "mini": dict(n=None, max_new_tokens=64, prior_limit=None, batch_size=8),
    "paper": dict(n=None, max_new_tokens=2048, prior_limit=None, batch_size=32),
}


def resolve_model_arg(model: str) -> tuple[str, dict | None, Path | None]:
    """(model path or name, run config or None, run dir or None)."""
    path = Path(model)
    if (path / "config.yaml").is_file() and (path / "model").is_dir():
        return str(path / "model"), yaml.safe_load((path / "config.yaml").read_text()) or {}, path
    if (path / "config.yaml").is_file() and not (path / "model").is_dir():
        raise SystemExit(f"error: {path} is a run directory without model/ (trained with save_model=false?)")
    return model, None, None


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name.strip("/"))[-80:]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eval.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--task", default=None, help="task name (default: the run's task)")
    p.add_argument("--split", default="test")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--preset", choices=sorted(PRESET_EVAL), default=None, help="default: the run's preset, else mini")
    p.add_argument("--n", type=int, default=None, help="number of records (default: the preset's)")
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--teacher", action="store_true", help="evaluate the demonstration-conditioned teacher prompt")
    p.add_argument("--template", default=None, help="teacher template (default: the run's, else 'paper')")
    p.add_argument("--rag", action="store_true", help="oracle RAG: source text + question in the prompt")
    p.add_argument("--passk", type=int, default=None, help="samples per prompt for pass@k (temperature 1.0, top-p 0.95)")
    p.add_argument("--kl-base", default=None, help="also estimate KL(model || this base model) on the task prompts")
    p.add_argument("--prior-suite", choices=["paper", "embedded", "none"], default="none")
    p.add_argument("--prior-benchmarks", nargs="*", default=None, help="subset of the suite's benchmarks")
    p.add_argument("--limit", type=float, default=None, help="lm-eval limit per benchmark (default: the preset's)")
    p.add_argument("--allow-code-execution", action="store_true",
                   help="run humaneval / the code stand-in (executes model-written code)")
    p.add_argument("--ifeval-punkt-fallback", action="store_true",
                   help="offline: use a parameter-free NLTK Punkt model for ifeval")
    p.add_argument("--judge-model", default=None, help="LLM judge model (default gpt-5-mini)")
    p.add_argument("--backend", choices=["auto", "hf", "vllm"], default="auto")
    p.add_argument("--output", default=None)
    p.add_argument("--skip-task", action="store_true", help="only the prior suite")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    model_ref, run_cfg, run_dir = resolve_model_arg(args.model)
    run_cfg = run_cfg or {}
    task = args.task or run_cfg.get("task")
    if not task and not args.skip_task:
        raise SystemExit("error: --task is required (no run directory to take it from)")
    preset = args.preset or (run_cfg.get("preset") if run_cfg.get("preset") in PRESET_EVAL else "mini")
    pv = PRESET_EVAL[preset]
    n = args.n if args.n is not None else pv["n"]
    max_new = args.max_new_tokens or pv["max_new_tokens"]
    batch_size = args.batch_size or pv["batch_size"]
    limit = args.limit if args.limit is not None else pv["prior_limit"]
    if limit is not None and limit >= 1:
        limit = int(limit)
    template = args.template or run_cfg.get("teacher_template") or "paper"
    variant = "rag" if args.rag else ("teacher" if args.teacher else "student")
    if args.rag and args.teacher:
        raise SystemExit("error: --rag and --teacher are different prompts; pick one")
    out_dir = Path(args.output) if args.output else (run_dir or Path("results") / "eval" / (task or "prior") / _slug(args.model))
    out_dir.mkdir(parents=True, exist_ok=True)

    from eval.prior import PriorSuiteError, preflight

    if args.prior_suite != "none":  # fail fast, before any generation, when the suite cannot run here
        try:
            preflight(args.prior_suite, args.prior_benchmarks, args.ifeval_punkt_fallback, args.allow_code_execution)
        except PriorSuiteError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2

    from eval.generation import vllm_available
    from sdft.models import is_embedded, load_model_and_tokenizer, load_tokenizer, resolve_model_path

    backend = args.backend
    if backend == "auto":
        backend = "vllm" if vllm_available() and not is_embedded(model_ref) else "hf"
    path = resolve_model_path(model_ref)
    if backend == "vllm":
        model, tokenizer = path, load_tokenizer(model_ref)
    else:
        model, tokenizer = load_model_and_tokenizer(model_ref)

    eval_path = out_dir / "eval.json"
    result: dict[str, Any] = json.loads(eval_path.read_text()) if eval_path.exists() else {}
    result.setdefault("evaluations", {})
    result.update({"model": args.model, "model_path": path, "run_config": run_cfg or None, "preset": preset})
    t0 = time.time()
    if not args.skip_task:
        from data_prep.tasks import load_task

        judge = None
        from eval.scorers import needs_judge

        if needs_judge(task):
            from eval.judge import DEFAULT_JUDGE_MODEL, LLMJudge

            judge = LLMJudge(model=args.judge_model or DEFAULT_JUDGE_MODEL)
        from eval.task_eval import evaluate_task, write_predictions

        records = load_task(task, args.split, seed=args.seed, n=n, data_dir=args.data_dir)
        ev = evaluate_task(model, tokenizer, records, task, variant=variant, template=template,
                           max_new_tokens=max_new, batch_size=batch_size, passk=args.passk, seed=args.seed,
                           judge=judge, backend=backend)
        preds = ev.pop("predictions")
        pred_path = out_dir / f"predictions_{variant}.jsonl"
        write_predictions(pred_path, preds)
        ev["settings"].update({"model": args.model, "split": args.split, "seed": args.seed, "n_requested": n,
                               "predictions": pred_path.name})
        if args.kl_base:
            from eval.kl import kl_to_base
            from sdft.models import load_model

            hf_model = model if not isinstance(model, str) else load_model(model_ref)
            base = load_model(args.kl_base)
            kl = kl_to_base(hf_model, base, tokenizer, records, context="teacher" if variant == "teacher" else "student",
                            template=template, max_new_tokens=max_new, batch_size=batch_size, seed=args.seed)
            ev["scores"].append({"metric": "kl_to_base_seq", "value": kl["kl_seq"], "unit": "nats", "n": kl["n_samples"],
                                 "base": args.kl_base, **{k: v for k, v in kl.items() if k not in ("kl_seq",)}})
        ev["wall_s"] = round(time.time() - t0, 1)
        result["evaluations"][variant] = ev
    if args.prior_suite != "none":
        from eval.generation import release_vllm
        from eval.prior import evaluate_prior

        release_vllm()
        try:
            prior = evaluate_prior(model, tokenizer, args.prior_suite, limit, allow_code_execution=args.allow_code_execution,
                                   batch_size=batch_size, backend=backend, punkt_fallback=args.ifeval_punkt_fallback,
                                   benchmarks=args.prior_benchmarks, seed=args.seed)
        except PriorSuiteError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        result.setdefault("prior", {})[args.prior_suite] = prior
    result["scores"] = flatten_scores(result)
    eval_path.write_text(json.dumps(result, indent=2, default=str))
    for s in result["scores"]:
        val = s.get("value", s.get("values"))
        print(f"{s['source']:>24}  {s['metric']:<32} {val if not isinstance(val, float) else round(val, 3)}  (n={s.get('n')})")
    print(f"wrote {eval_path}")
    return 0


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
                         "n": len(prior["benchmarks"]), "settings": {"skipped": sorted(prior["skipped"])}})
    return flat


if __name__ == "__main__":
    sys.exit(main())
