"""Evaluate a run directory or a model on a task (and optionally a prior-capability suite).

    python -m eval.run --model <run dir | HF id | path | embedded:NAME> --task <name> [--split test]
        [--prior-suite paper|embedded|none] [--preset smoke|mini|paper] [--n N] [--teacher] [--rag]
        [--passk N] [--kl-base MODEL] [--judge-model M] [--judge-timeout S] [--judge-deadline S] [--output DIR]
        [--include MODULE_OR_PATH ...] [key=value ...]

Every evaluation option is a field of ``eval.config.EvalConfig`` (``--help`` lists them with their meaning), as
``--key value`` or ``key=value`` (the value read as YAML); the defaults of ``n``, ``max_new_tokens``,
``batch_size``, ``prior_batch_size`` and ``limit`` are the preset's ``eval:`` block (``sdft/presets/``).

A run directory (from ``python -m sdft.train``) holds ``config.yaml`` and ``model/``: the model in ``model/``
is evaluated, the task and teacher template default to the run's, and results go into the run directory. A task of
your own is imported with ``--include`` (a module name, a ``.py`` file or a directory; ``sdft.plugins``), or
without it when the run directory recorded its plugins (``include`` in ``config.yaml``).

Writes ``<output>/eval.json`` (every score with its metric name, n and settings; evaluations of other variants
already in the file are kept) and ``<output>/predictions_<variant>.jsonl`` (one line per example).
Exit status 2 with a one-line message when a prior suite cannot run here (e.g. no hub for ``paper``); status 1
with a one-line message when the arguments do not fit together, the existing eval.json is not valid JSON, or the
judge's endpoint gives no reply within ``--judge-deadline``.
The same from Python: ``eval.evaluate(model, task, cfg)`` with ``cfg`` from ``eval.config.build_eval_config``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from data_prep.registry import get_task
from eval.config import EvalConfig, build_eval_config
from eval.evaluation import EvaluationError, default_output_dir, evaluate, run_config_of
from eval.prior import PriorSuiteError
from sdft import plugins
from sdft.config_layers import PRESETS, dataclass_parser, parse_overrides
from sdft.errors import reported_as_one_line
from sdft.llm import DeadlineExceeded
from sdft.run_io import apply_thread_setting


def build_parser() -> argparse.ArgumentParser:
    """The options that are not evaluation options: what to evaluate, where to write, and the ``--teacher`` /
    ``--rag`` spellings of ``variant``; the rest of a command line goes to :class:`~eval.config.EvalConfig`."""
    p = argparse.ArgumentParser(prog="python -m eval.run", description=__doc__, add_help=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-h", "--help", action="store_true", help="show this help and every evaluation option")
    p.add_argument("--debug", action="store_true",
                   help="print the traceback of a user error too (or set SDFT_DEBUG=1)")
    p.add_argument("--model", help="a run directory, HF id, local path or embedded:NAME (required)")
    p.add_argument("--task", default=None, help="task name (default: the run's task)")
    p.add_argument("--preset", choices=PRESETS, default=None, help="default: the run's preset, else mini")
    p.add_argument("--teacher", action="store_true", help="evaluate the demonstration-conditioned teacher prompt")
    p.add_argument("--rag", action="store_true", help="oracle RAG: source text + question in the prompt")
    p.add_argument("--output", default=None, help="folder of eval.json (default: the run directory, else "
                                                  "results/eval/<task>/<model>)")
    p.add_argument("--include", action="append", default=None, metavar="MODULE_OR_PATH",
                   help="a plugin to import before the task is looked up (repeatable): a dotted module name, a .py "
                        "file or a directory of them; also $SDFT_INCLUDE; a run directory's recorded ones are imported")
    return p


def usage() -> str:
    """``--help``: the options above and every field of :class:`~eval.config.EvalConfig`."""
    fields = dataclass_parser([EvalConfig]).format_help().split("show this help message and exit\n", 1)[-1]
    return f"{build_parser().format_help()}\nevaluation options (eval.config.EvalConfig; also key=value):\n{fields}"


def parse_command_line(argv: list[str]) -> tuple[argparse.Namespace, EvalConfig]:
    """(the options of :func:`build_parser`, the evaluation's config resolved from the preset, the evaluated run
    and the command line)."""
    args, rest = build_parser().parse_known_args(argv)
    pairs = [a for a in rest if "=" in a and not a.startswith("-")]
    values = parse_overrides(pairs)
    if args.teacher and args.rag:
        raise EvaluationError("--rag and --teacher are different prompts; pick one")
    if args.teacher or args.rag:
        values["variant"] = "teacher" if args.teacher else "rag"
    values["preset"] = args.preset or values.get("preset")
    cfg = build_eval_config(values, [a for a in rest if a not in pairs], run_config=run_config_of(args.model))
    return args, cfg


def main(argv: list[str] | None = None) -> int:
    with reported_as_one_line(argv):  # error: <file or endpoint>: <what> (sdft.errors)
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    pre, _ = build_parser().parse_known_args(argv)
    if pre.help:
        print(usage())
        return 0
    if not pre.model:
        build_parser().error("the following arguments are required: --model")
    try:
        args, cfg = parse_command_line(argv)
        run_config = run_config_of(args.model) or {}
        plugins.import_plugins(plugins.merge(args.include or [],
                                             plugins.as_list(run_config.get("include"), "the run's config.yaml: include")))
        task_name = args.task or run_config.get("task")
        task = get_task(task_name) if task_name and not cfg.skip_task else None
        out_dir = Path(args.output) if args.output else default_output_dir(args.model, args.task)
        apply_thread_setting()  # SDFT_NUM_THREADS, as for a training run
        result = evaluate(args.model, task, cfg, output_dir=out_dir)
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
