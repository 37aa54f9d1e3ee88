"""The method registry: one :class:`Method` per training method, read by the config parser, ``sdft.train``, the
experiment grids, the tables and the figures.

Each method module registers itself where it is defined (``sdft/method.py`` for SDFT, the modules of
``sdft/baselines/`` for the baselines; every module of that package is imported on the first look-up). A method of
your own is one module with a training function and one call. SFT on the short reference answer instead of the
demonstration, on the public SFT helper (``sdft.baselines.sft.build_sft_trainer``: TRL's ``SFTTrainer`` on
(student prompt, target) conversations, with this repository's checkpoints and callbacks)::

    from trl import SFTConfig

    from sdft.baselines.sft import SFT_DEFAULTS, build_sft_trainer
    from sdft.registry import Method, register_method

    def train_answer_sft(cfg, records, run_dir, resume_from_checkpoint=None):
        targets = [str(r["reference"]) for r in records]   # one target text per record
        trainer = build_sft_trainer(cfg, records, run_dir, completions=targets)
        trainer.train(resume_from_checkpoint=resume_from_checkpoint)
        return trainer, {"targets": "reference"}           # the trainer (its model is saved), facts for the manifest

    register_method(Method("answer_sft", train=train_answer_sft, config_class=SFTConfig, defaults=SFT_DEFAULTS,
                           title="Answer SFT"))

The training function gets the resolved :class:`sdft.config.RunConfig` (``cfg.training`` is an instance of
``config_class``, ``cfg.method_args`` of ``args_class``), the task's training records and the run directory.
Such a module outside the package is imported with ``--include path/to/module.py`` (``sdft.train``, ``eval.run``
and the section scripts), the config key ``include`` or ``$SDFT_INCLUDE`` (:mod:`sdft.plugins`);
``examples/my_plugin.py`` is a complete task and method.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from sdft.errors import UserError

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
    eval_variant: str = "student"
    """The prompt the method's model is evaluated with (``eval.evaluation.VARIANTS``): ``student`` (the query
    alone, every trained method's) or ``rag`` (the question's source text before it: Oracle RAG, Table 1)."""
    description: str = ""


class UnknownName(UserError, KeyError):
    """A name no registry entry has; its message (not quoted, unlike a ``KeyError``'s) names it, the known names and
    how to add one of your own."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class Registry(dict):
    """Name -> entry (a ``Method`` or a ``data_prep.registry.Task``), filled by :meth:`register`; the repository's
    own entries (and the plugins of ``$SDFT_INCLUDE``) are imported on the first look-up."""

    def __init__(self, kind: str, load_builtins: Callable[[], None]):
        super().__init__()
        self.kind, self._load_builtins, self._loaded = kind, load_builtins, False

    def register(self, entry, replace: bool = False):
        """Add ``entry`` under ``entry.name``; another entry under a registered name is an error unless ``replace``."""
        if entry.name in self and not replace and self[entry.name] != entry:
            raise ValueError(f"{self.kind} {entry.name!r} is registered already")
        self[entry.name] = entry
        return entry

    def lookup(self, name: str):
        self.load_builtins()
        if name not in self:
            from sdft.plugins import HINT

            raise UnknownName(f"unknown {self.kind} {name!r}; known {self.kind}s: {sorted(self)}; a {self.kind} of "
                              f"your own: {HINT}")
        return self[name]

    def names(self) -> list[str]:
        self.load_builtins()
        return list(self)

    def load_builtins(self) -> None:
        """The repository's own entries, then the plugins of ``$SDFT_INCLUDE`` (:mod:`sdft.plugins`), once."""
        if not self._loaded:
            from sdft.plugins import import_env_plugins

            self._loaded = True
            self._load_builtins()
            import_env_plugins()


def _load_builtin_methods() -> None:
    from transformers import TrainingArguments

    register_method(Method(
        "base", train=None, config_class=TrainingArguments, title="Base",
        style={"color": "#7f7f7f", "marker": "o"}, description="the untrained model, evaluated only",
    ))
    register_method(Method(
        "rag", train=None, config_class=TrainingArguments, title="Oracle RAG", eval_variant="rag",
        style={"color": "#17becf", "marker": "P"},
        description="the untrained model with the question's source text in its prompt, evaluated only (Table 1)",
    ))
    importlib.import_module("sdft.method")
    package = importlib.import_module("sdft.baselines")
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"sdft.baselines.{info.name}")


METHODS = Registry("method", _load_builtin_methods)
register_method = METHODS.register
get_method = METHODS.lookup
method_names = METHODS.names
