"""Section 3.2 and Figure 2 (right): is the demonstration-conditioned model a good teacher that stays near the base?

    bash experiments/run_icl_check.sh [--preset smoke|mini|paper] [--tasks T] [--seeds N] [--sft-run DIR ...]
                                      [--template NAME] [--batch-size N] [--launcher local|slurm] [--dry-run]
                                      [--force] [key=value ...]

Per task (Tool Use by default, the paper's), three models, each evaluated greedily on the test split and scored by
the task's scorer, with Wilson 95% intervals:

  * *student*: the base model with the plain prompt (paper: 42% on ToolAlpaca);
  * *teacher*: the base model with the demonstration in its prompt (the SDFT teacher's context, the preset's
    teacher template; paper: 100%);
  * *SFT*: the base model after SFT on the demonstrations -- trained here (the preset's SFT, one run per task and
    seed), or a finished run directory given with ``--sft-run`` (its ``model/`` is evaluated, nothing trained).

and the KL divergence to the base model ``KL(pi || pi_base)`` of the teacher and of the SFT model, estimated by
``eval.kl.kl_to_base`` (through ``eval.evaluate`` with ``kl_base``): one sample per test prompt from ``pi`` at
temperature 1 (the teacher sampling with its demonstration context, the SFT model with the plain prompt), at most
the preset's number of new tokens, ``pi_base`` scoring the same tokens given the plain prompt, the full-vocabulary
per-token form summed over the sample. Two units are reported: nats per *sequence* (``kl_seq``: the mean over
samples of the summed per-token terms) and nats per *token* (``kl_per_token``: all terms over all tokens).

Which unit the paper's 1.26 (SFT) vs 0.68 (teacher) nats are: the paper does not say (Section 3.2 writes
``D_KL(pi || pi_0)`` of a policy, a sequence-level quantity). We read them as nats per sequence, as ``eval/kl.py``
does: a mean per-token KL of 1.26 nats between a 7B model and its own fine-tuned copy, over hundreds of tokens of
mostly near-deterministic tool-call text, would be far larger than such models' measured distances. Compare our
``kl_seq`` with them; ``kl_per_token`` is given to remove the dependence on the response length.

Writes ``icl_check.md`` / ``.csv`` (one row per task, model and seed; the markdown adds the paper's values and an
independent reproduction's teacher accuracy, :data:`experiments.reproductions.ICL_CHECK`) and ``figure2_icl.png`` /
``.pdf`` (:mod:`figures.icl`, the paper's values marked on Tool Use). One seed unless ``--seeds`` (the paper reports one
number each); no prior-capability suite.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from eval.stats import proportion_ci
from experiments import grid as G
from experiments import reporting as R
from experiments import reproductions as RP
from experiments import section
from experiments.evaluation import evaluate_model
from sdft.config import build_config
from sdft.run_io import read_json, read_yaml, write_json_atomic, write_text_atomic

EXPERIMENT = "icl_check"
METHODS = ["base", "sft"]
ROLES = ("student", "teacher", "sft")
ROLE_TITLES = {"student": "base model (no demonstration)", "teacher": "teacher (base + demonstration)",
               "sft": "SFT model"}
TEACHER_FOLDER = "teacher"  # <base run>/teacher/eval.json: the demonstration-conditioned evaluation and its KL
KL_METRIC = "kl_to_base_seq"
# Paper, Section 3.2 / Figure 2 right (Qwen2.5-7B-Instruct, ToolAlpaca): accuracy %, KL to the base model (nats).
PAPER_ICL = {"tooluse": {"student": 42.0, "teacher": 100.0, "kl_teacher": 0.68, "kl_sft": 1.26}}


# ------------------------------------------------------------------------------------------------ grid
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sft-run", action="append", default=[], metavar="DIR",
                        help="a finished SFT run directory (config.yaml + model/) to evaluate for its task instead of "
                             "training one; repeat for several tasks")
    parser.add_argument("--template", help="the teacher's template (default: the preset's SDFT teacher template)")
    parser.add_argument("--batch-size", type=int,
                        help="sequences per batch of the evaluations and the KL pass (default: the preset's "
                             "experiments.settings.icl_check.batch_size, null: its evaluation batch; the paper "
                             "preset's 4, as the KL pass holds a batch's full-vocabulary log-probs)")


def reused_runs(dirs: list[str], tasks: set[str]) -> dict[str, Path]:
    """``{task: run_dir}`` of the ``--sft-run`` directories; ``SystemExit`` naming the directory or file at fault."""
    out: dict[str, Path] = {}
    for d in dirs:
        run = Path(d).resolve()
        config_path = run / "config.yaml"
        if not config_path.is_file() or not (run / "model").is_dir():
            raise SystemExit(f"error: --sft-run {d}: not a finished run directory (needs config.yaml and model/)")
        config = read_yaml(config_path) or {}
        task = config.get("task")
        if not task:
            raise SystemExit(f"error: {config_path}: no field 'task'")
        if task not in tasks:
            raise SystemExit(f"error: --sft-run {d}: its task {task!r} is not among this grid's tasks "
                             f"{sorted(tasks)} (--tasks)")
        if task in out:
            raise SystemExit(f"error: --sft-run: two runs for the task {task!r} ({out[task]}, {run})")
        out[task] = run
    return out


def adjust_grid(args, specs: list[G.RunSpec]) -> list[G.RunSpec]:
    """Seed 0 only unless ``--seeds``; the teacher template and batch size in every spec's evaluation options; a
    task with an ``--sft-run`` gets one SFT spec evaluating that run's model (``RunSpec.model_from``)."""
    if args.seeds is None:
        specs = [s for s in specs if s.seed == 0]
    template = args.template or _preset_template(specs[0].preset if specs else args.preset)
    batch = args.batch_size if args.batch_size is not None else section.preset_setting(EXPERIMENT, args.preset, "batch_size")
    extra = {"template": template, **({"batch_size": batch} if batch else {})}
    reused = reused_runs(args.sft_run, {s.task for s in specs})
    out, placed = [], set()
    for spec in specs:
        spec.eval_options = {**spec.eval_options, **extra}
        if spec.method == "sft" and spec.task in reused:
            if spec.task in placed:
                continue  # one evaluation of the given model per task, whatever the seeds
            placed.add(spec.task)
            source = reused[spec.task]
            spec.run_dir = str(Path(spec.run_dir).parent / f"reused__{source.name}")
            spec.model_from, spec.variant = str(source), "reused"
        out.append(spec)
    return out


def _preset_template(preset: str) -> str:
    return build_config(preset, "sdft").teacher_template


def describe(args, specs: list[G.RunSpec]) -> list[str]:
    template = args.template or _preset_template(args.preset)
    reused = [f"{s.task}: {s.model_from}" for s in specs if s.model_from]
    return [f"teacher template {template!r}; KL to the base model: one sample per test prompt at temperature 1, "
            "nats per sequence and per token", *([f"SFT reused: {', '.join(reused)}"] if reused else [])]


# ------------------------------------------------------------------------------------------------ one run
def execute(spec: G.RunSpec) -> None:
    """``base``: the teacher evaluation (with its KL to the base) into ``<run>/teacher/``, then the student's into
    ``<run>/eval.json``. ``sft``: train (or take ``spec.model_from``'s model), then evaluate with the KL to the base
    into ``<run>/eval.json`` (written last: it marks the run done)."""
    from sdft.train import run_training

    cfg = spec.config()
    run_dir = Path(spec.run_dir)
    # the grid's evaluation options (template, batch_size from adjust_grid; allow_code_execution, ...) win over the
    # run's values, as on a command line
    common: dict[str, Any] = {"split": "test", "preset": spec.preset, "seed": spec.seed,
                              "data_dir": getattr(cfg, "data_dir", None), **spec.eval_options}
    if spec.method == "base":
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg.save(run_dir / "config.yaml")
        if not (run_dir / TEACHER_FOLDER / "eval.json").exists():
            evaluate_model(cfg.model, spec.task, run_dir / TEACHER_FOLDER,
                           **{**common, "variant": "teacher", "kl_base": cfg.model})
        evaluate_model(cfg.model, spec.task, run_dir, **{**common, "variant": "student"})
        return
    if spec.model_from:
        source = Path(spec.model_from)
        run_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / "config.yaml", run_dir / "config.yaml")
        write_json_atomic(run_dir / "reused_from.json", {"run_dir": str(source)})
        model, base = source / "model", (read_yaml(source / "config.yaml") or {}).get("model")
        if not base:
            raise SystemExit(f"{source / 'config.yaml'}: no field 'model' (the base model the run started from)")
    else:
        run_training(cfg)
        model, base = run_dir / "model", cfg.model
    evaluate_model(str(model), spec.task, run_dir, **{**common, "variant": "student", "kl_base": base})


# ------------------------------------------------------------------------------------------------ results
def evaluation_row(eval_json: Path, variant: str) -> dict[str, Any]:
    """Accuracy (the headline score of ``variant``), its Wilson 95% interval and, when evaluated, the KL to the base
    model (per sequence and per token) of one ``eval.json``."""
    ev = read_json(eval_json).get("evaluations", {}).get(variant)
    value, metric = R.primary_score(ev)
    if value is None:
        raise SystemExit(f"{eval_json}: no percentage score of the {variant!r} evaluation")
    score = next(s for s in ev["scores"] if s["metric"] == metric)
    n = int(score["n"])
    successes = round(value * n / 100)
    ci = proportion_ci(successes, n)
    kl = next((s for s in ev["scores"] if s["metric"] == KL_METRIC), None)
    return {"metric": metric, "accuracy": value, "successes": successes, "n": n, "ci_low": 100 * ci["ci_low"],
            "ci_high": 100 * ci["ci_high"],
            "kl_seq": None if kl is None else float(kl["value"]),
            # the interval over samples: absent from eval.json files written before it was recorded
            "kl_seq_ci_low": None if kl is None else kl.get("kl_seq_ci_low"),
            "kl_seq_ci_high": None if kl is None else kl.get("kl_seq_ci_high"),
            "kl_per_token": None if kl is None else float(kl["kl_per_token"]),
            "kl_samples": None if kl is None else int(kl["n_samples"]),
            "kl_mean_tokens": None if kl is None else float(kl["mean_tokens"]),
            "kl_base": None if kl is None else kl.get("base"), "source": str(eval_json)}


def collect(results_dir: str | Path) -> pd.DataFrame:
    """One row per (task, role, run): the base runs give *student* and *teacher*, the SFT runs *sft*."""
    runs = R.collect_runs(results_dir)
    if runs.empty:
        raise SystemExit(f"no eval.json under {results_dir}: nothing to aggregate")
    rows = []
    for run in runs.itertuples():
        run_dir = Path(run.run_dir)
        head = {"task": run.task, "seed": run.seed, "run_id": run.run_id, "model": run.model}
        if run.method == "base":
            rows.append({**head, "role": "student", **evaluation_row(run_dir / "eval.json", "student")})
            teacher = run_dir / TEACHER_FOLDER / "eval.json"
            if not teacher.exists():
                raise SystemExit(f"{teacher}: missing (the base run's teacher evaluation)")
            rows.append({**head, "role": "teacher", **evaluation_row(teacher, "teacher")})
        elif run.method == "sft":
            rows.append({**head, "role": "sft", **evaluation_row(run_dir / "eval.json", "student")})
    order = {r: i for i, r in enumerate(ROLES)}
    table = pd.DataFrame(rows)
    return table.sort_values(["task", "role", "seed"], key=lambda c: c.map(order) if c.name == "role" else c,
                             kind="stable").reset_index(drop=True)


def paper_values(task: str) -> dict[str, float]:
    """The paper's Section 3.2 numbers for the task a row is shown as (empty for other tasks)."""
    return PAPER_ICL.get(R.shown_as(task), {})


def to_markdown(table: pd.DataFrame) -> str:
    lines = ["# Section 3.2 / Figure 2 (right): the demonstration-conditioned teacher vs SFT", "",
             "Accuracy in % (greedy, test split) with its Wilson 95% interval. KL(π ‖ π_base) in nats: per sequence "
             "(the unit we read the paper's 1.26 / 0.68 in; its 95% t-interval over samples) and per token; one sample per test prompt at "
             "temperature 1, π_base given the plain prompt.", ""]
    for task, sub in table.groupby("task", sort=False):
        paper = paper_values(task)
        lines += [f"## {R.task_title(task)} (ours: `{task}`, metric `{sub['metric'].iloc[0]}`)", "",
                  "| model | seed | accuracy % [95% CI] | n | KL nats/sequence | KL nats/token | mean tokens |",
                  "|---|---|---|---|---|---|---|"]
        for r in sub.itertuples():
            kl = "–" if pd.isna(r.kl_seq) else f"{r.kl_seq:.3f}" + (
                "" if pd.isna(r.kl_seq_ci_low) else f" [{r.kl_seq_ci_low:.3f}, {r.kl_seq_ci_high:.3f}]")
            per_token = "–" if pd.isna(r.kl_per_token) else f"{r.kl_per_token:.4f}"
            tokens = "–" if pd.isna(r.kl_mean_tokens) else f"{r.kl_mean_tokens:.1f}"
            lines.append(f"| {ROLE_TITLES[r.role]} | {r.seed} | {r.accuracy:.1f} [{r.ci_low:.1f}, {r.ci_high:.1f}] | "
                         f"{r.n} | {kl} | {per_token} | {tokens} |")
        if paper:
            lines += [f"| *paper: {ROLE_TITLES['student']}* | | *{paper['student']:.0f}* | | | | |",
                      f"| *paper: {ROLE_TITLES['teacher']}* | | *{paper['teacher']:.0f}* | | *{paper['kl_teacher']}* "
                      "| | |",
                      f"| *paper: {ROLE_TITLES['sft']}* | | | | *{paper['kl_sft']}* | | |"]
        repro = [r for r in RP.ICL_CHECK if r.task == R.shown_as(task)]
        lines += [f"| *repro ({r.source.label}): {ROLE_TITLES[r.method]}* | | *{r.value}* | | | | |" for r in repro]
        lines.append("")
        if repro:
            lines += [RP.legend_line(repro), ""]
    return "\n".join(lines)


def aggregate(results_dir: str | Path) -> pd.DataFrame:
    """icl_check.md / .csv and figure2_icl.png / .pdf, from the result files only."""
    from figures.icl import plot_icl

    results_dir = Path(results_dir)
    table = collect(results_dir)
    table.to_csv(results_dir / "icl_check.csv", index=False)
    write_text_atomic(results_dir / "icl_check.md", to_markdown(table))
    plot_icl(results_dir, roles=ROLES, paper_values={t: paper_values(t) for t in dict.fromkeys(table["task"])})
    return table


def main(argv: list[str] | None = None) -> None:
    section.main(argv, experiment=EXPERIMENT, doc=__doc__, methods=METHODS, aggregate=aggregate,
                 outputs=["icl_check.md", "icl_check.csv", "figure2_icl.png (and .pdf)"],
                 add_arguments=add_arguments, adjust_grid=adjust_grid, describe=describe, execute_fn=execute)


if __name__ == "__main__":
    main()
