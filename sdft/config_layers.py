"""What every configuration of this repository is resolved from, a run's (``sdft.config.RunConfig``) and an
evaluation's (``eval.config.EvalConfig``) alike: the preset files, ``key=value`` overrides, and the parser that reads
dataclasses from layers of values and a command line (TRL's ``TrlParser``, transformers' ``HfArgumentParser``).

A preset file ``sdft/presets/<preset>.yaml`` has five blocks: ``common`` (config keys of every method), ``methods``
(a block per method, above ``common``), ``tasks`` (a block per task, in the shape of the two above: a task's own
values on this preset, above them), ``eval`` (the evaluation's keys: ``eval.config.EvalConfig``) and
``experiments`` (the paper-section scripts': ``prior_suite``, and ``tasks``, a list per section).
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Any

import yaml

from sdft.errors import ConfigError
from sdft.run_io import read_yaml

PRESETS = ("smoke", "mini", "paper")
PRESET_DIR = Path(__file__).resolve().parent / "presets"
PRESET_BLOCKS = ("common", "methods", "tasks", "eval", "experiments")


def load_preset(preset: str) -> dict[str, Any]:
    """``{"common": {...}, "methods": {name: {...}}, "tasks": {name: {"common": {...}, "methods": {...}}},
    "eval": {...}, "experiments": {"prior_suite": ..., "tasks": {section: [...]}, "seeds": N,
    "settings": {section: {...}}}}`` of
    ``sdft/presets/<preset>.yaml``."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; expected one of {PRESETS}")
    path = PRESET_DIR / f"{preset}.yaml"
    values = read_yaml(path) or {}
    unknown = sorted(set(values) - set(PRESET_BLOCKS))
    if unknown:
        raise ConfigError(f"{path}: top-level keys must be {', '.join(map(repr, PRESET_BLOCKS))}, got {unknown}")
    return {block: values.get(block) or {} for block in PRESET_BLOCKS}


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["learning_rate=1e-5", "divergence=reverse"]`` -> dict; values parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item or item.startswith("-"):
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(value) if value != "" else None
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: the value is not a YAML value ({getattr(err, 'problem', err)})") \
                from None
    return out


def dataclass_parser(dataclass_types: list[type]):
    """TRL's ``TrlParser`` of ``dataclass_types`` (each field a ``--name value`` option, its ``help`` metadata the
    option's help; ``set_defaults_with_config(**layer)`` puts a layer of values below the command line), raising
    :class:`~sdft.errors.ConfigError` where argparse would exit, so that callers can name the layer."""
    from trl import TrlParser

    class ConfigParser(TrlParser):
        def error(self, message):
            raise ConfigError(message)

    return ConfigParser(dataclass_types)


def plain(value: Any) -> Any:
    """An enum member's value (TrainingArguments' fields are enums), any other value as it is."""
    return value.value if isinstance(value, enum.Enum) else value


def check_choices(parser, config) -> None:
    """argparse checks the choices of command-line values only; the values of ``config`` that came from YAML layers
    are checked here (an option with choices whose value is not one of them: a ``ConfigError`` naming the key)."""
    for action in parser._actions:
        if action.choices is None or not hasattr(config, action.dest):
            continue
        value = getattr(config, action.dest)
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if item is not None and plain(item) not in action.choices:
                raise ConfigError(f"config key {action.dest!r}: {item!r} is not one of {list(action.choices)}")
