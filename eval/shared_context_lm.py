"""lm-eval's Hugging Face model with each multiple-choice item's context run once for all its choices.

lm-eval scores a multiple-choice item as one loglikelihood request per choice, ``(context, choice)``, and
:class:`lm_eval.models.huggingface.HFLM` runs each request as a row of its own: the context goes through the
model once per choice, and the vocabulary projection and log-softmax are computed at every position although
only the continuation's are read. :class:`SharedContextHFLM` groups the requests by their context tokens and
packs each group into one row: the context, then every continuation but its last token, each continuation a
block whose positions restart where the context ends. A block-causal attention mask lets a block see the context
and its own earlier tokens only, so every token sees exactly what it sees in HFLM's row, at the same position.
The log-probabilities of a continuation are read at the context's last token and at its block, and only the
positions read go through the vocabulary projection. Up to ``batch_size`` groups share a forward.

Only the order of float operations differs from HFLM (one masked attention over a packed row instead of one
causal pass per request), so the values agree with HFLM's to float rounding and ``is_greedy`` is the same
test; ``tests/eval/test_shared_context_lm.py`` checks both against HFLM. HFLM's own method serves a request
whose row it left-truncates (context and continuation longer than ``max_length + 1`` tokens, so its context
depends on the continuation's length) or would cut with a sliding attention window, every request of a
sequence-to-sequence model, and every request when the attention implementation is neither ``sdpa`` nor
``eager`` (the two whose masks this module writes).

Its greedy generation (``generate_until`` requests: the instruction-following benchmark) decodes with
:func:`sdft.sampling.greedy_decode`, where a row leaves the batch once it has ended: at EOS, or once its decoded
text holds one of the request's stop sequences, where lm-eval cuts the text it returns. HFLM's ``generate`` goes
on with every row until all have met the same stop sequence (lm-eval's criteria stop a batch, not a row), and
lm-eval then cuts each text at its first stop sequence, so the texts returned are the same (the tokens up to each
row's stop are the same greedy tokens); the rows' tokens after their stop, which lm-eval discards, are padding here.
Sampling, mixed precision, extra generation settings and a model whose generation config turns a logits processor
on go to HFLM's method.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from lm_eval.models.huggingface import HFLM

from sdft.sampling import greedy_decode, plain_greedy

# lm-eval's token-level request: ((context, continuation) strings or None, context tokens, continuation tokens)
TokenRequest = tuple[tuple[str, str] | None, list[int], list[int]]


def group_by_context(contexts: Sequence[Sequence[int]]) -> list[list[int]]:
    """Indices of equal contexts together, groups in order of first appearance, indices in order within one."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, context in enumerate(contexts):
        groups.setdefault(tuple(context), []).append(i)
    return list(groups.values())


@dataclass(frozen=True)
class PackedRow:
    """One context and its continuations as one row of the model's input.

    ``segments``: 0 for the context, ``i + 1`` for continuation ``i``'s block. ``reads[i]``: the row positions
    whose next-token log-probabilities score continuation ``i`` (the context's last token, then its block).
    """

    tokens: list[int]
    positions: list[int]
    segments: list[int]
    reads: list[list[int]]


def pack(context: Sequence[int], continuations: Sequence[Sequence[int]]) -> PackedRow:
    """The row of :class:`PackedRow`: the context, then each continuation but its last token (a one-token
    continuation adds nothing: the context's last token predicts it), positions restarting after the context."""
    tokens, positions, segments = list(context), list(range(len(context))), [0] * len(context)
    reads = []
    for i, continuation in enumerate(continuations):
        block = list(continuation[:-1])
        reads.append([len(context) - 1, *range(len(tokens), len(tokens) + len(block))])
        tokens += block
        positions += range(len(context), len(context) + len(block))
        segments += [i + 1] * len(block)
    return PackedRow(tokens, positions, segments, reads)


def block_causal_mask(segments: torch.Tensor) -> torch.Tensor:
    """``[batch, 1, length, length]`` bool, True where a query (dim 2) may attend to a key (dim 3).

    ``segments``: ``[batch, length]``, 0 for the context, ``i + 1`` for block ``i``, -1 for (left) padding. A
    query sees the keys at or before it that are context or in its own segment: the context sees the context
    causally, a block the context and itself, padding only padding (never nothing, which would give NaN).
    """
    n = segments.shape[1]
    causal = torch.ones(n, n, dtype=torch.bool, device=segments.device).tril()
    query, key = segments[:, :, None], segments[:, None, :]
    return (causal & ((key == 0) & (query >= 0) | (key == query)))[:, None]


class SharedContextHFLM(HFLM):
    """:class:`~lm_eval.models.huggingface.HFLM` whose loglikelihood runs each distinct context once (module
    docstring). Takes HFLM's arguments; the batch size must be a number (``auto`` sizes HFLM's batches, whose
    rows are not ours)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.batch_size, int):
            raise ValueError(f"SharedContextHFLM needs a number as batch size, not {self.batch_size!r}; give one, or "
                             "use lm-eval's HFLM (prior_loglikelihood: lm_eval)")

    def _model_generate(self, context: torch.Tensor, max_length: int, stop: list[str], **generation_kwargs
                        ) -> torch.Tensor:
        """HFLM's ``generate`` call, ``[B, <= max_length]``: the left-padded contexts, then each row's greedy tokens
        (:func:`sdft.sampling.greedy_decode`) up to its EOS or the token that completed a stop sequence, padding
        after (module docstring)."""
        kwargs = dict(generation_kwargs)
        mask, temperature, do_sample = kwargs.pop("attention_mask", None), kwargs.pop("temperature", 0.0), \
            kwargs.pop("do_sample", None)
        greedy = do_sample is False or (do_sample is None and temperature == 0.0)
        config = self.model.generation_config
        if kwargs or mask is None or not greedy or self.mixed_precision_dtype is not None \
                or not plain_greedy(config):
            return super()._model_generate(context, max_length, stop, **generation_kwargs)
        eos = config.eos_token_id
        eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else (eos or [0])[0]
        start = context.shape[1]

        def stopped(sequences: torch.Tensor, _scores) -> list[bool]:  # the text so far holds a stop sequence
            texts = self.tokenizer.batch_decode(sequences[:, start:], skip_special_tokens=False)
            return [any(s in text for s in stop) for text in texts]

        rows = greedy_decode(self.model, context, mask, max_new_tokens=max_length - start, eos_token_ids=eos,
                             stopping_criteria=stopped, pad_token_id=pad)
        width = max(len(row) for row in rows)
        new = torch.full((len(rows), width), pad, dtype=context.dtype, device=context.device)
        for i, row in enumerate(rows):
            new[i, :len(row)] = torch.tensor(row, dtype=context.dtype)
        return torch.cat([context, new], dim=1)

    def _loglikelihood_tokens(self, requests: list[TokenRequest], disable_tqdm: bool = False,
                              override_bs: int | None = None) -> list[tuple[float, bool]]:
        """``(sum of the continuation's log-probabilities, whether greedy decoding gives it)`` per request, in
        the order of ``requests``, as HFLM's method returns them."""
        packable = self._packable(requests)
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        rest = [i for i in range(len(requests)) if i not in packable]
        if rest:
            for i, answer in zip(rest, super()._loglikelihood_tokens(
                    [requests[i] for i in rest], disable_tqdm, override_bs), strict=True):
                results[i] = answer
        fits = sorted(packable)
        groups = [[fits[j] for j in group] for group in group_by_context([requests[i][1] for i in fits])]
        rows = [pack(requests[g[0]][1], [requests[i][2] for i in g]) for g in groups]
        order = sorted(range(len(groups)), key=lambda k: -len(rows[k].tokens))  # similar lengths together
        size = override_bs or self.batch_size
        for start in range(0, len(order), size):
            batch = order[start:start + size]
            scores = self._score_rows([rows[k] for k in batch],
                                      [[requests[i][2] for i in groups[k]] for k in batch])
            for k, answers in zip(batch, scores, strict=True):
                for i, answer in zip(groups[k], answers, strict=True):
                    results[i] = answer
                    if requests[i][0] is not None:
                        self.cache_hook.add_partial("loglikelihood", requests[i][0], answer)
        return results

    def _packable(self, requests: list[TokenRequest]) -> set[int]:
        """Requests whose tokens HFLM runs uncut: a causal model, an attention whose mask is written here, and
        context and continuation within ``max_length + 1`` tokens and within a sliding attention window."""
        if self.backend != "causal" or self.model.config._attn_implementation not in ("sdpa", "eager"):
            return set()
        window = getattr(self.model.config.get_text_config(), "sliding_window", None) or float("inf")
        longest = min(self.max_length, window)  # HFLM's input is context + continuation but its last token
        return {i for i, (_, ctx, cont) in enumerate(requests) if len(ctx) + len(cont) - 1 <= longest}

    def _score_rows(self, rows: list[PackedRow], continuations: list[list[list[int]]]
                    ) -> list[list[tuple[float, bool]]]:
        """One forward over ``rows`` (left-padded: every row ends at the last column); per row, per
        continuation, ``(sum of log-probabilities, is_greedy)``."""
        length = max(len(row.tokens) for row in rows)
        tokens = torch.zeros(len(rows), length, dtype=torch.long)
        positions = torch.zeros(len(rows), length, dtype=torch.long)
        segments = torch.full((len(rows), length), -1, dtype=torch.long)
        for r, row in enumerate(rows):
            pad = length - len(row.tokens)
            tokens[r, pad:] = torch.tensor(row.tokens)
            positions[r, pad:] = torch.tensor(row.positions)
            segments[r, pad:] = torch.tensor(row.segments)
        # only the positions read go through the vocabulary projection: the last `keep` of every row
        keep = max(len(row.tokens) - row.reads[0][0] for row in rows)
        mask = block_causal_mask(segments)
        if self.model.config._attn_implementation == "eager":  # eager adds its mask to the attention scores
            dtype = self.mixed_precision_dtype or self.model.dtype
            mask = torch.zeros(mask.shape, dtype=dtype).masked_fill(~mask, torch.finfo(dtype).min)
        with torch.no_grad(), torch.autocast(device_type=self.device.type, dtype=self.mixed_precision_dtype,
                                             enabled=self.mixed_precision_dtype is not None):
            logits = self.model(input_ids=tokens.to(self.device), position_ids=positions.to(self.device),
                                attention_mask=mask.to(self.device), use_cache=False, logits_to_keep=keep).logits
        logprobs = F.log_softmax(logits, dim=-1, dtype=self.softmax_dtype)
        out = []
        for row, row_logprobs, conts in zip(rows, logprobs, continuations, strict=True):
            first = len(row.tokens) - keep  # row position of column 0 of row_logprobs
            answers = []
            for reads, cont in zip(row.reads, conts, strict=True):
                read = row_logprobs[torch.tensor(reads) - first]
                target = torch.tensor(cont, dtype=torch.long, device=read.device)
                greedy = bool((read.argmax(dim=-1) == target).all())
                answers.append((float(read.gather(1, target[:, None]).sum()), greedy))
            out.append(answers)
        return out
