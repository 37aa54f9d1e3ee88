"""What the training processes agree on: whether there are several, a flag raised on any of them, and the whole
weights of a model whose parameters DeepSpeed ZeRO-3 partitions across them."""

from __future__ import annotations

import contextlib

import torch


def several_processes() -> bool:
    """Whether this process is one of several in an initialized process group."""
    return (torch.distributed.is_available() and torch.distributed.is_initialized()
            and torch.distributed.get_world_size() > 1)


def any_process(flag: bool, device) -> bool:
    """Whether ``flag`` is true on any process (``flag`` itself with one process). Every process must call it: it is
    a one-element all-reduce (max)."""
    if not several_processes():
        return flag
    value = torch.tensor([1 if flag else 0], device=device)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item())


def weights_sharded() -> bool:
    """Whether the trained model's weights are partitioned (DeepSpeed ZeRO-3, transformers' switch for it): each
    forward of the model then needs every process, and its parameters outside a forward are empty placeholders
    until gathered (``gathered``)."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    return is_deepspeed_zero3_enabled()


def gathered(model, sharded: bool, modifier_rank: int | None = None):
    """A context in which ``model``'s parameters are whole on every process (ZeRO-3; every process must enter it);
    nothing to do when not ``sharded``. Changes made to them inside are kept only with ``modifier_rank``: that
    process's values are broadcast and partitioned again on leaving."""
    if not sharded:
        return contextlib.nullcontext()
    import deepspeed  # only under ZeRO-3: an optional dependency

    return deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=modifier_rank)
