"""The method registry: one :class:`Method` per training method, read by the config parser, ``sdft.train``, the
experiment grids, the tables and the figures.

The repository's own methods are defined where they are trained (``sdft/self_distillation.py`` for SDFT, the
modules of ``sdft/baselines/`` for the baselines, each listing its ``METHODS``) and registered here on the first
look-up; they import nothing of this module. A method of your own is one module with a training function and one
call. SFT on the short reference answer instead of the
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

from sdft.method import Method
from sdft.plugins import Registry


def _builtin_methods() -> list[Method]:
    """The repository's methods, in the order they are listed: the two evaluated only, SDFT, the baselines.
    The modules are imported here, on the first look-up, not with this module: they import torch and TRL."""
    from transformers import TrainingArguments

    from sdft import self_distillation
    from sdft.baselines import cpt, offline, reinvoke, sft

    evaluated_only = [
        Method("base", train=None, config_class=TrainingArguments, title="Base",
               style={"color": "#7f7f7f", "marker": "o"}, description="the untrained model, evaluated only"),
        Method("rag", train=None, config_class=TrainingArguments, title="Oracle RAG", eval_variant="rag",
               style={"color": "#17becf", "marker": "P"},
               description="the untrained model with the question's source text in its prompt, evaluated only "
                           "(Table 1)"),
    ]
    return [*evaluated_only, *self_distillation.METHODS,
            *(m for module in (cpt, offline, reinvoke, sft) for m in module.METHODS)]


METHODS = Registry("method", _builtin_methods)
register_method = METHODS.register
get_method = METHODS.lookup
method_names = METHODS.names

__all__ = ["METHODS", "Method", "get_method", "method_names", "register_method"]
