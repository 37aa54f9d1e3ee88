"""Batched ancestral sampling with a KV cache that keeps every sampled token's log-probability.

The rollout sampler of ``SelfDistillationTrainer`` with ``rollout_dtype`` on CPU. It draws from the same
distribution as HF ``generate(do_sample=True)`` with temperature, top-k and top-p as its only warpers (applied in
HF's order and with HF's semantics: ``sampling_log_probs``; TRL's defaults are temperature 1, top_p 1, top_k 0, no
min_p, no repetition penalty), and it is faster there because decoding a 135M model on two cores is dominated by
per-token work outside the weights' matrix products: HF samples with ``torch.multinomial``, which draws an
exponential variate for every vocabulary entry (49k per row and token), and runs its logits-processor and
stopping-criteria machinery per token. Here one uniform per row is enough (inverse CDF), and the log-probability of
the drawn token comes out of the same log-softmax (no recorder hooked into ``generate``): that of the distribution
actually sampled, the tempered softmax truncated by top-k / top-p and renormalized.
Any other sampling setting falls back to ``generate`` (``plain_sampling``), where ``split_warpers`` lets a recorder
(``sdft.speedups.SampledTokenLogProbs``) see the distribution generate samples from.
"""

from __future__ import annotations

import copy

import torch
from transformers import (
    DynamicCache,
    GenerationConfig,
    LogitsProcessorList,
    MinPLogitsWarper,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from sdft.sequences import left_padded_position_ids

# GenerationConfig fields: those this sampler honours or that do not change the distribution, and the values at
# which the others are inactive. A field outside both (a min-p, a repetition penalty, beams...) means: use generate.
_HONOURED = {"max_new_tokens", "min_new_tokens", "max_length", "do_sample", "temperature", "top_k", "top_p",
             "pad_token_id", "bos_token_id", "eos_token_id", "use_cache", "cache_implementation", "disable_compile",
             "low_memory", "transformers_version", "_from_model_config", "output_scores", "output_logits",
             "return_dict_in_generate"}
_INACTIVE = {"min_p": (0.0, None), "typical_p": (1.0, None), "epsilon_cutoff": (0.0, None),
             "eta_cutoff": (0.0, None), "repetition_penalty": (1.0, None), "no_repeat_ngram_size": (0, None),
             "num_beams": (1, None), "num_return_sequences": (1, None)}
# Warpers that generate appends after every user logits processor (after its temperature, top-k, top-p and min-p)
# and the values at which each is off: split_warpers cannot move them ahead of a recorder.
_LATE_WARPERS = {"top_h": (None,), "typical_p": (1.0, None), "epsilon_cutoff": (0.0, None),
                 "eta_cutoff": (0.0, None)}


def _only_honoured(config: GenerationConfig, ignored: tuple[str, ...] = ()) -> bool:
    """True when every field ``config`` sets (outside ``ignored``) is honoured here or at its inactive value."""
    return all(name in _HONOURED or name in ignored or value in _INACTIVE.get(name, ())
               for name, value in config.to_diff_dict().items())


def plain_sampling(config: GenerationConfig) -> bool:
    """True when ``config`` asks for temperature / top-k / top-p sampling only (plus max / min new tokens and EOS)."""
    return bool(config.do_sample) and config.max_new_tokens is not None and _only_honoured(config)


def plain_greedy(config: GenerationConfig) -> bool:
    """True when greedy ``generate`` with ``config`` (a model's generation config) takes the argmax of the raw
    logits at every step: no processor is on (repetition penalty, minimum length, suppressed tokens...), so
    :func:`greedy_decode` gives the same tokens. Greedy ignores the warpers (temperature, top-k, top-p); the
    minimum length is a processor, so it must be off."""
    return (_only_honoured(config, ignored=("output_attentions", "output_hidden_states"))
            and not config.min_new_tokens and not config.min_length)


def truncates(config: GenerationConfig) -> bool:
    """True when ``config`` samples from a truncation of the tempered softmax: top-k, top-p or min-p is on."""
    return bool(config.top_k) or (config.top_p is not None and config.top_p < 1.0) or bool(config.min_p)


def split_warpers(config: GenerationConfig) -> tuple[GenerationConfig, LogitsProcessorList]:
    """``config`` with its temperature, top-k, top-p and min-p switched off, and HF's warpers for them.

    ``generate`` runs the logits processors a caller passes after its own processors (repetition penalty, minimum
    length...) but before the warpers it builds from the config (temperature, top-k, top-p, min-p...), so a
    processor passed as usual sees scores that are not yet those sampled from. Passing ``generate`` the returned
    config and the returned warpers followed by that processor gives the same distribution -- the same warper
    classes in HF's order (temperature, top-k, top-p, min-p), each applied once -- with the processor last, seeing
    the scores that are softmaxed and sampled. A warper generate would append after the caller's processors
    (typical-p, epsilon / eta cutoff, top-h) or beam search is refused: nothing passed to generate could see past it.
    """
    late = [name for name, off in _LATE_WARPERS.items() if getattr(config, name, None) not in off]
    if late or (config.num_beams or 1) > 1:
        raise ValueError(f"cannot record the distribution sampled with {late or 'num_beams > 1'}: generate applies "
                         "it after every processor passed to it")
    warpers = LogitsProcessorList()
    if config.temperature is not None and config.temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(config.temperature))
    if config.top_k:
        warpers.append(TopKLogitsWarper(top_k=config.top_k))
    if config.top_p is not None and config.top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p=config.top_p))
    if config.min_p is not None:
        warpers.append(MinPLogitsWarper(min_p=config.min_p))
    unwarped = copy.deepcopy(config)
    # explicit "off" values (min-p 0 removes nothing): generate would fill a None from the model's generation config
    unwarped.temperature, unwarped.top_k, unwarped.top_p, unwarped.min_p = 1.0, 0, 1.0, 0.0
    return unwarped, warpers


def top_k_logits(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """``logits`` [B, V] with every entry below the row's ``top_k``-th largest set to -inf: at least one token is
    kept, and every token tied with the ``top_k``-th is kept (HF's ``TopKLogitsWarper``)."""
    kth = logits.topk(min(max(top_k, 1), logits.size(-1)), dim=-1).values[:, -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_logits(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """``logits`` [B, V] restricted to the row's nucleus, the rest set to -inf (HF's ``TopPLogitsWarper``).

    A token is dropped when the probability mass of it and of every token ranked below it is at most
    ``1 - top_p``; equivalently, the kept tokens are the fewest most probable ones whose mass reaches ``top_p``
    (the token that crosses ``top_p`` is kept), and at least the most probable token. Tokens are ranked by
    ``torch.sort``'s ascending order, as in HF's warper, so that among tokens tied at the boundary the same ones are
    kept (those sorted higher) and the mass is summed in the same order (same rounding).
    """
    ascending, order = logits.sort(dim=-1)
    mass_up_to = ascending.softmax(dim=-1).cumsum(dim=-1)  # mass of each token and of all ranked below it
    drop = mass_up_to <= 1.0 - top_p
    drop[:, -1] = False  # the most probable token always stays
    return logits.masked_fill(torch.zeros_like(drop).scatter_(1, order, drop), float("-inf"))


def sampling_log_probs(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0,
                       top_p: float = 1.0) -> torch.Tensor:
    """log-probabilities [B, V] of the distribution sampled from, given next-token ``logits`` [B, V] (float32).

    ``softmax(logits / temperature)``, then restricted to the ``top_k`` most probable tokens (0: off), then to the
    nucleus of mass ``top_p`` (1: off), and renormalized: HF's warpers in HF's order. Tokens outside hold -inf.
    """
    if temperature != 1.0:
        logits = logits / temperature
    if top_k:
        logits = top_k_logits(logits, top_k)
    if top_p < 1.0:
        logits = top_p_logits(logits, top_p)
    return torch.log_softmax(logits, dim=-1)


def sample_categorical(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One draw per row of ``probs`` [B, V] (rows need not be normalised) by inverting the CDF at one uniform.

    Index ``i`` is returned exactly when ``cdf[i - 1] <= u * cdf[-1] < cdf[i]``, an interval of length
    ``probs[i]``: zero-probability entries are never drawn.
    """
    cdf = probs.float().cumsum(dim=-1)
    u = torch.rand(probs.size(0), 1, device=probs.device, generator=generator) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).clamp_(max=probs.size(-1) - 1).squeeze(1)


@torch.inference_mode()
def sample_with_logprobs(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    max_new_tokens: int,
    eos_token_ids: list[int],
    pad_token_id: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    min_new_tokens: int = 0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample continuations of left-padded prompts from ``softmax(logits / temperature)`` truncated to its top
    ``top_k`` tokens (0: all) and then to its nucleus of mass ``top_p`` (1: all) and renormalized
    (``sampling_log_probs``).

    Returns ``completion_ids`` [B, n] and ``logps`` [B, n], the log-probability of each drawn token under the
    distribution it was drawn from (EOS excluded for the first ``min_new_tokens`` tokens, as HF does). Every row
    ends at its first EOS, which is kept; positions after it hold ``pad_token_id`` and log-probability 0. Stops as
    soon as every row has ended, so ``n <= max_new_tokens``.
    """
    batch, device = input_ids.size(0), input_ids.device
    eos = torch.tensor(eos_token_ids, device=device)
    cache = DynamicCache(config=model.config)
    ids, mask, positions = input_ids, attention_mask, left_padded_position_ids(attention_mask)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    tokens, logps = [], []
    for step in range(max_new_tokens):
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                       use_cache=True, logits_to_keep=1).logits[:, -1].float()
        if step < min_new_tokens:  # before the warpers, as HF's minimum-length processor
            logits[:, eos] = float("-inf")
        log_probs = sampling_log_probs(logits, temperature, top_k, top_p)
        token = sample_categorical(log_probs.exp(), generator)
        token_logp = log_probs.gather(1, token[:, None]).squeeze(1)
        tokens.append(torch.where(finished, pad_token_id, token))
        logps.append(token_logp.masked_fill(finished, 0.0))
        finished |= torch.isin(token, eos)
        if bool(finished.all()):
            break
        ids = token[:, None]
        mask = torch.cat([mask, mask.new_ones(batch, 1)], dim=1)
        positions = positions[:, -1:] + 1
    return torch.stack(tokens, dim=1), torch.stack(logps, dim=1)


@torch.inference_mode()
def greedy_decode(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, max_new_tokens: int,
                  eos_token_ids: list[int], stopping_criteria=None, pad_token_id: int = 0) -> list[list[int]]:
    """Greedy continuations of left-padded prompts (``input_ids`` / ``attention_mask`` ``[B, L]``): one list of
    token ids per row, ending at the row's first EOS (kept), where ``stopping_criteria`` stops it (the token that
    completed the stop kept), or after ``max_new_tokens`` tokens.

    The tokens of HF ``generate(do_sample=False)`` (the argmax of the float32 logits at every step, the same
    forward with a KV cache), at less cost: a row that has ended leaves the batch -- its rows of the cache, mask and
    positions are dropped -- so each later step computes only the rows still going, where ``generate`` computes
    every row until the last has ended. Each row's logits do not depend on which other rows share its batch as long
    as the matrix products compute each row alike at every batch size, which ``tests/eval/test_eval_generation.py``
    checks against ``generate`` on the machine that runs it.

    ``stopping_criteria``: called as ``generate`` calls its criteria, with the whole batch's sequences so far
    (``[B, L + t]``, a row that has ended holding ``pad_token_id`` after its end) and no scores; returns a bool per
    row (e.g. lm-eval's stop-sequence criteria, which keep a per-row state).
    """
    device, batch = input_ids.device, input_ids.size(0)
    eos = torch.tensor(eos_token_ids, device=device)
    cache = DynamicCache(config=model.config)
    ids, mask, positions = input_ids, attention_mask, left_padded_position_ids(attention_mask)
    rows = torch.arange(batch, device=device)  # the original row of each row still going
    sequences = input_ids if stopping_criteria is not None else None
    out: list[list[int]] = [[] for _ in range(batch)]
    for step in range(max_new_tokens):
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                       use_cache=True, logits_to_keep=1).logits[:, -1]
        token = logits.float().argmax(dim=-1)
        for row, t in zip(rows.tolist(), token.tolist()):
            out[row].append(t)
        going = ~torch.isin(token, eos)
        if sequences is not None:
            column = torch.full((batch,), pad_token_id, dtype=token.dtype, device=device).index_copy_(0, rows, token)
            sequences = torch.cat([sequences, column[:, None]], dim=1)
            going &= ~torch.as_tensor(stopping_criteria(sequences, None), device=device)[rows]
        if step + 1 == max_new_tokens or not bool(going.any()):
            break
        if not bool(going.all()):
            keep = going.nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            rows, token, mask, positions = rows[keep], token[keep], mask[keep], positions[keep]
        ids = token[:, None]
        mask = torch.cat([mask, mask.new_ones(rows.numel(), 1)], dim=1)
        positions = positions[:, -1:] + 1
    return out
