"""lm-eval's Hugging Face model with each multiple-choice item's context run once for all its choices.

lm-eval scores a multiple-choice item as one loglikelihood request per choice, ``(context, choice)``, and
:class:`lm_eval.models.huggingface.HFLM` runs each request as a row of its own: the context goes through the
model once per choice, and the vocabulary projection and log-softmax are computed at every position although
only the continuation's are read. :class:`SharedContextHFLM` groups the requests by their context tokens. Per
group it runs the context but its last token once (the *prefix*, whose keys and values go to the model's
cache), then each continuation as one row on a copy of that cache: the last context token and the
continuation but its last token, at the positions they have in HFLM's row. Their log-probabilities score the
continuation, as in HFLM. Rows of several groups share a forward, up to ``batch_size`` rows.

Only where the attention is computed differs from HFLM (over cached keys and a padding mask, instead of one
causal pass over the whole row), so the values agree with HFLM's to float rounding and ``is_greedy`` is the same
test; ``tests/eval/test_shared_context_lm.py`` checks both against HFLM. A request that HFLM left-truncates
(context and continuation longer than ``max_length + 1`` tokens, so that its context depends on the
continuation's length) goes to HFLM's own method, as does every request of a sequence-to-sequence model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from lm_eval.models.huggingface import HFLM

# lm-eval's token-level request: ((context, continuation) strings or None, context tokens, continuation tokens)
TokenRequest = tuple[tuple[str, str] | None, list[int], list[int]]


def group_by_context(contexts: Sequence[Sequence[int]]) -> list[list[int]]:
    """Indices of equal contexts together, groups in order of first appearance, indices in order within one."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, context in enumerate(contexts):
        groups.setdefault(tuple(context), []).append(i)
    return list(groups.values())


def pack_rows(groups: Sequence[Sequence[int]], size: int) -> list[list[int]]:
    """Batches of at most ``size`` indices, whole groups together where they fit.

    Groups are taken in order; a group joins the current batch when it fits there, else opens the next one. A
    group larger than ``size`` is cut into pieces of ``size`` first (each piece runs its context again).
    """
    batches: list[list[int]] = []
    for group in groups:
        for start in range(0, len(group), size):
            piece = list(group[start:start + size])
            if batches and len(batches[-1]) + len(piece) <= size:
                batches[-1].extend(piece)
            else:
                batches.append(piece)
    return batches


def right_pad(rows: Sequence[Sequence[int]], length: int, value: int = 0) -> torch.Tensor:
    """``rows`` as one ``[len(rows), length]`` long tensor, each row padded on the right with ``value``."""
    out = torch.full((len(rows), length), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, :len(row)] = torch.tensor(row, dtype=torch.long)
    return out


class SharedContextHFLM(HFLM):
    """:class:`~lm_eval.models.huggingface.HFLM` whose loglikelihood runs each distinct context once (module
    docstring). Takes HFLM's arguments; the batch size must be a number (``auto`` sizes HFLM's batches, whose
    rows are not ours)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.batch_size, int):
            raise ValueError(f"SharedContextHFLM needs a number as batch size, not {self.batch_size!r}; give one, or "
                             "use lm-eval's HFLM (prior_loglikelihood: lm_eval)")

    def _loglikelihood_tokens(self, requests: list[TokenRequest], disable_tqdm: bool = False,
                              override_bs: int | None = None) -> list[tuple[float, bool]]:
        """``(sum of the continuation's log-probabilities, whether greedy decoding gives it)`` per request, in
        the order of ``requests``, as HFLM's method returns them."""
        if self.backend != "causal":
            return super()._loglikelihood_tokens(requests, disable_tqdm, override_bs)
        fits = [i for i, (_, ctx, cont) in enumerate(requests) if len(ctx) + len(cont) <= self.max_length + 1]
        fitting = set(fits)
        truncated = [i for i in range(len(requests)) if i not in fitting]
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        if truncated:
            for i, answer in zip(truncated, super()._loglikelihood_tokens(
                    [requests[i] for i in truncated], disable_tqdm, override_bs), strict=True):
                results[i] = answer
        groups = [[fits[j] for j in group] for group in group_by_context([requests[i][1] for i in fits])]
        groups.sort(key=lambda g: -len(requests[g[0]][1]))  # longest contexts first: less padding per batch
        for batch in pack_rows(groups, override_bs or self.batch_size):
            for i, answer in zip(batch, self._score_batch([requests[i] for i in batch]), strict=True):
                results[i] = answer
                if requests[i][0] is not None:
                    self.cache_hook.add_partial("loglikelihood", requests[i][0], answer)
        return results

    def _score_batch(self, requests: list[TokenRequest]) -> list[tuple[float, bool]]:
        """Score requests that need no truncation: each distinct context's prefix once, then one row per request
        on a copy of its prefix's cache."""
        contexts = group_by_context([ctx for _, ctx, _ in requests])
        context_of = torch.empty(len(requests), dtype=torch.long)
        for k, group in enumerate(contexts):
            context_of[group] = k
        prefixes = [requests[group[0]][1][:-1] for group in contexts]
        prefix_len = torch.tensor([len(p) for p in prefixes])[context_of]  # per row
        width = max(len(p) for p in prefixes)
        rows = [ctx[-1:] + cont[:-1] for _, ctx, cont in requests]
        length = max(len(r) for r in rows)
        inputs = {"input_ids": right_pad(rows, length).to(self.device),
                  "position_ids": (prefix_len[:, None] + torch.arange(length)).to(self.device)}
        if width:
            cache = self._forward(input_ids=right_pad(prefixes, width).to(self.device), use_cache=True,
                                  logits_to_keep=1).past_key_values
            cache.batch_select_indices(context_of.to(self.device))  # row r gets its context's keys and values
            prefix_mask = torch.arange(width)[None, :] < prefix_len[:, None]  # padding of shorter prefixes out
            inputs["attention_mask"] = torch.cat([prefix_mask, torch.ones(len(rows), length, dtype=torch.bool)],
                                                 dim=1).to(self.device)
            inputs["past_key_values"] = cache
        logprobs = F.log_softmax(self._forward(**inputs).logits, dim=-1, dtype=self.softmax_dtype)
        out = []
        for row, (_, _, cont) in zip(logprobs, requests, strict=True):
            row = row[:len(cont)]
            target = torch.tensor(cont, dtype=torch.long, device=row.device)
            greedy = bool((row.argmax(dim=-1) == target).all())
            out.append((float(row.gather(1, target[:, None]).sum()), greedy))
        return out

    def _forward(self, **inputs):
        """The model's forward as HFLM calls it: no gradients, HFLM's mixed precision."""
        with torch.no_grad(), torch.autocast(device_type=self.device.type, dtype=self.mixed_precision_dtype,
                                             enabled=self.mixed_precision_dtype is not None):
            return self.model(**inputs)
