"""Evaluate a model on a task's records: generate, score (rule-based or LLM judge), pass@k, token counts."""

from __future__ import annotations

import json
from typing import Any, Sequence

from data_prep.task import Task
from eval.generation import Generations, generate
from eval.judge import judge_for
from eval.passk import pass_at_k_curve
from eval.rag import rag_messages
from sdft.health import answer_collapse
from sdft.prompts import student_messages, teacher_messages
from sdft.run_io import write_text_atomic


def build_conversations(records: Sequence[dict], variant: str = "student", template: str = "paper") -> list:
    """The prompts of one evaluation variant: ``student`` (CtxS), ``teacher`` (CtxT with ``template``), ``rag``."""
    if variant == "student":
        return [student_messages(r) for r in records]
    if variant == "teacher":
        return [teacher_messages(r, template) for r in records]
    if variant == "rag":
        return [rag_messages(r) for r in records]
    raise ValueError(f"unknown variant {variant!r}; expected student | teacher | rag")


def _score_responses(records, responses: list[str], task: Task, judge) -> tuple[list[float], list[dict]]:
    """Per-response score in {0, 1} (the task's scorer, else ``judge``'s verdicts) and extra per-response fields
    (judge verdicts)."""
    if task.score is not None:
        return [task.score(resp, r["reference"]) for resp, r in zip(responses, records)], [{} for _ in responses]
    res = judge.judge_records(records, responses, task)
    scores = [1.0 if v == "CORRECT" else 0.0 for v in res.verdicts]
    extras = [{"verdict": v, "judge_raw": raw} for v, raw in zip(res.verdicts, res.raw)]
    return scores, extras


KIND_ORDER = ("direct", "paraphrased", "indirect")  # the knowledge questions' kinds (meta.kind), in table order


def _accuracies(verdicts: Sequence[str], suffix: str = "", **fields) -> list[dict[str, Any]]:
    """Strict (``CORRECT``) and lenient (``CORRECT`` or ``PARTIALLY_CORRECT``) accuracy of knowledge verdicts,
    in percent, with ``n`` and the unparseable count."""
    n = len(verdicts)
    strict = sum(v == "CORRECT" for v in verdicts)
    lenient = sum(v in ("CORRECT", "PARTIALLY_CORRECT") for v in verdicts)
    unp = sum(v == "UNPARSEABLE" for v in verdicts)
    return [{"metric": f"judge_{name}_accuracy{suffix}", "value": 100 * count / n, "unit": "percent", "n": n,
             "n_unparseable": unp, **fields} for name, count in (("strict", strict), ("lenient", lenient))]


def knowledge_scores(records: Sequence[dict], verdicts: Sequence[str]) -> list[dict[str, Any]]:
    """The knowledge task's scores: strict and lenient accuracy over all records (strict first: the headline),
    then, for the records carrying ``meta.kind``, the same per kind (``judge_strict_accuracy_indirect``, ...; ``n``
    the kind's count) in the order of ``KIND_ORDER``, other kinds after them sorted by name. Records without a kind
    count only in the overall scores."""
    if len(records) != len(verdicts):
        raise ValueError(f"{len(records)} records but {len(verdicts)} verdicts")
    out = _accuracies(verdicts)
    by_kind: dict[str, list[str]] = {}
    for r, v in zip(records, verdicts):
        kind = (r.get("meta") or {}).get("kind")
        if isinstance(kind, str) and kind:
            by_kind.setdefault(kind, []).append(v)
    order = [k for k in KIND_ORDER if k in by_kind] + sorted(k for k in by_kind if k not in KIND_ORDER)
    for kind in order:
        out += _accuracies(by_kind[kind], f"_{kind}", kind=kind)
    return out


def evaluate_task(model, tokenizer, records: Sequence[dict], task: Task, *, variant: str = "student",
                  template: str = "paper", max_new_tokens: int = 256, batch_size: int = 8, passk: int | None = None,
                  seed: int = 0, judge=None, backend: str = "auto", passk_temperature: float = 1.0,
                  passk_top_p: float = 0.95) -> dict[str, Any]:
    """Greedy accuracy (and optionally pass@k with ``passk`` samples per prompt) of ``model`` on ``records``.

    ``model``: a loaded causal LM, or a path/id (vLLM backend); ``task``: the records' task (its scorer, judge
    prompt, metric and format check); ``judge``: for a judge-scored task, default :func:`eval.judge.judge_for` it.
    Returns a dict with ``scores`` (each
    ``{"metric", "value", "unit", "n", ...}``), ``settings``, ``answers`` (how alike the greedy answers are:
    ``sdft.health.answer_collapse``; ``collapsed`` when one answer covers half the items) and per-example
    ``predictions``.
    Values of accuracies and pass@k are percentages.
    """
    records = list(records)
    if not records:
        raise ValueError("no records to evaluate")
    convs = build_conversations(records, variant, template)
    gens: Generations = generate(model, tokenizer, convs, greedy=True, max_new_tokens=max_new_tokens,
                                 batch_size=batch_size, seed=seed, backend=backend)
    responses = gens.first
    judged = task.judge is not None
    if judge is None and judged:  # chosen once, so its settings are recorded and pass@k reuses it
        judge = judge_for(task)
    scores, extras = _score_responses(records, responses, task, judge)
    n = len(records)
    out_scores: list[dict[str, Any]] = []
    if task.judge == "knowledge":
        out_scores += knowledge_scores(records, [e["verdict"] for e in extras])
    else:
        entry = {"metric": task.metric, "value": 100 * sum(scores) / n, "unit": "percent", "n": n}
        if judged:
            entry["n_unparseable"] = sum(e["verdict"] == "UNPARSEABLE" for e in extras)
        out_scores.append(entry)
    formatted = [task.format_check(resp) for resp in responses] if task.format_check else None
    if formatted is not None:
        out_scores.append({"metric": "format_rate", "value": 100 * sum(formatted) / n, "unit": "percent", "n": n})
    out_scores.append({"metric": "mean_generated_tokens", "value": gens.mean_tokens(), "unit": "tokens", "n": n,
                       "n_truncated": sum(not f[0] for f in gens.finished)})
    predictions = []
    for r, resp, s, e, c, f in zip(records, responses, scores, extras, gens.n_tokens, gens.finished):
        predictions.append({"id": r["id"], "response": resp, "reference": r["reference"], "score": s,
                            "n_tokens": c[0], "finished": f[0], **e})
    for p, ok in zip(predictions, formatted or []):
        p["format_ok"] = ok
    settings: dict[str, Any] = {"task": task.name, "variant": variant, "template": template if variant == "teacher" else None,
                                "decoding": gens.settings, "judge": getattr(judge, "settings", lambda: None)()
                                if judge is not None else None}
    if passk:
        sg = generate(model, tokenizer, convs, greedy=False, temperature=passk_temperature, top_p=passk_top_p, n=passk,
                      max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed, backend=backend)
        flat_records = [r for r in records for _ in range(passk)]
        flat = [t for ts in sg.texts for t in ts]
        flat_scores, _ = _score_responses(flat_records, flat, task, judge)
        counts = [int(sum(flat_scores[i * passk:(i + 1) * passk])) for i in range(n)]
        curve = pass_at_k_curve(counts, passk)
        out_scores.append({"metric": "pass@k", "values": {str(k): 100 * v for k, v in curve.items()}, "unit": "percent",
                           "n": n, "samples_per_prompt": passk, "temperature": passk_temperature, "top_p": passk_top_p})
        out_scores.append({"metric": "mean_generated_tokens_sampled", "value": sg.mean_tokens(), "unit": "tokens", "n": n})
        for p, c, texts in zip(predictions, counts, sg.texts):
            p["passk_correct"] = c
            p["samples"] = texts
        settings["passk_decoding"] = sg.settings
    return {"task": task.name, "variant": variant, "n": n, "scores": out_scores, "settings": settings,
            "answers": answer_collapse(responses), "predictions": predictions}


def write_predictions(path, predictions: Sequence[dict]) -> None:
    """One JSON line per prediction, written atomically (a temporary file, then ``os.replace``)."""
    write_text_atomic(path, "".join(json.dumps(p, ensure_ascii=False, default=str) + "\n" for p in predictions))
