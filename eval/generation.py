"""Batched generation for evaluation: transformers (CPU, or GPU without vLLM) or vLLM (GPU, when installed).

Both backends return the same :class:`Generations`: for every prompt, ``n`` completions (text without the
prompt and without special tokens), their generated token ids and token counts (up to and including the
end-of-turn token; what Table 2 averages), and whether each sample stopped on an end token.

Decoding: ``greedy=True`` (accuracy; the paper's setting) or sampling with ``temperature`` (paper pass@k:
1.0) and ``top_p`` (0.95), ``n`` samples per prompt. Transformers path: prompts rendered through the chat
template, left padding, KV cache, batches of ``batch_size`` prompts sorted by length; greedy decoding with
:func:`sdft.sampling.greedy_decode` (``generate``'s tokens, each row leaving the batch when it ends) unless the
model's generation config turns a logits processor on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from sdft.models import load_model
from sdft.prompts import render
from sdft.sampling import greedy_decode, plain_greedy
from sdft.sequences import eos_token_ids, lengths_to_first_eos, pad_sequences

Messages = list[dict[str, str]]


@dataclass
class Generations:
    prompts: list[str]
    texts: list[list[str]]  # [prompt][sample]
    token_ids: list[list[list[int]]]
    n_tokens: list[list[int]]
    finished: list[list[bool]]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def first(self) -> list[str]:
        return [t[0] for t in self.texts]

    def mean_tokens(self) -> float:
        counts = [c for per in self.n_tokens for c in per]
        return sum(counts) / max(len(counts), 1)


def vllm_available() -> bool:
    try:
        import vllm  # noqa: F401
    except Exception:
        return False
    return torch.cuda.is_available()


def generate(model, tokenizer, conversations: Sequence[Messages], *, greedy: bool = True, temperature: float = 1.0,
             top_p: float = 0.95, n: int = 1, max_new_tokens: int = 256, batch_size: int = 8, seed: int = 0,
             backend: str = "auto", fast_greedy: bool = True) -> Generations:
    """Generate for chat conversations. ``model`` is a loaded causal LM, or a path/id (needed for vLLM).

    ``backend``: ``auto`` (vLLM when the model is a path, vLLM is installed and CUDA is present, else
    transformers), ``hf`` or ``vllm``. ``fast_greedy``: transformers' greedy decoding by
    :func:`sdft.sampling.greedy_decode` where it applies (module docstring); False: always HF ``generate``.
    """
    if greedy and n != 1:
        raise ValueError("greedy decoding gives one sample per prompt; use greedy=False for n > 1")
    prompts = [render(tokenizer, c) for c in conversations]
    settings = {"decoding": "greedy" if greedy else "sample", "temperature": None if greedy else temperature,
                "top_p": None if greedy else top_p, "n": n, "max_new_tokens": max_new_tokens, "seed": seed}
    if backend == "auto":
        backend = "vllm" if isinstance(model, str) and vllm_available() else "hf"
    settings["backend"] = backend
    if backend == "vllm":
        if not isinstance(model, str):
            raise ValueError("the vLLM backend needs a model path or id, not an in-memory model")
        out = _generate_vllm(model, tokenizer, prompts, greedy, temperature, top_p, n, max_new_tokens, seed)
    else:
        if isinstance(model, str):
            model = load_model(model)
        out = _generate_hf(model, tokenizer, prompts, greedy, temperature, top_p, n, max_new_tokens, batch_size, seed,
                           fast_greedy)
    texts, ids, counts, finished = out
    return Generations(prompts, texts, ids, counts, finished, settings)


@torch.no_grad()
def _generate_hf(model, tokenizer, prompts, greedy, temperature, top_p, n, max_new_tokens, batch_size, seed,
                 fast_greedy=True):
    device = next(model.parameters()).device
    eos = eos_token_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    texts: list = [None] * len(prompts)
    ids: list = [None] * len(prompts)
    counts: list = [None] * len(prompts)
    finished: list = [None] * len(prompts)
    torch.manual_seed(seed)
    was_training = model.training
    model.eval()
    what = "greedy" if greedy else f"sampling {n} per prompt"
    fast_greedy = fast_greedy and greedy and n == 1 and plain_greedy(model.generation_config)
    starts = range(0, len(order), batch_size)
    for start in tqdm(starts, desc=f"generate ({what}, {len(prompts)} prompts)", unit="batch",
                      disable=len(starts) < 2, leave=False):
        batch = order[start:start + batch_size]
        input_ids, attention = pad_sequences([encoded[i] for i in batch], pad_id, side="left")
        if fast_greedy:
            rows = greedy_decode(model, input_ids.to(device), attention.to(device), max_new_tokens=max_new_tokens,
                                 eos_token_ids=eos)
            for seq, i in zip(rows, batch):
                texts[i], ids[i], counts[i] = [tokenizer.decode(seq, skip_special_tokens=True)], [seq], [len(seq)]
                finished[i] = [bool(seq) and seq[-1] in eos]
            continue
        width = input_ids.size(1)
        kwargs: dict[str, Any] = dict(max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=pad_id,
                                      use_cache=True, num_return_sequences=n)
        if greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
        out = model.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device), **kwargs)
        completions = out[:, width:]
        lengths, ended = lengths_to_first_eos(completions, eos)
        new = completions.tolist()
        for row, i in enumerate(batch):
            t_i, id_i, c_i, f_i = [], [], [], []
            for s in range(n):
                k = row * n + s
                seq = new[k][:lengths[k]]
                id_i.append(seq)
                c_i.append(len(seq))
                f_i.append(ended[k])
                t_i.append(tokenizer.decode(seq, skip_special_tokens=True))
            texts[i], ids[i], counts[i], finished[i] = t_i, id_i, c_i, f_i
    if was_training:
        model.train()
    return texts, ids, counts, finished


def _generate_vllm(model_path, tokenizer, prompts, greedy, temperature, top_p, n, max_new_tokens, seed):
    from vllm import LLM, SamplingParams

    llm = _VLLM_CACHE.get(model_path)
    if llm is None:
        llm = LLM(model=model_path, seed=seed)
        _VLLM_CACHE.clear()
        _VLLM_CACHE[model_path] = llm
    params = SamplingParams(n=n, temperature=0.0 if greedy else temperature, top_p=1.0 if greedy else top_p,
                            max_tokens=max_new_tokens, seed=seed, skip_special_tokens=True)
    outputs = llm.generate(prompts, params)
    texts, ids, counts, finished = [], [], [], []
    for o in outputs:
        texts.append([c.text for c in o.outputs])
        ids.append([list(c.token_ids) for c in o.outputs])
        counts.append([len(c.token_ids) for c in o.outputs])
        finished.append([c.finish_reason == "stop" for c in o.outputs])
    return texts, ids, counts, finished


_VLLM_CACHE: dict[str, Any] = {}


def release_vllm() -> None:
    """Drop the cached vLLM engine (before lm-eval starts its own) and free what CUDA memory it can."""
    _VLLM_CACHE.clear()
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
