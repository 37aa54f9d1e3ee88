"""Evaluate a run directory or a model on a task (and optionally a prior-capability suite).

    python -m eval.run --model <run dir | HF id | path | embedded:NAME> --task <name> [--split test]
        [--prior-suite paper|embedded|none] [--preset smoke|mini|paper] [--n N] [--teacher] [--rag]
        [--passk N] [--kl-base MODEL] [--judge-model M] [--judge-timeout S] [--judge-deadline S] [--output DIR]
        [--include MODULE_OR_PATH ...]

A run directory (from ``python -m sdft.train``) holds ``config.yaml`` and ``model/``: the model in ``model/``
is evaluated, the task and teacher template default to the run's, and results go into the run directory. A task of
your own is imported with ``--include`` (a module name, a ``.py`` file or a directory; ``sdft.plugins``), or
without it when the run directory recorded its plugins (``include`` in ``config.yaml``).

Writes ``<output>/eval.json`` (every score with its metric name, n and settings; evaluations of other variants
already in the file are kept) and ``<output>/predictions_<variant>.jsonl`` (one line per example).
Exit status 2 with a one-line message when a prior suite cannot run here (e.g. no hub for ``paper``); status 1
with a one-line message when the arguments do not fit together, the existing eval.json is not valid JSON, or the
judge's endpoint gives no reply within ``--judge-deadline``.
The same from Python: ``eval.evaluate(model, task, ...)``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from eval.evaluation import PRESET_EVAL, EvaluationError, default_output_dir, evaluate
from eval.judge import DEFAULT_JUDGE_DEADLINE_S, DEFAULT_JUDGE_TIMEOUT_S
from eval.prior import PriorSuiteError
from sdft.errors import reported_as_one_line
from sdft.llm import DeadlineExceeded


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eval.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true",
                   help="print the traceback of a user error too (or set SDFT_DEBUG=1)")
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
    p.add_argument("--judge-model", default=None,
                   help="LLM judge model (default: the task's offline judge if it has one, e.g. embedded_knowledge's "
                        "fact judge, else gpt-5-mini)")
    p.add_argument("--judge-timeout", type=float, default=None, metavar="S",
                   help=f"seconds one judge request waits for a reply per attempt (default {DEFAULT_JUDGE_TIMEOUT_S:g})")
    p.add_argument("--judge-deadline", type=float, default=None, metavar="S",
                   help="seconds one judge request may take, all retries and waits together; then the evaluation "
                        f"stops with an error naming the endpoint (default {DEFAULT_JUDGE_DEADLINE_S:g})")
    p.add_argument("--backend", choices=["auto", "hf", "vllm"], default="auto")
    p.add_argument("--output", default=None)
    p.add_argument("--skip-task", action="store_true", help="only the prior suite")
    p.add_argument("--include", action="append", default=None, metavar="MODULE_OR_PATH",
                   help="a plugin to import before the task is looked up (repeatable): a dotted module name, a .py "
                        "file or a directory of them; also $SDFT_INCLUDE; a run directory's recorded ones are imported")
    return p


def evaluate_kwargs(args: argparse.Namespace, given: set[str] | None = None) -> dict[str, Any]:
    """The keyword arguments of :func:`eval.evaluate` that parsed options stand for (all, or the ``given`` ones)."""
    opts = vars(args).copy()
    teacher, rag = opts.pop("teacher"), opts.pop("rag")
    if teacher and rag:
        raise EvaluationError("--rag and --teacher are different prompts; pick one")
    opts["variant"] = "rag" if rag else ("teacher" if teacher else "student")
    opts["output_dir"] = opts.pop("output")
    del opts["model"]
    opts.pop("debug", None)  # the command line's (sdft.errors), not the evaluation's
    if given is not None:
        renamed = {"teacher": "variant", "rag": "variant", "output": "output_dir"}
        keep = {renamed.get(k, k) for k in given}
        opts = {k: v for k, v in opts.items() if k in keep}
    return opts


def options_from_argv(argv: list[str]) -> dict[str, Any]:
    """:func:`eval.evaluate` keyword arguments for ``python -m eval.run`` options, only those the list sets
    (e.g. ``["--allow-code-execution"]`` -> ``{"allow_code_execution": True}``)."""
    parser = build_parser()
    args = parser.parse_args(["--model", "", *argv])
    given = {k for k, v in vars(args).items() if k != "model" and v != parser.get_default(k)}
    return evaluate_kwargs(args, given)


def main(argv: list[str] | None = None) -> int:
    with reported_as_one_line(argv):  # error: <file or endpoint>: <what> (sdft.errors)
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        kwargs = evaluate_kwargs(args)
        out_dir = Path(args.output) if args.output else default_output_dir(args.model, args.task)
        result = evaluate(args.model, **{**kwargs, "output_dir": out_dir})
    except PriorSuiteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (EvaluationError, DeadlineExceeded) as err:
        raise SystemExit(f"error: {err}") from None
    for s in result["scores"]:
        val = s.get("value", s.get("values"))
        print(f"{s['source']:>24}  {s['metric']:<32} {val if not isinstance(val, float) else round(val, 3)}  (n={s.get('n')})")
    print(f"wrote {out_dir / 'eval.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
