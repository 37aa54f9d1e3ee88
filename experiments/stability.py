"""SDFT's stabilizers, chosen on the validation split over seeds: which settings keep SDFT from collapsing.

    python -m experiments.stability [--preset mini] [--tasks embedded_tool] [--settings ema05,frozen,...]
                                    [--seeds 3] [--jobs 2] [--dry-run] [--aggregate-only] [key=value ...]

Each setting is a named set of SDFT config values (``SETTINGS``: the teacher's weights and EMA rate, the per-token
divergence clip, the rollouts' temperature, ...); each (task, setting, seed) trains SDFT under the paper's checkpoint
protocol (``sdft.selection``: the validation split every ``selection_steps`` steps, the best kept) and logs its
health every step (``sdft.health``). No test split is read: the choice is made on validation only. ``aggregate``
reads the result files and writes

  * ``stability.md`` / ``.csv``: per task and setting, over seeds (mean and 95% t-interval): the validation score
    of the selected checkpoint and of the final model, the selected steps, how many seeds' final or selected
    checkpoint answers half the validation items alike (collapsed, ``sdft.health.answer_collapse``), how many runs
    the collapse rule warned about, and the health at the last step; the chosen setting per task (the highest mean
    selected-checkpoint validation score; ties: fewer collapsed seeds, then the order of ``--settings``);
  * ``health_<task>.png`` / ``.pdf``: every run's health curves and validation scores (``figures.health``).

The chosen setting is then what the ``mini`` preset's SDFT uses (``sdft/presets/mini.yaml``), and Table 5 reruns
with it (``experiments/results/stability_mini/README.md``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from eval.evaluation import write_eval_json
from eval.stats import mean_ci
from experiments import grid as G
from experiments import section
from experiments.reporting import fmt
from figures.health import plot_health
from sdft.run_io import read_json_or_none, read_metrics, read_step_files, read_yaml

EXPERIMENT = "stability"
METHODS = ["sdft"]

# name -> SDFT config values on top of the preset's (each key documented in `python -m sdft.train --help-config`)
SETTINGS: dict[str, dict] = {
    # mini's values before this sweep: an EMA teacher at rate 0.05, rollouts at temperature 1
    "ema05": {"teacher_model_kind": "ema", "teacher_update_rate": 0.05, "temperature": 1.0},
    "ema01": {"teacher_model_kind": "ema", "teacher_update_rate": 0.01, "temperature": 1.0},  # the authors' rate
    # the field's fix for an EMA teacher that drifts (Appendix A.3's frozen base)
    "frozen": {"teacher_model_kind": "base", "temperature": 1.0},
    # + rollouts at temperature 0.7 (TRL's convention, kept: the loss compares both distributions at that
    # temperature too, so the target is sharper as well)
    "frozen_t07": {"teacher_model_kind": "base", "temperature": 0.7},
    "frozen_t05": {"teacher_model_kind": "base", "temperature": 0.5},
    # temperature's two effects apart (loss_temperature): colder rollouts with the untempered target, and the
    # sharper target on rollouts at temperature 1
    "frozen_t07_loss1": {"teacher_model_kind": "base", "temperature": 0.7, "loss_temperature": 1.0},
    "frozen_t1_loss07": {"teacher_model_kind": "base", "temperature": 1.0, "loss_temperature": 0.7},
    "ema05_t07": {"teacher_model_kind": "ema", "teacher_update_rate": 0.05, "temperature": 0.7},
    # the current student as its own teacher: Appendix A.3's unstable one (a collapse control)
    "live": {"teacher_model_kind": "live", "temperature": 1.0},
    "ema05_clip": {"teacher_model_kind": "ema", "teacher_update_rate": 0.05, "temperature": 1.0,
                   "token_kl_clip": 0.05},  # the fork's clip
    "ema05_clip_rescale": {"teacher_model_kind": "ema", "teacher_update_rate": 0.05, "temperature": 1.0,
                           "token_kl_clip": 0.05, "token_kl_clip_mode": "rescale"},
    "ema05_skip3": {"teacher_model_kind": "ema", "teacher_update_rate": 0.05, "temperature": 1.0,
                    "num_loss_tokens_to_skip": 3},
}
DEFAULT_SETTINGS = ("ema05", "ema01", "frozen", "frozen_t07")
HEALTH_LAST = ("health/student_entropy", "health/teacher_entropy", "health/first_token_mode_share",
               "health/format_rate", "health/length_mean")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--settings", default=",".join(DEFAULT_SETTINGS),
                        help=f"comma-separated subset of {','.join(SETTINGS)} (default: {','.join(DEFAULT_SETTINGS)})")


def chosen_settings(text: str) -> list[str]:
    return G.comma_subset(text, list(SETTINGS), "--settings")


def adjust_grid(args, specs: list[G.RunSpec]) -> list[G.RunSpec]:
    """One SDFT run per setting, each under the checkpoint protocol."""
    clash = sorted({k for s in specs for k in s.overrides} & {k for v in SETTINGS.values() for k in v})
    if clash:
        raise SystemExit(f"error: {clash} are set by the settings; add a setting to SETTINGS instead")
    return [G.as_variant(spec, f"{name}_{Path(spec.run_dir).name}",
                         {**SETTINGS[name], "checkpoint_selection": "best_val"}, f"setting: {name}")
            for spec in specs for name in chosen_settings(args.settings)]


def execute(spec: G.RunSpec) -> None:
    """Train; the run's ``eval.json`` records its selection (validation only: no test split is evaluated here)."""
    from sdft.selection import read_selection
    from sdft.train import run_training

    run_dir = run_training(spec.config())
    selection = read_selection(run_dir)
    if selection is None:
        raise RuntimeError(f"{run_dir}: no selection.json (checkpoint_selection must be best_val in this sweep)")
    write_eval_json(Path(run_dir) / "eval.json", {"split": "val", "checkpoint": selection, "evaluations": {}})


# ------------------------------------------------------------------------------------------------ results
def collect(results_dir: str | Path) -> pd.DataFrame:
    """One row per finished run: task, setting, seed, selected and final validation scores and steps, whether the
    final / selected checkpoint's greedy answers collapsed, the collapse rule's warnings, the last step's health."""
    from sdft.health import CollapseRule
    from sdft.selection import read_selection

    rows = []
    for sel_path in sorted(Path(results_dir).glob("*/sdft/*/selection.json")):
        run_dir = sel_path.parent
        if not (run_dir / "eval.json").exists():
            continue
        sel = read_selection(run_dir)
        steps = read_step_files(run_dir)
        config = read_yaml(run_dir / "config.yaml") or {}
        setting = run_dir.name.rsplit("_seed", 1)[0]
        metrics = [m for m in read_metrics(run_dir) if "health/student_entropy" in m]
        last = metrics[-1] if metrics else {}
        warnings = (read_json_or_none(run_dir / "health.json") or {}).get("collapse", [])
        rule = CollapseRule()  # the rollout arm, replayed (the greedy arm is in the step files)
        rollout_fired = any(rule.observe_step(m["step"], m) for m in metrics)
        rows.append({
            "task": run_dir.parts[-3], "setting": setting, "seed": config.get("seed"), "run_dir": str(run_dir),
            "val_selected": sel["chosen_val"], "val_final": sel["final_val"], "chosen_step": sel["chosen_step"],
            "final_step": sel["final_step"], "metric": next(iter(steps.values()))["metric"] if steps else None,
            "n_val": next(iter(steps.values()))["n"] if steps else None,
            "collapsed_final": bool((steps.get(sel["final_step"], {}).get("answers") or {}).get("collapsed")),
            "collapsed_selected": bool((steps.get(sel["chosen_step"], {}).get("answers") or {}).get("collapsed")),
            "warned": bool(warnings) or rollout_fired,
            **{k.split("/", 1)[1]: last.get(k) for k in HEALTH_LAST},
        })
    return pd.DataFrame(rows)


def summarize(runs: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """Per (task, setting): seeds, mean ± 95% t-interval of the selected and final validation scores, collapse
    counts, mean last-step health; ``chosen`` marks each task's best setting (module docstring)."""
    rows = []
    for (task, setting), g in runs.groupby(["task", "setting"], sort=False):
        row = {"task": task, "setting": setting, "n_seeds": len(g), "metric": g["metric"].iloc[0],
               "n_val": g["n_val"].iloc[0]}
        for col in ("val_selected", "val_final"):
            ci = mean_ci([float(v) for v in g[col]])
            row[col], row[f"{col}_ci95"] = ci["mean"], ci.get("half_width", float("nan"))
        row["chosen_steps"] = ", ".join(f"{int(s)}/{int(f)}" for s, f in zip(g["chosen_step"], g["final_step"]))
        row["collapsed_final"] = int(g["collapsed_final"].sum())
        row["collapsed_selected"] = int(g["collapsed_selected"].sum())
        row["warned"] = int(g["warned"].sum())
        for k in HEALTH_LAST:
            name = k.split("/", 1)[1]
            row[name] = float(pd.to_numeric(g[name], errors="coerce").mean())
        row["settings"] = SETTINGS.get(setting)
        rows.append(row)
    rank = {name: i for i, name in enumerate(order)}
    table = pd.DataFrame(rows).sort_values(by=["task", "setting"], kind="stable", key=lambda c: c.map(
        lambda s: rank.get(s, len(rank))) if c.name == "setting" else c).reset_index(drop=True)
    table["chosen"] = False
    for _, g in table.groupby("task"):
        best = g.sort_values(by=["val_selected", "collapsed_selected", "setting"], ascending=[False, True, True],
                             key=lambda c: c.map(lambda s: rank.get(s, len(rank))) if c.name == "setting" else c)
        table.loc[best.index[0], "chosen"] = True
    return table


def write_table(table: pd.DataFrame, results_dir: Path) -> None:
    table.to_csv(results_dir / "stability.csv", index=False)
    lines = ["# SDFT stabilizers on the validation split", "",
             "Per setting: the validation score (greedy, %) of the checkpoint the protocol selects and of the final "
             "model, mean ± 95% t-interval over seeds; the selected step of each seed (of the last); seeds whose "
             "final / selected checkpoint gives one answer to at least half the validation items; runs the collapse "
             "rule warned about; mean health at the last step (entropies in nats). **Bold**: the setting chosen "
             "per task (highest selected score; ties: fewer collapsed seeds).", ""]
    for task, g in table.groupby("task", sort=False):
        lines += [f"## `{task}` (metric `{g['metric'].iloc[0]}`, n = {int(g['n_val'].iloc[0])} validation items)", "",
                  "| Setting | Values | Selected | Final | Selected steps | Collapsed final / selected | Warned | "
                  "Student H | Teacher H | First-token mode | Format | Length | Seeds |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for _, r in g.iterrows():
            name = f"**{r['setting']}**" if r["chosen"] else r["setting"]
            values = ", ".join(f"{k}={v}" for k, v in (r["settings"] or {}).items())
            lines.append(
                f"| {name} | {values} | {fmt(r['val_selected'], r['val_selected_ci95'])} | "
                f"{fmt(r['val_final'], r['val_final_ci95'])} | {r['chosen_steps']} | "
                f"{r['collapsed_final']} / {r['collapsed_selected']} | {r['warned']} | {r['student_entropy']:.2f} | "
                f"{r['teacher_entropy']:.2f} | {r['first_token_mode_share']:.2f} | "
                f"{r['format_rate']:.2f} | {r['length_mean']:.1f} | {int(r['n_seeds'])} |")
        lines.append("")
    (results_dir / "stability.md").write_text("\n".join(lines))


def aggregate(results_dir: str | Path, order: list[str] | None = None) -> pd.DataFrame:
    results_dir = Path(results_dir)
    runs = collect(results_dir)
    if runs.empty:
        raise SystemExit(f"no finished stability run under {results_dir}")
    table = summarize(runs, order or list(SETTINGS))
    write_table(table, results_dir)
    for task, g in runs.groupby("task"):
        plot_health([(f"{r.setting} seed {r.seed}", Path(r.run_dir)) for r in g.itertuples()],
                    results_dir / f"health_{task}", title=f"SDFT health on {task}")
    return table


def main(argv: list[str] | None = None) -> None:
    section.main(argv, experiment=EXPERIMENT, doc=__doc__, methods=METHODS, aggregate=aggregate,
                 outputs=["stability.md", "stability.csv", "health_<task>.png (and .pdf)"],
                 add_arguments=add_arguments, adjust_grid=adjust_grid, execute_fn=execute)


if __name__ == "__main__":
    main()
