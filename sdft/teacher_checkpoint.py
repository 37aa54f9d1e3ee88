"""The SDFT teacher's weights in a checkpoint: written beside the student's, read back on resume.

A run whose teacher is not the student itself -- a separate copy (``ema`` / ``base``) or the EMA teacher's adapter
beside a LoRA student's -- keeps it in ``TEACHER_WEIGHTS_FILE`` of every checkpoint, written before the checkpoint
is marked complete (``sdft.checkpoints``), so that a resumed run continues with the same teacher. Resuming a
checkpoint without it is an error (``teacher_file``), never a silent restart of the teacher.
"""

from __future__ import annotations

from pathlib import Path

import torch

from sdft.adapters import adapter_state, load_adapter_state
from sdft.distributed import gathered, weights_sharded

TEACHER_WEIGHTS_FILE = "teacher_model.safetensors"


def save_teacher_adapter(model, adapter: str, folder: Path, should_save: bool) -> None:
    """The teacher adapter's weights (PEFT's adapter form), written by the process with ``should_save``."""
    if should_save:
        from safetensors.torch import save_file

        save_file(adapter_state(model, adapter), str(Path(folder) / TEACHER_WEIGHTS_FILE))


def save_teacher_model(accelerator, teacher_model, folder: Path, should_save: bool) -> None:
    """The separate teacher's weights. Every process takes part in ``accelerator.get_state_dict`` (under ZeRO-3 /
    FSDP it gathers the teacher's shards; otherwise it is the unwrapped teacher's state dict); the process with
    ``should_save`` writes the file."""
    full = accelerator.get_state_dict(teacher_model)
    if should_save:
        from safetensors.torch import save_file

        state = {k: v.detach().contiguous().cpu() for k, v in full.items()}
        save_file(untie(state), str(Path(folder) / TEACHER_WEIGHTS_FILE))


def teacher_file(checkpoint) -> Path:
    """The checkpoint's teacher weights; a checkpoint without them is an error."""
    path = Path(checkpoint) / TEACHER_WEIGHTS_FILE
    if not path.exists():
        raise FileNotFoundError(f"{checkpoint} has no {TEACHER_WEIGHTS_FILE}: resuming it would train against "
                                "a teacher that is not the checkpoint's")
    return path


def load_teacher_adapter(model, adapter: str, checkpoint) -> None:
    """The teacher adapter's weights from ``checkpoint``."""
    from safetensors.torch import load_file

    load_adapter_state(model, adapter, load_file(str(teacher_file(checkpoint))))


def load_teacher_model(teacher, checkpoint, main_process: bool) -> None:
    """The separate teacher's weights from ``checkpoint`` into the unwrapped ``teacher``. A ZeRO-3 teacher is
    gathered, loaded on the main process and partitioned again (every process takes part)."""
    from safetensors.torch import load_file

    path = teacher_file(checkpoint)
    sharded = weights_sharded()
    with gathered(teacher, sharded, modifier_rank=0):
        if not sharded or main_process:
            device = str(next(teacher.parameters()).device)
            teacher.load_state_dict(load_file(str(path), device=device), strict=False)


def untie(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses shared storage (tied embeddings): store independent copies."""
    seen, out = {}, {}
    for k, v in state.items():
        ptr = v.data_ptr()
        out[k] = v.clone() if ptr in seen else v
        seen[ptr] = k
    return out
