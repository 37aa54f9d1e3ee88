"""The method registry: one :class:`Method` per training method, read by the config parser, ``sdft.train``, the
experiment grids, the tables and the figures.

Each method module registers itself where it is defined (``sdft/method.py`` for SDFT, the modules of
``sdft/baselines/`` for the baselines; every module of that package is imported on the first look-up). A method of
your own is one module with a training function and one call::

    from sdft.registry import Method, register_method

    def train_mine(cfg, records, run_dir, resume_from_checkpoint=None):
        trainer = ...                      # any transformers.Trainer, built from cfg.training
        trainer.train(resume_from_checkpoint=resume_from_checkpoint)
        return trainer, {"what": "ran"}    # the trainer (its model is saved) and facts for the manifest

    register_method(Method("mine", train=train_mine, config_class=SFTConfig, title="Mine"))

The training function gets the resolved :class:`sdft.config.RunConfig` (``cfg.training`` is an instance of
``config_class``, ``cfg.method_args`` of ``args_class``), the task's training records and the run directory.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

TrainFn = Callable[..., tuple[Any, dict]]  # (cfg, records, run_dir, resume_from_checkpoint) -> (trainer, info)


@dataclass(frozen=True)
class Method:
    """Everything the rest of the repository needs to know about a method."""

    name: str
    train: TrainFn | None
    """The training function; ``None`` for a method that is evaluated only (``base``: the untrained model)."""
    config_class: type
    """The trainer's config, a ``transformers.TrainingArguments`` subclass (``SelfDistillationConfig``,
    ``trl.SFTConfig``, ...): every one of its fields is a command-line and recipe key of this method."""
    title: str
    """Display title in tables and figures."""
    args_class: type | None = None
    """A dataclass of the method's own knobs that its trainer config lacks (e.g. ``reinvoke_steps``)."""
    defaults: Mapping[str, Any] = field(default_factory=dict)
    """Field values that define the method on top of its config class (e.g. DFT: ``loss_type="dft"``); the lowest
    layer of the configuration, below presets, recipes and the command line."""
    distils: bool = False
    """Trains on a divergence to a teacher: the run records which divergence ran (``divergence`` in its config,
    or the training function's ``info["divergence"]``)."""
    style: Mapping[str, Any] = field(default_factory=lambda: {"color": "black", "marker": "x"})
    """Matplotlib style of the method in figures (``color``, ``marker``)."""
    description: str = ""


METHODS: dict[str, Method] = {}
_BASELINE_PACKAGE = "sdft.baselines"
_SDFT_MODULE = "sdft.method"
_loaded = False


def register_method(method: Method, replace: bool = False) -> Method:
    """Add ``method`` to the registry; registering a name twice is an error unless ``replace``."""
    if method.name in METHODS and not replace and METHODS[method.name] != method:
        raise ValueError(f"method {method.name!r} is registered already")
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    _load_builtin_methods()
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; known methods: {sorted(METHODS)}")
    return METHODS[name]


def method_names() -> list[str]:
    _load_builtin_methods()
    return list(METHODS)


def _load_builtin_methods() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    importlib.import_module(_SDFT_MODULE)
    package = importlib.import_module(_BASELINE_PACKAGE)
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{_BASELINE_PACKAGE}.{info.name}")


def _register_base() -> None:
    from transformers import TrainingArguments

    register_method(Method(
        "base", train=None, config_class=TrainingArguments, title="Base",
        style={"color": "#7f7f7f", "marker": "o"}, description="the untrained model, evaluated only",
    ))


_register_base()
