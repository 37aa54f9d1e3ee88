"""One configuration system for every method, task and experiment, on TRL's own parser.

A run is a :class:`RunConfig` of four dataclasses, parsed together by ``trl.TrlParser`` (transformers'
``HfArgumentParser``), so every field of the method's trainer config -- all of ``TrainingArguments`` and TRL's
trainer options -- is a command-line and recipe key, under its own name:

  * :class:`ScriptArguments` -- what to run: method, task, model, preset, data;
  * ``sdft.adapters.AdapterArguments`` -- LoRA / QLoRA: TRL's ``ModelConfig`` fields of the adapter (``use_peft``,
    ``lora_r``, ``load_in_4bit``, ...; the rest of ``ModelConfig`` clashes with keys we have) and ``merge``;
  * the method's own knobs (``Method.args_class``, e.g. ``reinvoke_steps``), when it has any;
  * the method's trainer config (``Method.config_class``: ``SelfDistillationConfig``, ``trl.SFTConfig``, ...).

Values come from these layers, later ones winning:
  1. the dataclass defaults, the machine (``use_cpu`` without CUDA), the method's defining values (``Method.defaults``),
  2. the preset (``sdft/presets/<preset>.yaml``: ``common`` keys, then the method's block under ``methods``),
  3. the task's values inside that preset (the preset's ``tasks`` block, e.g. the paper's 1024-token knowledge
     rollouts),
  4. a YAML recipe (``--config recipe.yaml``; ``experiments/recipes/``),
  5. the command line: ``key=value`` (the value read as YAML) and ``--key value`` (argparse; wins over ``key=value``).

``include`` (plugins: a task or method of your own, ``sdft.plugins``) is the one key whose layers add up: the
modules of ``$SDFT_INCLUDE``, the preset, the recipe and the command line are all imported, before the method and
task are looked up, and all recorded.

Presets: ``smoke`` (a tiny random Llama, seconds, for tests and CI), ``mini`` (SmolLM2-135M-Instruct on the embedded
tasks, the offline CPU default, minutes) and ``paper`` (Qwen2.5-7B-Instruct with the paper's settings, GPUs).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import yaml

from data_prep.registry import get_task
from data_prep.task import Task
from eval.config import EvalConfig, build_eval_config
from sdft.config_layers import check_choices, dataclass_parser, load_preset, plain
from sdft.errors import ConfigError
from sdft.method import Method
from sdft.plugins import as_list, env_specs, import_plugins, merge
from sdft.registry import get_method
from sdft.run_io import read_yaml
from sdft.validation import SourceError, SourceProblem, validate_sources
from sdft.validation import task_problem as task_problem_of

# Names accepted for a field under another name. transformers 5 folded ``warmup_ratio`` into ``warmup_steps``
# (a value below 1 is a fraction of the training steps); recipes written for older versions still use it.
ALIASES = {"warmup_ratio": "warmup_steps"}


@dataclass
class ScriptArguments:
    """What to run, and how the run directory is kept. Training knobs live in the method's trainer config."""

    method: str = field(default="sdft", metadata={"help": "a registered method (sdft.registry): sdft, sft, dft, "
                                                          "reinvoke, cpt, offline_distill, sft_from_teacher, ..."})
    task: str = field(default="embedded_tool", metadata={"help": "a registered task (data_prep.registry)"})
    model: str = field(default="embedded:tiny-llama", metadata={"help": "HF id, local path or embedded:NAME"})
    preset: Literal["smoke", "mini", "paper"] = field(
        default="smoke", metadata={"help": "smoke (tests, seconds) | mini (CPU, minutes) | paper (GPUs)"})
    include: list[str] = field(
        default_factory=list,
        metadata={"help": "plugins imported before the method and task are looked up (sdft.plugins): dotted module "
                  "names, .py files or directories; a run records them (paths absolute) with those of $SDFT_INCLUDE, "
                  "and eval.run on its directory imports them again. On the command line: --include (repeatable)"})
    data_dir: str | None = field(default=None, metadata={"help": "local mirror of the task data (offline clusters)"})
    n_train: int | None = field(default=None, metadata={"help": "cap on the number of training records"})
    skip_invalid: bool = field(default=False, metadata={"help": "skip malformed raw records of the task data instead "
                                                                "of stopping (counted in splits.json)"})
    save_model: bool = field(default=True, metadata={"help": "write the final model to <output_dir>/model"})
    keep_checkpoints: bool = field(
        default=False, metadata={"help": "keep <output_dir>/checkpoints after the run completes (default: delete "
                                         "them once model/ is written; they hold the optimizer and the teacher)"})
    checkpoint_selection: Literal["best_val", "final"] = field(
        default="best_val",
        metadata={"help": "best_val (the paper's protocol, Appendix B.1): evaluate the validation split every "
                  "selection_steps steps during training, keep the best model in <output_dir>/best_model and report "
                  "its test result, the final model's beside it (sdft.selection); final: report the final model"})
    selection_steps: int | None = field(
        default=None, metadata={"help": "optimizer steps between the validation evaluations of best_val (and at "
                                        "the last step); default: save_steps"})
    selection_records: int | None = field(
        default=None, metadata={"help": "validation records per evaluation of best_val (default: the whole split)"})
    stop_on_collapse: bool = field(
        default=False, metadata={"help": "stop training when the collapse rule fires (sdft.health: rollouts that "
                                         "all open alike with a collapsed entropy, or one greedy answer to half the "
                                         "validation items); the rule always warns and writes health.json"})


@dataclass
class RunConfig:
    """The parsed configuration of one run.

    ``cfg.script``, ``cfg.adapter``, ``cfg.method_args`` and ``cfg.training`` are the dataclasses; ``cfg.<name>``
    reads a field of whichever holds it (the parser guarantees each name is in one of them). The run directory is
    ``cfg.output_dir``; the trainer writes its checkpoints to ``<output_dir>/checkpoints``.
    """

    script: ScriptArguments
    training: Any  # the method's config_class instance (a TrainingArguments)
    method_args: Any | None = None
    adapter: Any | None = None  # sdft.adapters.AdapterArguments
    origins: dict[str, str] = field(default_factory=dict, compare=False, repr=False)
    """key -> the layer its value came from (``build_config``); a key absent here has its field's default."""
    method_spec: Method | None = field(default=None, compare=False, repr=False)
    """The registered method ``method`` names, resolved once (``build_config``): what trains the run."""
    task_spec: Task | None = field(default=None, compare=False, repr=False)
    """The registered task ``task`` names, resolved once (``build_config``): its records, scorer, judge."""
    evaluation: EvalConfig | None = field(default=None, compare=False, repr=False)
    """How the run's model is evaluated (``build_config``: the preset's ``eval:`` block with the run's seed, data,
    the method's prompt and teacher template): the validation evaluations of ``checkpoint_selection=best_val``."""

    def __post_init__(self):
        if self.adapter is None:
            from sdft.adapters import AdapterArguments

            self.adapter = AdapterArguments()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("script", "training", "method_args", "adapter", "origins", "method_spec",
                                              "task_spec", "evaluation"):
            raise AttributeError(name)
        for part in (self.script, self.adapter, self.method_args, self.training):
            if part is not None and name in _field_names(type(part)):
                return getattr(part, name)
        raise AttributeError(f"{type(self).__name__} of method {self.script.method!r} has no field {name!r}")

    def parts(self) -> list[Any]:
        return [p for p in (self.script, self.adapter, self.method_args, self.training) if p is not None]

    def to_dict(self) -> dict[str, Any]:
        """Every field of the parts, flat (the form of ``config.yaml`` and of recipes)."""
        out: dict[str, Any] = {}
        for part in self.parts():
            values = part.to_dict() if hasattr(part, "to_dict") else dataclasses.asdict(part)
            out.update({k: plain(v) for k, v in values.items() if k in _field_names(type(part))})
        return out

    def field_defaults(self) -> dict[str, Any]:
        """The dataclass default of every field that has one, flat like ``to_dict``: the value a run made before
        a field existed behaved as (``sdft.run_dir`` counts such a key, absent from an old lock, as unchanged)."""
        out: dict[str, Any] = {}
        for part in self.parts():
            for f in fields(type(part)):
                if f.default is not dataclasses.MISSING:
                    out[f.name] = plain(f.default)
                elif f.default_factory is not dataclasses.MISSING:
                    out[f.name] = plain(f.default_factory())
        return out

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    def trainer_args(self, output_dir: str | Path, **changes: Any):
        """A copy of the trainer config writing to ``output_dir`` (a run's checkpoint folder), with ``changes``.

        A shallow copy with attributes set, not a new instance: the config's ``__post_init__`` derived values (e.g.
        TRL's generation batch size) stay as they are, and none of them depends on ``output_dir``.
        """
        args = copy.copy(self.training)
        for name, value in {"output_dir": str(output_dir), **changes}.items():
            if name not in _field_names(type(args)):
                raise ValueError(f"{type(args).__name__} has no field {name!r}")
            setattr(args, name, value)
        return args


def _field_names(cls: type) -> frozenset[str]:
    return frozenset(f.name for f in fields(cls))


# ------------------------------------------------------------------------------------------------ layers
def load_recipe(path: str | Path) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """A YAML recipe: config keys, plus an optional ``sweep:`` mapping of key -> list of values (Tables 3-4).

    ``python -m sdft.train --config`` uses the config keys; the experiment drivers expand the sweep. Keys are checked
    against the method's fields when the recipe is used (``build_config``).
    """
    values = read_yaml(path) or {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping of config keys to values")
    sweep = values.pop("sweep", None) or {}
    if not isinstance(sweep, dict) or not all(isinstance(v, list) and v for v in sweep.values()):
        raise ConfigError(f"{path}: 'sweep' must map config keys to non-empty lists of values")
    return _resolve_aliases(values, str(path)), _resolve_aliases(sweep, f"{path} (sweep)")


def _resolve_aliases(values: dict[str, Any], where: str) -> dict[str, Any]:
    out = dict(values)
    for alias, name in ALIASES.items():
        if alias in out:
            if name in out:
                raise ConfigError(f"{where}: give {name!r} or its alias {alias!r}, not both")
            out[name] = out.pop(alias)
    return out


def parser_for(method: str):
    """The parser of one method's fields (``python -m sdft.train --method M --help`` prints its help)."""
    from sdft.adapters import AdapterArguments

    spec = get_method(method)
    return dataclass_parser([ScriptArguments, AdapterArguments, *([spec.args_class] if spec.args_class else []),
                    spec.config_class])


def config_keys(method: str) -> frozenset[str]:
    """Every key a run of ``method`` accepts (its parser's destinations)."""
    return frozenset(a.dest for a in parser_for(method)._actions if a.dest != "help")


def build_config(
    preset: str | None = None,
    method: str | None = None,
    recipe: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    argv: list[str] | None = None,
    require_output_dir: bool = False,
) -> RunConfig:
    """Resolve a :class:`RunConfig` from the layers of the module docstring.

    ``overrides`` are ``key=value`` pairs (already YAML-parsed), ``argv`` the ``--key value`` tokens. The method,
    preset and task are read from the command line, then the recipe, then the defaults, before the rest is parsed.
    Without an ``output_dir`` in any layer the run directory is ``runs/<task>/<method>/<preset>-seed<seed>``, or,
    with ``require_output_dir``, a ``ValueError`` (the command line's rule). The data sources of the result are
    checked last (``sdft.validation.validate_sources``: task, model, data_dir, reinvoke_prompts, ...), reading and
    downloading nothing; a bad one is a ``SourceError`` (a ``ValueError``) naming the key, the value and its layer.
    """
    overrides = _resolve_aliases(dict(overrides or {}), "command line")
    argv = [f"--{ALIASES[a[2:]]}" if a.startswith("--") and a[2:] in ALIASES else a for a in argv or []]
    recipe_values = load_recipe(recipe)[0] if recipe is not None else {}
    preset = overrides.get("preset") or preset or recipe_values.get("preset") or "smoke"
    values = load_preset(preset)
    include = import_layers_plugins([(f"preset {preset!r}", values["common"]), (str(recipe), recipe_values),
                                     ("command line", overrides)])
    method = overrides.get("method") or method or recipe_values.get("method") or "sdft"
    spec = get_method(method)
    per_method = values["methods"].get(method) or {}
    task = overrides.get("task") or recipe_values.get("task") or per_method.get("task") or values["common"].get("task")
    task = task or ScriptArguments.task
    task_problem = task_problem_of(task)
    if task_problem:  # before the task's preset values are read
        where = next((w for w, layer in ((("command line", overrides), (str(recipe), recipe_values),
                                          (f"preset {preset!r}, method {method!r}", per_method),
                                          (f"preset {preset!r}", values["common"])))
                      if layer.get("task")), "default")
        raise SourceError([SourceProblem("task", task, where, task_problem)], method)

    parser = parser_for(method)
    known = {action.dest for action in parser._actions}
    task_spec = get_task(task)
    in_preset = values["tasks"].get(task) or {}
    task_values = {k: v for k, v in (in_preset.get("common") or {}).items() if k in known}
    task_values.update((in_preset.get("methods") or {}).get(method) or {})
    layers = [
        ("this machine", {"use_cpu": not _cuda_available()}),
        (f"method {method!r} defaults", dict(spec.defaults)),
        (f"preset {preset!r}", values["common"]),
        (f"preset {preset!r}, method {method!r}", per_method),
        (f"task {task!r} in preset {preset!r}", task_values),
        (str(recipe), recipe_values),
        ("command line", overrides),
    ]
    for where, layer in layers:
        unknown = sorted(set(layer) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown config keys {unknown} for method {method!r}; "
                             f"see `python -m sdft.train --method {method} --help-config`")
        parser.set_defaults_with_config(**layer)
    parser.set_defaults_with_config(method=method, preset=preset, task=task, include=include)
    try:
        parts = parser.parse_args_into_dataclasses(args=argv)
    except ValueError as err:
        raise ConfigError(f"config of method {method!r}: {err}") from None
    script, adapter, *rest = parts
    cfg = RunConfig(script=script, training=rest[-1], method_args=rest[0] if len(rest) == 2 else None,
                    adapter=adapter, origins=_origins(layers, argv), method_spec=spec, task_spec=task_spec)
    check_choices(parser, cfg)
    if not _given("output_dir", [layer for _, layer in layers], argv):
        default = f"runs/{cfg.task}/{cfg.method}/{cfg.preset}-seed{cfg.seed}"
        if require_output_dir:
            raise ConfigError(f"no run directory given: pass --output-dir DIR (for example --output-dir {default})")
        cfg.training.output_dir = default
    cfg.evaluation = build_eval_config({"preset": preset, "seed": cfg.seed, "data_dir": cfg.data_dir,
                                        "variant": spec.eval_variant,
                                        "template": getattr(cfg, "teacher_template", None) or None})
    validate_sources(cfg, cfg.origins, unset="default")
    from sdft.adapters import adapter_problems

    problems = adapter_problems(cfg, cfg.origins)
    if problems:  # QLoRA without a GPU, ...: before anything is loaded
        raise ConfigError(f"config of method {method!r}: " + "; ".join(problems))
    return cfg


def import_layers_plugins(layers: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Import the plugins (``sdft.plugins``) of ``$SDFT_INCLUDE`` and of the ``include`` key of every layer; return
    them all, normalized, in that order: the ``include`` value a run records (the union, not the last layer's)."""
    specs = merge(env_specs(), *(as_list(layer.get("include"), f"{where}: include") for where, layer in layers))
    import_plugins(specs)
    return specs


def _origins(layers: list[tuple[str, dict[str, Any]]], argv: list[str]) -> dict[str, str]:
    """key -> the layer its value came from (the last one that sets it; ``--key value`` tokens are the command
    line's), for error messages."""
    origins: dict[str, str] = {}
    for where, layer in layers:
        origins.update(dict.fromkeys(layer, where))
    for token in argv:
        if token.startswith("--"):
            origins[token[2:].split("=", 1)[0].replace("-", "_")] = "command line"
    return origins


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _given(name: str, layers: list[dict[str, Any]], argv: list[str]) -> bool:
    flags = {f"--{name}", f"--{name.replace('_', '-')}"}
    return any(name in layer for layer in layers) or any(a.split("=", 1)[0] in flags for a in argv)


def describe_fields(method: str = "sdft", cfg: RunConfig | None = None) -> str:
    """Every config key of a method with its meaning (``python -m sdft.train --help-config``): with ``cfg`` (a
    resolved config), the value each key resolves to and the layer it came from (``RunConfig.origins``); without,
    the field's default."""
    from sdft.adapters import AdapterArguments

    spec = get_method(method)
    groups = [("script", ScriptArguments), ("adapters (LoRA / QLoRA: trl.ModelConfig's fields, and merge)",
                                            AdapterArguments),
              *([("method", spec.args_class)] if spec.args_class else []),
              (f"trainer ({spec.config_class.__module__}.{spec.config_class.__name__})", spec.config_class)]
    values = cfg.to_dict() if cfg is not None else {}
    lines = [f"method {method!r}, preset {cfg.preset!r}, task {cfg.task!r}: each key's value and where it came from "
             "(the layers of sdft/config.py)" if cfg is not None else
             f"method {method!r}: each key's default (add --preset, --task or --config to see what they resolve to)"]
    for title, cls in groups:
        lines.append(f"{title}:")
        for f in fields(cls):
            if not f.init:
                continue
            help_text = " ".join(str(f.metadata.get("help", "")).split())
            if cfg is not None and f.name in values:
                where = cfg.origins.get(f.name, "default")
                lines.append(f"  {f.name} = {values[f.name]!r} ({where}): {help_text}")
                continue
            default = f.default if f.default is not dataclasses.MISSING else None
            if f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            default = spec.defaults.get(f.name, default)
            lines.append(f"  {f.name} (default {plain(default)!r}): {help_text}")
    return "\n".join(lines)
