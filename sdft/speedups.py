"""The trainer's fast paths, as functions: each changes how an input of the loss is produced, never the loss.

``sdft.trainer.SelfDistillationTrainer`` calls them: ``_generate`` the rollout ones, ``_sdft_loss`` (the loss of a
batch) and ``training_step`` the others. The config fields that switch them are ``sdft.sdft_config.SpeedSwitches``
(the one list of the switches, with what each does).

  * rollouts: ``SamplerCopy``, a low-precision copy of the student that samples them (``rollout_dtype``; on GPUs
    vLLM is the low-precision sampler), refreshed once per optimizer step; ``recorded_rollouts`` samples with
    ``sdft.sampling``'s decode loop (``fast_rollout_sampler``) or HF ``generate`` with ``SampledTokenLogProbs``
    and keeps each sampled token's log-probability for the importance weights. Without that copy, rollouts sampled
    with top-k / top-p / min-p come from the student by ``recorded_rollouts`` too, so that the truncation is
    corrected alike (field help of ``rollout_dtype``);
  * the teacher (``teacher_logits``): a constant target, computed without autograd bookkeeping
    (``teacher_inference_mode``), optionally under low-precision autocast with its output head in float32
    (``teacher_dtype``); with ``distillation_topk`` reduced to its top K, from its hidden states chunk by chunk;
  * the student: ``lean_logits`` skips the last position, which predicts nothing (``lean_logits``);
    ``student_head`` gives the loss its hidden states and output head instead of its logits (``fused_lm_head``),
    and ``one_sequence`` cuts a batch into rollouts without their padding (``sequence_microbatches``).

With a LoRA student (``use_peft``): every switch but ``rollout_dtype`` acts as without (the fused head through
the PEFT model's base: its LoRA layers sit inside the body); ``rollout_dtype``'s sampler copy is a copy of the whole
model and is off, and so is the fused head on a 4-/8-bit base (QLoRA) or an adapted output head. The trainer prints
one line naming what is off.

Which switches act where (defaults; tests/sdft/test_multiprocess.py runs both):

  * one process: all of them (``rollout_dtype`` / ``teacher_dtype`` when set);
  * several processes (DDP), ZeRO-3 or FSDP: ``fused_ema``, ``loss_chunk_size``, ``teacher_inference_mode``,
    ``lean_logits``, ``teacher_dtype``. ``fused_lm_head`` and with it ``sequence_microbatches`` are off -- the
    student's forward must go through the wrapped model, whose gradient synchronisation a forward of its body
    and head in two parts, or one rollout at a time, would bypass -- and the trainer says so once at start (the
    student's logits are then computed whole; the same values up to float rounding, tests/sdft/test_perf.py).
    ``rollout_dtype`` is refused (a ``ValueError``; on GPUs vLLM is the low-precision sampler).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from accelerate.utils import is_peft_model
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from sdft.losses import TeacherTopK, head_top_k, teacher_top_k
from sdft.sampling import plain_sampling, sample_with_logprobs, split_warpers
from sdft.sequences import lengths_to_first_eos, pad_sequences


@dataclass
class StudentHead:
    """The student as its last hidden states of the completion positions ``[B, T, H]`` and its output head: the
    loss makes its logits ``head(hidden) / temperature`` chunk by chunk (``sdft.losses.head_token_terms``)."""

    hidden: torch.Tensor
    head: torch.nn.Linear


# ---------------------------------------------------------------------------------------------------------- rollouts
class SampledTokenLogProbs(LogitsProcessor, StoppingCriteria):
    """Records log pi_sampler(y_t | y_<t) of every sampled token during HF ``generate``: the log-softmax of the
    scores it is handed, at the token drawn.

    Those are the scores generate samples from only when it is the last logits processor: HF runs the processors
    passed to generate after its own (repetition penalty, minimum length...) but before the warpers it builds from
    the config (temperature, top-k, top-p...), so ``generate_with_logprobs`` hands generate the config without them
    and HF's warpers followed by this recorder (``sdft.sampling.split_warpers``). The recorded probability is then
    that of the distribution actually sampled: tempered, truncated by top-k / top-p / min-p and renormalized.
    As a stopping criterion (called once the token is appended) it picks the sampled token's entry. Never changes
    the scores and never stops generation.
    """

    def __init__(self):
        self._step_logps: torch.Tensor | None = None
        self.steps: list[torch.Tensor] = []

    def __call__(self, input_ids, scores):  # no **kwargs: HF's processor list would demand them by name
        if scores is not None and self._step_logps is None:  # as a logits processor: before sampling
            self._step_logps = torch.log_softmax(scores.float(), dim=-1)
            return scores
        # as a stopping criterion: the token sampled from the recorded distribution is now input_ids[:, -1]
        self.steps.append(self._step_logps.gather(1, input_ids[:, -1:]).squeeze(1))
        self._step_logps = None
        return torch.zeros(input_ids.size(0), dtype=torch.bool, device=input_ids.device)

    def per_token_logps(self) -> torch.Tensor:
        """[batch, generated steps]"""
        return torch.stack(self.steps, dim=1)


def generate_with_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                           config: GenerationConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """HF ``generate`` of left-padded prompts under ``config`` with ``SampledTokenLogProbs`` last.

    Returns ``completion_ids`` [B, n] (generate's: pad tokens after a row's EOS) and ``logps`` [B, n], the
    log-probability of each generated token under the distribution it was sampled from; the entries after a row's
    EOS are those of its pad tokens, meaningless (callers cut each row at its first EOS).
    """
    unwarped, warpers = split_warpers(config)
    recorder = SampledTokenLogProbs()
    out = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=unwarped,
                         logits_processor=LogitsProcessorList([*warpers, recorder]),
                         stopping_criteria=StoppingCriteriaList([recorder]))
    return out[:, input_ids.size(1):], recorder.per_token_logps()


class SamplerCopy:
    """A copy of the student in ``dtype`` that samples the rollouts (``rollout_dtype``), its weights refreshed from
    the student's by one fused copy-and-cast once per optimizer step (``sync``). Parameters only are cast: buffers
    such as RoPE's ``inv_freq`` keep their precision. With ``eager_attention`` (``fast_rollout_sampler``) the copy
    decodes with eager attention; the student keeps its own."""

    def __init__(self, model, dtype: torch.dtype, eager_attention: bool):
        sampler = copy.deepcopy(model).eval().requires_grad_(False)
        for p in sampler.parameters():
            p.data = p.data.to(dtype)
        if eager_attention and hasattr(sampler, "set_attn_implementation"):
            sampler.set_attn_implementation("eager")  # the copy's own config
        named = dict(model.named_parameters())
        self.model = sampler
        self._pairs = ([p.data for _, p in sampler.named_parameters()],
                       [named[n].data for n, _ in sampler.named_parameters()])
        self._step: int | None = None

    @torch.no_grad()
    def sync(self, step: int) -> None:
        """Copy the student's weights into the copy, once per optimizer ``step``."""
        if self._step != step:
            torch._foreach_copy_(*self._pairs)
            self._step = step


def recorded_rollouts(model, prompt_ids: list[list[int]], config: GenerationConfig, eos_token_ids: list[int],
                      pad_token_id: int, temperature: float, device, fast: bool):
    """Rollouts of ``model`` from the token-id ``prompt_ids`` and each sampled token's log-probability under the
    distribution it was drawn from: ``(prompt_ids, completions, logps)``, the completions (lists of ids) cut after
    their first EOS as TRL's ``_generate`` returns them, ``logps`` lists of the same lengths. ``fast``: with
    ``sdft.sampling``'s decode loop when ``config`` allows it (``plain_sampling``), else HF ``generate`` with
    ``SampledTokenLogProbs``."""
    input_ids, attention_mask = pad_sequences(prompt_ids, pad_token_id, side="left")
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    if fast and plain_sampling(config):
        completion_ids, logps = sample_with_logprobs(
            model, input_ids, attention_mask, max_new_tokens=config.max_new_tokens, eos_token_ids=eos_token_ids,
            pad_token_id=pad_token_id, temperature=temperature, top_k=config.top_k or 0,
            top_p=1.0 if config.top_p is None else config.top_p, min_new_tokens=config.min_new_tokens or 0,
        )
    else:
        completion_ids, logps = generate_with_logprobs(model, input_ids, attention_mask, config)
    completion_ids, logps = completion_ids.cpu(), logps.cpu()
    lengths, _ = lengths_to_first_eos(completion_ids, eos_token_ids)
    return (prompt_ids, [completion_ids[i, :n].tolist() for i, n in enumerate(lengths)],
            [logps[i, :n].tolist() for i, n in enumerate(lengths)])


# ------------------------------------------------------------------------------------------------- the teacher
def teacher_logits(teacher_model, inputs: dict, args, forward_logits: Callable,
                   weights: Callable[[], contextlib.AbstractContextManager]) -> torch.Tensor | TeacherTopK:
    """The teacher's logits of the completion positions ``[B, T, V]``: constants, computed without autograd
    bookkeeping (``teacher_inference_mode``), optionally with its body under low-precision autocast
    (``teacher_dtype``), its output head in float32.

    ``args``: the trainer's ``SelfDistillationConfig`` (the logits are divided by its ``distillation_temperature``);
    ``forward_logits``: the trainer's forward to logits at that temperature (``_loss_logits``); ``weights``: the context that selects the teacher's weights for its forward.

    With ``distillation_topk = K > 0``: only their top-K reduction (``sdft.losses.TeacherTopK``, ``[B, T, K]``
    values and indices, the tail's log-mass, the sampled tokens' log-probabilities). With ``lean_logits`` and a
    plain ``nn.Linear`` output head it is made from the teacher's hidden states ``loss_chunk_size`` positions at a
    time (``sdft.losses.head_top_k``), so the teacher's ``[B, T, V]`` logits never exist whole; otherwise they come
    whole from its forward and are reduced at once (``sdft.losses.teacher_top_k``) and freed.
    """
    k, chunk, ids = args.distillation_topk, args.loss_chunk_size or None, inputs["completion_ids"]
    head = linear_head(teacher_model) if args.lean_logits else None
    if k > 0 and head is not None:
        t_ids, t_mask = inputs["teacher_input_ids"], inputs["teacher_attention_mask"]
        with _no_graph(args), weights(), _autocast(args, t_ids):
            hidden = _body_hidden(teacher_model, t_ids, t_mask, ids.size(1))
        if args.teacher_dtype is None:  # outside inference mode: the reduction is made of ordinary tensors
            return head_top_k(hidden, head.weight, head.bias, k, ids, chunk, args.distillation_temperature)
        with _float32(ids):  # the head in float32, as for the full logits below
            return head_top_k(hidden.float(), head.weight, head.bias, k, ids, chunk, args.distillation_temperature)
    logits = _teacher_full_logits(teacher_model, inputs, args, forward_logits, weights, head)
    return logits if k == 0 else teacher_top_k(logits, k, ids, chunk)


def _teacher_full_logits(teacher_model, inputs, args, forward_logits, weights, head):
    ids, mask = inputs["teacher_input_ids"], inputs["teacher_attention_mask"]
    logits_to_keep = inputs["completion_ids"].size(1)
    with _no_graph(args), weights():
        if args.teacher_dtype is None:
            return forward_logits(teacher_model, ids, mask, logits_to_keep)
        if head is None:
            with _autocast(args, ids):
                return forward_logits(teacher_model, ids, mask, logits_to_keep).float()
        with _autocast(args, ids):  # the body
            hidden = _body_hidden(teacher_model, ids, mask, logits_to_keep)
        with _float32(ids):  # the head in float32
            logits = torch.nn.functional.linear(hidden.float(), head.weight, head.bias)
    t = args.distillation_temperature
    return logits if t == 1.0 else logits / t


def _no_graph(args):
    return torch.inference_mode() if args.teacher_inference_mode else torch.no_grad()


def _float32(ids: torch.Tensor):
    """Autocast off: the teacher's head stays float32 inside a bf16 run's autocast (``bf16=True``), as documented."""
    return torch.autocast(ids.device.type, enabled=False)


def _autocast(args, ids: torch.Tensor):
    if args.teacher_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(ids.device.type, dtype=getattr(torch, args.teacher_dtype))


# ------------------------------------------------------------------------------------------------- the student
def lean_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, logits_to_keep: int,
                temperature: float, model_kwarg_keys) -> torch.Tensor:
    """TRL's ``_forward_logits`` (the tempered logits of the last ``logits_to_keep`` positions that predict a
    token) without the last position's forward, which predicts past the completion, and without a copy of the
    logits at temperature 1."""
    model_inputs = {"input_ids": input_ids[:, :-1], "attention_mask": attention_mask[:, :-1], "use_cache": False}
    if "logits_to_keep" in model_kwarg_keys:
        model_inputs["logits_to_keep"] = logits_to_keep
    logits = model(**model_inputs).logits[:, -logits_to_keep:, :]
    return logits if temperature == 1.0 else logits / temperature


def student_head(model, inputs: dict) -> StudentHead:
    """The student's last hidden states of the completion positions and its output head (``fused_lm_head``): the
    input of ``sdft.losses.head_token_terms``, which makes the logits chunk by chunk."""
    T = inputs["completion_ids"].size(1)
    hidden = _body_hidden(model, torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1),
                          torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1), T)
    return StudentHead(hidden, causal_lm(model).get_output_embeddings())


def fused_head_requested(args) -> bool:
    """Whether the switches ask for the fused head (``fused_lm_head`` needs ``loss_chunk_size`` and
    ``lean_logits``); it acts where ``linear_head`` finds a head, in one unsharded process."""
    return bool(args.fused_lm_head and args.loss_chunk_size and args.lean_logits)


def one_sequence(inputs: dict, b: int) -> dict | None:
    """Row ``b`` of a rollout batch without its padding (prompts are left-padded, completions right-padded);
    ``None`` for an empty completion (``sequence_microbatches``)."""
    n = int(inputs["completion_mask"][b].sum())
    if n == 0:
        return None
    prompt = inputs["prompt_mask"][b].bool()
    teacher = inputs["teacher_attention_mask"][b].bool()
    out = {
        "prompt_ids": inputs["prompt_ids"][b][prompt][None], "prompt_mask": inputs["prompt_mask"][b][prompt][None],
        "completion_ids": inputs["completion_ids"][b, :n][None],
        "completion_mask": inputs["completion_mask"][b, :n][None],
        "teacher_input_ids": inputs["teacher_input_ids"][b][teacher][None],
        "teacher_attention_mask": inputs["teacher_attention_mask"][b][teacher][None],
    }
    for key in ("old_per_token_logps", "sampler_per_token_logps"):
        if inputs.get(key) is not None:
            out[key] = inputs[key][b, :n][None]
    return out


# ------------------------------------------------------------------------------------------------- models
def _body_hidden(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, logits_to_keep: int) -> torch.Tensor:
    """The causal LM body's last hidden states of the last ``logits_to_keep`` positions that predict a token (the
    last position predicts past the completion and is not computed)."""
    return causal_lm(model).model(input_ids=input_ids[:, :-1], attention_mask=attention_mask[:, :-1],
                                  use_cache=False).last_hidden_state[:, -logits_to_keep:]


def causal_lm(model):
    """The causal LM itself: under a PEFT wrapper, the model it wraps (whose layers hold the LoRA layers, so that
    its body's forward is the adapted one, and follows the active or disabled adapter)."""
    return model.get_base_model() if is_peft_model(model) else model


def linear_head(model) -> torch.nn.Linear | None:
    """The output head of an unquantized causal LM (a PEFT model's included) whose body is ``.model``, when that
    head is an ``nn.Linear`` (an adapted head is not) whose weight is whole outside the model's forward (a ZeRO-3
    partitioned one is not): then logits = head(body(...).last_hidden_state) can be computed in two parts."""
    lm = causal_lm(model)
    if getattr(lm, "_is_quantized", False) or getattr(lm, "is_quantized", False) \
            or getattr(lm, "is_loaded_in_4bit", False) or getattr(lm, "is_loaded_in_8bit", False) \
            or getattr(lm, "model", None) is None:
        return None
    head = lm.get_output_embeddings() if hasattr(lm, "get_output_embeddings") else None
    if not isinstance(head, torch.nn.Linear) or hasattr(head.weight, "ds_id"):  # (ds_id: a ZeRO-3 parameter)
        return None
    return head
