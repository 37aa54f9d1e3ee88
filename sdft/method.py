"""What a training method is to the rest of the repository: a :class:`Method`, the entry of the method registry
(``sdft.registry``, where the repository's own are listed and a method of your own is registered)."""

from __future__ import annotations

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
    eval_variant: str = "student"
    """The prompt the method's model is evaluated with (``eval.evaluation.VARIANTS``): ``student`` (the query
    alone, every trained method's) or ``rag`` (the question's source text before it: Oracle RAG, Table 1)."""
    description: str = ""
