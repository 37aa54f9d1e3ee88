"""Teacher view: does the demonstration-conditioned model beat the plain one? (Section 3.2's precondition)

SDFT can only teach what its teacher -- the same model given the demonstration in context -- already does better
than the student. This script measures both on each task: greedy answers to the student prompt and to the
teacher prompt of each template (and, with ``--contexts``, each teacher context: the demonstration, the record's
source text, or both -- Figure 7's), scored by the task's scorer, with Wilson 95% intervals.

    python -m experiments.teacher_view [--preset mini] [--model M] [--tasks T ...] [--split val] [--n N]
        [--templates same_format paper] [--contexts answer text text+answer]
        [--output experiments/results/teacher_view]

Writes ``teacher_view.md`` / ``.csv`` (one row per task and prompt: accuracy, interval, n, gap to the student,
mean tokens, share cut at the token cap), ``predictions/<task>_<variant>.jsonl`` and ``manifest.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd

from data_prep.registry import get_task
from data_prep.task import load_records
from eval.config import build_eval_config
from eval.judge import judge_for
from eval.stats import proportion_ci
from sdft.config import build_config
from sdft.prompts import TEACHER_CONTEXTS, teacher_demonstration
from sdft.run_io import write_json_atomic, write_text_atomic

DEFAULT_TASKS = ("embedded_tool", "embedded_science", "embedded_medical")
DEFAULT_OUTPUT = Path("experiments/results/teacher_view")
PRECONDITION_POINTS = 30.0  # the teacher should beat the student by at least this much on a skill task


def teacher_label(template: str, context: str = "answer") -> str:
    return f"teacher ({template})" if context == "answer" else f"teacher ({template}, {context})"


def measure(model, tokenizer, task: str, split: str, n: int | None, templates: list[str], preset: str,
            seed: int = 0, predictions_dir: Path | None = None, contexts: tuple[str, ...] = ("answer",),
            judge_model: str | None = None) -> list[dict]:
    """Rows of the table for one task: the student prompt, then the teacher prompt of each template and context."""
    from eval.task_eval import evaluate_task, write_predictions

    spec = get_task(task)
    records = load_records(spec, split, seed=seed, n=n)
    settings = build_eval_config({"preset": preset})
    judge = None
    if spec.judge is not None:  # one judge for every prompt (the task's local one unless a model is named)
        judge = judge_for(spec, judge_model)
    rows, student = [], None
    prompts = [("student", None, "answer")] + [("teacher", t, c) for t in templates for c in contexts]
    for variant, template, context in prompts:
        shown = records if context == "answer" else \
            [{**r, "demonstration": teacher_demonstration(r, context)} for r in records]
        result = evaluate_task(model, tokenizer, shown, spec, variant=variant, template=template or "paper",
                               max_new_tokens=settings.max_new_tokens, batch_size=settings.batch_size,
                               seed=seed, backend="hf", judge=judge)
        head = result["scores"][0]
        tokens = next(s for s in result["scores"] if s["metric"] == "mean_generated_tokens")
        ci = proportion_ci(int(sum(p["score"] for p in result["predictions"])), head["n"])
        value = 100 * ci["p"]
        student = value if variant == "student" else student
        rows.append({"task": task, "prompt": "student" if template is None else teacher_label(template, context),
                     "metric": head["metric"], "accuracy": value, "ci_low": 100 * ci["ci_low"],
                     "ci_high": 100 * ci["ci_high"], "n": head["n"],
                     "gap": None if variant == "student" else value - student,
                     "mean_tokens": tokens["value"], "truncated": tokens["n_truncated"] / tokens["n"]})
        if predictions_dir is not None:
            suffix = "" if template is None else f"_{template}" + ("" if context == "answer" else f"_{context}")
            write_predictions(predictions_dir / f"{task}_{variant}{suffix.replace('+', '-')}.jsonl",
                              result["predictions"])
    return rows


def to_markdown(table: pd.DataFrame, title: str) -> str:
    lines = [f"# {title}", "",
             "| task | prompt | accuracy % [95% CI] | n | teacher - student | mean tokens | cut at cap |",
             "|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        gap = "" if pd.isna(r.gap) else f"{r.gap:+.1f}"
        lines.append(f"| {r.task} | {r.prompt} | {r.accuracy:.1f} [{r.ci_low:.1f}, {r.ci_high:.1f}] | {r.n} | "
                     f"{gap} | {r.mean_tokens:.1f} | {100 * r.truncated:.0f}% |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> Path:
    from sdft.models import load_model_and_tokenizer

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="mini", choices=["smoke", "mini", "paper"])
    ap.add_argument("--model", help="default: the preset's model")
    ap.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS))
    ap.add_argument("--split", default="val", help="val (default: choose tasks on it, keep test for the tables)")
    ap.add_argument("--n", type=int, help="records per task (default: the whole split)")
    ap.add_argument("--templates", nargs="+", help="teacher templates (default: the preset's SDFT template)")
    ap.add_argument("--contexts", nargs="+", default=["answer"], choices=list(TEACHER_CONTEXTS),
                    help="teacher contexts (default: answer, the demonstration)")
    ap.add_argument("--judge-model", help="judge-scored tasks: this LLM judge instead of the task's default")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = ap.parse_args(argv)

    cfg = build_config(args.preset, "sdft", overrides={"model": args.model} if args.model else None)
    templates = args.templates or [cfg.teacher_template]
    model, tokenizer = load_model_and_tokenizer(cfg.model, dtype="float32")
    model.eval()
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "predictions").mkdir(exist_ok=True)
    started = time.time()
    rows = []
    for task in args.tasks:
        rows += measure(model, tokenizer, task, args.split, args.n, templates, args.preset, args.seed,
                        args.output / "predictions", contexts=tuple(args.contexts), judge_model=args.judge_model)
        print(json.dumps(rows[-1]), flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(args.output / "teacher_view.csv", index=False)
    title = f"Teacher view: {cfg.model}, {args.split} split, greedy"
    write_text_atomic(args.output / "teacher_view.md", to_markdown(table, title))
    write_json_atomic(args.output / "manifest.json", {
        "command": "python -m experiments.teacher_view " + " ".join(sys.argv[1:] if argv is None else argv),
        "model": cfg.model, "preset": args.preset, "split": args.split, "n": args.n, "seed": args.seed,
        "templates": templates, "contexts": args.contexts, "tasks": args.tasks, "wall_clock_s": round(time.time() - started, 1)})
    print(f"wrote {args.output / 'teacher_view.md'}")
    return args.output


if __name__ == "__main__":
    main()
