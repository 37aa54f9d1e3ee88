"""Batched ancestral sampling with a KV cache that keeps every sampled token's log-probability.

The rollout sampler of ``SelfDistillationTrainer`` with ``rollout_dtype`` on CPU. It draws from the same
distribution as HF ``generate(do_sample=True)`` with temperature as its only warper (TRL's defaults: top_p 1,
top_k 0, no min_p, no repetition penalty), and it is faster there because decoding a 135M model on two cores is
dominated by per-token work outside the weights' matrix products: HF samples with ``torch.multinomial``, which
draws an exponential variate for every vocabulary entry (49k per row and token), and runs its logits-processor and
stopping-criteria machinery per token. Here one uniform per row is enough (inverse CDF), and the log-probability of
the drawn token comes out of the same log-softmax (no recorder hooked into ``generate``).
Any other sampling setting falls back to ``generate`` (``plain_sampling``).
"""

from __future__ import annotations

import torch
from transformers import DynamicCache, GenerationConfig

from sdft.sequences import left_padded_position_ids

# GenerationConfig fields: those this sampler honours or that do not change the distribution, and the values at
# which the others are inactive. A field outside both (a top-k, a repetition penalty, beams...) means: use generate.
_HONOURED = {"max_new_tokens", "min_new_tokens", "max_length", "do_sample", "temperature", "pad_token_id",
             "bos_token_id", "eos_token_id", "use_cache", "cache_implementation", "disable_compile", "low_memory",
             "transformers_version", "_from_model_config", "output_scores", "output_logits", "return_dict_in_generate"}
_INACTIVE = {"top_k": (0, None), "top_p": (1.0, None), "min_p": (0.0, None), "typical_p": (1.0, None),
             "epsilon_cutoff": (0.0, None), "eta_cutoff": (0.0, None), "repetition_penalty": (1.0, None),
             "no_repeat_ngram_size": (0, None), "num_beams": (1, None), "num_return_sequences": (1, None)}


def plain_sampling(config: GenerationConfig) -> bool:
    """True when ``config`` asks for temperature sampling only (plus max / min new tokens and EOS)."""
    if not config.do_sample or config.max_new_tokens is None:
        return False
    for name, value in config.to_diff_dict().items():
        if name not in _HONOURED and value not in _INACTIVE.get(name, ()):
            return False
    return True


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
    min_new_tokens: int = 0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample continuations of left-padded prompts from ``softmax(logits / temperature)``.

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
        if temperature != 1.0:
            logits = logits / temperature
        if step < min_new_tokens:
            logits[:, eos] = float("-inf")
        log_probs = torch.log_softmax(logits, dim=-1)
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
