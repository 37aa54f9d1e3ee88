"""The TRL / transformers methods SelfDistillationTrainer overrides: all listed in ``sdft.trainer.OVERRIDDEN_HOOKS``,
each still defined where the table says, with the signature it had under the checked versions. A TRL or
transformers upgrade that renames, moves or re-signs one of them fails here, before it silently bypasses an override.
"""

import importlib
import inspect

import pytest

from sdft.trainer import OVERRIDDEN_HOOKS, SelfDistillationTrainer

# The signatures (annotations left out) under sdft.trainer.CHECKED_VERSIONS: trl 1.16.0, transformers 5.17.0.
SIGNATURES = {
    "trl.experimental.sdft.sdft_trainer.SDFTTrainer.__init__":
        "(self, model, args=None, train_dataset=None, eval_dataset=None, processing_class=None, callbacks=None, "
        "optimizers=(None, None), peft_config=None)",
    "trl.experimental.sdft.sdft_trainer.SDFTTrainer.compute_loss":
        "(self, model, inputs, return_outputs=False, num_items_in_batch=None)",
    "trl.experimental.sdft.sdft_trainer.SDFTTrainer.training_step": "(self, model, inputs, num_items_in_batch)",
    "trl.experimental.sdft.sdft_trainer.SDFTTrainer._forward_logits":
        "(self, model, input_ids, attention_mask, logits_to_keep)",
    "trl.experimental.sdft.sdft_trainer.SDFTTrainer._generate": "(self, prompt_ids)",
    "trl.experimental.sdft.sdft_trainer.SDFTTrainer.sample_rollouts": "(self, inputs)",
    "trl.experimental.sdft.sdft_trainer.SDFTTrainer._setup_teacher_model": "(self)",
    "trl.experimental.sdft.sdft_trainer.SDFTTrainer._get_train_sampler": "(self, dataset=None)",
    "trl.experimental.sdft.sdft_trainer.SDFTTrainer.log": "(self, logs, start_time=None)",
    "transformers.trainer.Trainer.autocast_smart_context_manager": "(self, cache_enabled=True)",
    "transformers.trainer.Trainer._save": "(self, output_dir=None, state_dict=None)",
    "transformers.trainer.Trainer._save_checkpoint": "(self, model, trial)",
    "transformers.trainer.Trainer._load_from_checkpoint": "(self, resume_from_checkpoint, model=None)",
    "transformers.trainer.Trainer._load_optimizer_and_scheduler": "(self, checkpoint)",
}
# TRL's private methods the trainer calls without overriding them, and what it relies on them for.
CALLED = {
    "trl.experimental.sdft.sdft_trainer.SDFTTrainer._get_teacher_context_for_self_distillation":
        "(self)",  # the teacher's weights of a LoRA student without a teacher adapter (_teacher_weights)
    "trl.experimental.sdft.sdft_trainer.SDFTTrainer._log_self_distillation_metric":
        "(self, mode, value)",  # the logged divergence (_log_divergence)
    "trl.experimental.sdft.sdft_trainer.SDFTTrainer._get_completion_ids_list":
        "(self, batch)",  # the rollouts' health (_log_rollout_health)
    "trl.experimental.sdft.sdft_trainer.SDFTTrainer._prepare_inputs":
        "(self, generation_batch)",  # the step's batch (training_step, one rollout at a time)
}


def _defining_class(qualified: str):
    module, cls, _ = qualified.rsplit(".", 2)
    return getattr(importlib.import_module(module), cls)


def _plain_signature(function) -> str:
    sig = inspect.signature(function)
    params = [p.replace(annotation=inspect.Parameter.empty) for p in sig.parameters.values()]
    return str(sig.replace(parameters=params, return_annotation=inspect.Signature.empty))


def test_every_listed_hook_has_a_recorded_signature():
    assert sorted(OVERRIDDEN_HOOKS) == sorted(SIGNATURES)
    assert all(isinstance(why, str) and why for why in OVERRIDDEN_HOOKS.values())


@pytest.mark.parametrize("qualified", sorted({**SIGNATURES, **CALLED}))
def test_the_parent_still_defines_the_hook_with_its_recorded_signature(qualified):
    cls, name = _defining_class(qualified), qualified.rsplit(".", 1)[1]
    assert name in vars(cls), f"{cls.__qualname__} no longer defines {name}"
    assert _plain_signature(vars(cls)[name]) == {**SIGNATURES, **CALLED}[qualified]


def test_the_table_lists_every_override_and_nothing_else():
    """Every method defined on the trainer or its own mixins (sdft.*) that a TRL / transformers class in its MRO also
    defines is in OVERRIDDEN_HOOKS, under the nearest such class (the one ``super()`` reaches); every entry is one."""
    mro = SelfDistillationTrainer.__mro__
    ours = [c for c in mro if c.__module__.startswith("sdft.")]
    theirs = [c for c in mro if not c.__module__.startswith("sdft.") and c is not object]
    found = set()
    for cls in ours:
        for name, value in vars(cls).items():
            if not inspect.isfunction(value):
                continue
            parents = [p for p in theirs if name in vars(p)]
            if parents:
                found.add(f"{parents[0].__module__}.{parents[0].__qualname__}.{name}")
    assert found == set(OVERRIDDEN_HOOKS)
    assert {c.__name__ for c in ours} == {"SelfDistillationTrainer", "TimedSteps", "CompleteCheckpoints"}  # no other


def test_the_called_private_methods_are_not_overridden():
    for qualified in CALLED:
        name = qualified.rsplit(".", 1)[1]
        assert getattr(SelfDistillationTrainer, name) is vars(_defining_class(qualified))[name]
