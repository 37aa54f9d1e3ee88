"""Token sequences of different lengths: end tokens, padding into tensors, positions of left-padded rows.

Conventions shared by training, the baselines and evaluation: prompts are padded on the left (generation appends
to the right end of every row), completions on the right (they start at the same column); a completion ends at its
first end-of-sequence token, which it keeps.
"""

from __future__ import annotations

from typing import Sequence

import torch


def eos_token_ids(model, tokenizer) -> list[int]:
    """The ids that end a generation: the model's generation config's EOS id(s) and the tokenizer's, sorted."""
    ids = set()
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    elif eos:
        ids.update(eos)
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return sorted(ids)


def lengths_to_first_eos(token_ids: torch.Tensor, eos_token_ids: Sequence[int]) -> tuple[list[int], list[bool]]:
    """For every row of ``token_ids`` ``[B, n]``: its length up to and including its first EOS (``n`` when it has
    none), and whether it has one."""
    is_eos = torch.isin(token_ids, torch.tensor(list(eos_token_ids), device=token_ids.device))
    after_first = (is_eos.int().cumsum(dim=1) - is_eos.int()) > 0
    lengths = token_ids.size(1) - after_first.sum(dim=1)
    return lengths.tolist(), is_eos.any(dim=1).tolist()


def pad_sequences(rows: Sequence[Sequence[int | float]], padding_value: int | float, side: str,
                  dtype: torch.dtype = torch.long) -> tuple[torch.Tensor, torch.Tensor]:
    """``rows`` as one ``[len(rows), longest]`` tensor padded on ``side`` (``"left"`` or ``"right"``) with
    ``padding_value``, and its mask (``torch.long``, 1 on the rows' own entries)."""
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    width = max(len(row) for row in rows)
    values = torch.full((len(rows), width), padding_value, dtype=dtype)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if len(row):
            columns = slice(width - len(row), width) if side == "left" else slice(0, len(row))
            values[i, columns] = torch.tensor(list(row), dtype=dtype)
            mask[i, columns] = 1
    return values, mask


def left_padded_position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids of left-padded rows: every row's first real token is at position 0 (as HF ``generate`` counts)."""
    return (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)
