"""The command line and the run step shared by every paper-section script (``experiments/table5.py``, ...).

A section script defines its grid (methods; its tasks on each preset are the preset file's, ``experiments.tasks``
of ``sdft/presets/<preset>.yaml``), the paper's numbers and an ``aggregate(results_dir)`` that writes its tables and
figures (with :mod:`experiments.reporting`), then hands them to :func:`main`::

    def main(argv=None):
        section.main(argv, experiment="table5", doc=__doc__, methods=METHODS, aggregate=aggregate,
                     outputs=["table5.md", "table5.csv"])
    execute = section.execute  # the run step ``experiments.run_one`` calls for a SLURM array task

A section whose grid is more than task x method x seed (Table 1's teacher contexts) passes hooks: ``add_arguments``
(its own options), ``adjust_grid`` (the specs, changed), ``describe`` (lines printed with the grid, also on
``--dry-run``: e.g. a judge-call estimate) and ``preflight`` (run once before the local runs: e.g. the teacher view).

``--include MODULE_OR_PATH`` (repeatable; ``sdft.plugins``) imports a task or method of your own before the grid is
built: its names are valid in ``--tasks`` and ``--methods`` (a section takes any registered method beside its own),
and the specs go into every run's overrides (``include``), so the runs that ``--jobs N`` and SLURM start in other
processes (``experiments.run_one``, reading the grid file) import them too.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from experiments import grid as G
from experiments.evaluation import evaluate_run
from sdft.config_layers import load_preset, parse_overrides
from sdft.errors import reported_as_one_line
from sdft.plugins import HINT, PluginError, as_list, env_specs, import_plugins, merge
from sdft.registry import method_names
from sdft.run_io import InvalidJSONFile, apply_thread_setting

GridHook = Callable[[argparse.Namespace, list], Any]  # (parsed options, the grid's RunSpecs) -> ...
RECIPES = Path(__file__).resolve().parent / "recipes" / "qwen2.5-7b-instruct"


def execute(spec: G.RunSpec, prior: bool = True, also_tasks: dict[str, str] | None = None) -> None:
    """Train (unless the method is evaluated only) and evaluate one run; writes eval.json into its directory.
    ``prior`` and ``also_tasks``: as :func:`experiments.evaluation.evaluate_run`. ``SDFT_NUM_THREADS`` sets the
    thread count of the whole run, an evaluated-only one included."""
    apply_thread_setting()
    cfg = spec.config()
    if not G.trains(spec.method):
        Path(spec.run_dir).mkdir(parents=True, exist_ok=True)
        cfg.save(Path(spec.run_dir) / "config.yaml")
        model = cfg.model
    else:
        from sdft.train import run_training

        run_training(cfg)
        model = str(Path(spec.run_dir) / "model")
    evaluate_run(spec, cfg, model, with_validation=bool(spec.sweep_point), prior=prior, also_tasks=also_tasks)


def run_step(experiment: str) -> Callable[[G.RunSpec], None]:
    """The run step of a section: its module's ``execute`` (Table 1's evaluates no prior suite), else
    :func:`execute`."""
    import importlib

    try:
        module = importlib.import_module(f"experiments.{experiment}")
    except ModuleNotFoundError:
        return execute
    return getattr(module, "execute", execute)


def recipe_for(task: str, method: str, recipes: Path = RECIPES) -> str | None:
    """The paper preset's recipe of (task, method): ``<recipes>/<method>_<task>.yaml``, when it exists."""
    path = Path(recipes) / f"{method}_{task}.yaml"
    return str(path) if path.exists() else None


def build_parser(doc: str | None, experiment: str, methods: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true",
                        help="print the traceback of a user error too (or set SDFT_DEBUG=1)")
    parser.add_argument("--preset", choices=["smoke", "mini", "paper"], default="mini")
    parser.add_argument("--seeds", type=int, help="number of seeds (default: 1; 3 for paper)")
    parser.add_argument("--tasks", help="comma-separated task names (default: the preset's tasks)")
    parser.add_argument("--methods", help=f"comma-separated subset of {','.join(methods)}")
    parser.add_argument("--sweep", action="store_true", help="expand the recipes' sweep grid (paper preset)")
    parser.add_argument("--launcher", choices=["local", "slurm"], default="local")
    parser.add_argument("--jobs", type=int, default=1,
                        help="local launcher: runs at a time, each its own process with cores/jobs threads "
                             "(default 1: every run in this process)")
    parser.add_argument("--dry-run", action="store_true", help="print the grid (and the sbatch script) only")
    parser.add_argument("--aggregate-only", action="store_true", help="only rebuild the tables and figure")
    parser.add_argument("--results-dir", default=f"results/{experiment}")
    parser.add_argument("--force", action="store_true", help="rerun runs whose eval.json exists")
    parser.add_argument("--include", action="append", default=None, metavar="MODULE_OR_PATH",
                        help="a plugin registering a task or method of your own (repeatable): a dotted module name, "
                             "a .py file or a directory of them (sdft.plugins; also $SDFT_INCLUDE); its names are "
                             "then valid in --tasks and --methods, and every run of the grid imports it")
    parser.add_argument("--allow-code-execution", action="store_true",
                        help="also run the code benchmark of the prior suite (HumanEval, or its embedded stand-in): "
                             "it executes model-written code on this machine")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every run whose method has the key")
    return parser


def preset_tasks(experiment: str, preset: str) -> list[str]:
    """The tasks a section runs on a preset (``experiments.tasks`` of its preset file)."""
    tasks = load_preset(preset)["experiments"].get("tasks") or {}
    if experiment not in tasks:
        raise SystemExit(f"error: sdft/presets/{preset}.yaml names no tasks for {experiment} (experiments.tasks); "
                         "give --tasks")
    return list(tasks[experiment])


def preset_seeds(preset: str) -> int:
    """How many seeds a section runs on a preset when ``--seeds`` is not given (``experiments.seeds``)."""
    return int(load_preset(preset)["experiments"].get("seeds") or 1)


def preset_setting(experiment: str, preset: str, key: str) -> Any:
    """A section's own value on a preset (``experiments.settings.<experiment>.<key>`` of its preset file)."""
    values = (load_preset(preset)["experiments"].get("settings") or {}).get(experiment) or {}
    if key not in values:
        raise SystemExit(f"error: sdft/presets/{preset}.yaml has no experiments.settings.{experiment}.{key}")
    return values[key]


def build_grid(args, experiment: str, methods: Sequence[str], recipes: Path = RECIPES) -> list[G.RunSpec]:
    """The runs that the parsed options ask for (the preset's tasks, the section's methods, seeds, sweep)."""
    chosen_tasks = args.tasks.split(",") if args.tasks else preset_tasks(experiment, args.preset)
    chosen = args.methods.split(",") if args.methods else list(methods)
    unknown = [m for m in chosen if m not in methods and m not in method_names()]
    if unknown:
        raise SystemExit(f"error: unknown methods {unknown}; {experiment} compares {list(methods)} (and any other "
                         f"registered method; one of your own: {HINT})")
    seeds = list(range(args.seeds if args.seeds is not None else preset_seeds(args.preset)))
    overrides = parse_overrides(args.overrides)
    include = plugin_specs(args)
    if include:  # recorded in every run's config (and the grid file): the runs in other processes import them too
        overrides["include"] = include
    return G.expand(experiment, args.preset, chosen_tasks, chosen, seeds, args.results_dir,
                    recipe_for=(lambda t, m: recipe_for(t, m, recipes)) if args.preset == "paper" else None,
                    sweep=args.sweep, overrides=overrides,
                    eval_options={"allow_code_execution": True} if args.allow_code_execution else {})


def plugin_specs(args) -> list[str]:
    """The plugins a section's command line names (``--include`` and an ``include=`` override), normalized."""
    given = parse_overrides([o for o in args.overrides if o.split("=", 1)[0].strip() == "include"])
    return merge(as_list(given.get("include"), "command line: include"), getattr(args, "include", None) or [])


def import_section_plugins(args) -> list[str]:
    """Import the plugins of the command line (:func:`plugin_specs`) and of ``$SDFT_INCLUDE``; exits with one line
    naming the spec when one cannot be imported."""
    try:
        specs = plugin_specs(args)
        import_plugins([*env_specs(), *specs])
    except (PluginError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    return specs


def main(argv: list[str] | None, *, experiment: str, doc: str | None, methods: Sequence[str], aggregate: Callable[[Path], Any], outputs: Sequence[str],
         recipes: Path = RECIPES, add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
         adjust_grid: GridHook | None = None, describe: GridHook | None = None,
         preflight: GridHook | None = None,
         execute_fn: Callable[[G.RunSpec], None] | None = None) -> None:
    """Parse the section's command line; run its grid (locally or as a SLURM array) and ``aggregate``.

    ``execute_fn``: the run step of one spec in this process (``--jobs 1``; default :func:`run_step`); give the
    section's own ``execute`` here, as ``experiments.run_one`` calls it for ``--jobs N`` and SLURM. A user error
    (``sdft.errors``) ends it with one line naming its file or key."""
    with reported_as_one_line(argv):
        _main(argv, experiment=experiment, doc=doc, methods=methods, aggregate=aggregate,
              outputs=outputs, recipes=recipes, add_arguments=add_arguments, adjust_grid=adjust_grid,
              describe=describe, preflight=preflight, execute_fn=execute_fn)


def _main(argv, *, experiment, doc, methods, aggregate, outputs, recipes, add_arguments, adjust_grid, describe,
          preflight, execute_fn) -> None:

    parser = build_parser(doc, experiment, methods)
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)
    include = import_section_plugins(args)  # before any task or method name is looked up (titles in tables too)
    results_dir = Path(args.results_dir)
    if args.aggregate_only:
        try:
            aggregate(results_dir)
        except InvalidJSONFile as err:  # one line naming the file, not a traceback
            raise SystemExit(f"error: {err}") from None
        return
    specs = build_grid(args, experiment, methods, recipes)
    if adjust_grid is not None:
        specs = adjust_grid(args, specs)
    try:  # every recipe builds and its data sources are valid before the first run trains
        G.validate_grid(specs)
    except (ValueError, KeyError) as err:
        raise SystemExit(f"error: {err}") from None
    aggregate_cmd = G.python_module_cmd(f"experiments.{experiment}", [
        "--aggregate-only", "--results-dir", str(results_dir), *[a for spec in include for a in ("--include", spec)]])
    print(f"[{experiment}] preset {args.preset}: {G.grid_summary(specs)} -> {results_dir}", flush=True)
    if describe is not None:
        for line in describe(args, specs) or []:
            print(f"[{experiment}] {line}", flush=True)
    if args.launcher == "slurm":
        script, text = G.write_sbatch(specs, experiment, results_dir, aggregate_cmd)
        if args.dry_run:
            print(text)
            print(f"[{experiment}] grid size: {G.grid_summary(specs)}; script written to {script} (not submitted)")
        else:
            G.submit_sbatch(script)
        return
    if args.dry_run:
        for spec in specs:
            print(f"  {spec.label} -> {spec.run_dir}")
        return
    t0 = time.time()
    if args.jobs < 1:
        raise SystemExit(f"error: --jobs must be at least 1, got {args.jobs}")
    if preflight is not None:
        preflight(args, specs)
    if args.jobs == 1:  # the section's own run step, as experiments.run_one calls it for --jobs N and SLURM
        G.run_local(specs, execute_fn or run_step(experiment), force=args.force)
    else:
        try:
            G.run_parallel(specs, results_dir / "grid.json", args.jobs, force=args.force)
        except RuntimeError as err:
            raise SystemExit(f"error: {err}") from None
    aggregate(results_dir)
    listed = "".join(f"\n  {results_dir / name}" for name in outputs)
    print(f"[{experiment}] finished in {time.time() - t0:.0f}s. Outputs:{listed}", flush=True)
