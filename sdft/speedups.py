"""Fast paths of ``sdft.trainer.SelfDistillationTrainer``: they change how the loss's inputs are produced, not the loss.

``SpeedSwitches`` holds the config fields that turn each path on or off; their help is the one list of the
switches. ``FastPaths`` is the trainer mixin that implements them, by overriding TRL's hooks and by the hooks
the trainer calls:

  * rollouts (``_generate_transformers``; on GPUs vLLM is the low-precision sampler): sampled from a low-precision
    copy of the student, refreshed after every optimizer step, by ``sdft.sampling``'s decode loop or by HF
    ``generate`` with ``SampledTokenLogProbs``; either way each sampled token's log-probability is kept for the
    importance weights of the loss. Without that copy, rollouts sampled with top-k / top-p / min-p come from the
    student by ``generate`` with ``SampledTokenLogProbs`` too, so that the truncation is corrected alike (field help
    of ``rollout_dtype``);
  * the teacher (``_teacher_logits``): a constant target, computed without autograd bookkeeping, optionally under
    low-precision autocast with its output head in float32;
  * the student: ``_forward_logits`` skips the last position, which predicts nothing; with the fused head,
    ``compute_loss`` hands the trainer's loss the student's hidden states and output head (``StudentHead``) instead
    of its logits, and ``training_step`` does so one rollout at a time, without its padding.

Every path ends in ``SelfDistillationTrainer._distillation_loss``, the one loss path (``sdft.trainer``'s docstring).

With a LoRA student (``use_peft``): every switch but ``rollout_dtype`` acts as without (the fused head through
the PEFT model's base: its LoRA layers sit inside the body); ``rollout_dtype``'s sampler copy is a copy of the whole
model and is off, and so is the fused head on a 4-/8-bit base (QLoRA) or an adapted output head. The trainer prints
one line naming what is off.

Which switches act where (defaults; tests/test_multiprocess.py runs both):

  * one process: all of them (``rollout_dtype`` / ``teacher_dtype`` when set);
  * several processes (DDP), ZeRO-3 or FSDP: ``fused_ema``, ``loss_chunk_size``, ``teacher_inference_mode``,
    ``lean_logits``, ``teacher_dtype``. ``fused_lm_head`` and with it ``sequence_microbatches`` are off -- the
    student's forward must go through the wrapped model, whose gradient synchronisation a forward of its body
    and head in two parts, or one rollout at a time, would bypass -- and the trainer says so once at start (the
    student's logits are then computed whole; the same values up to float rounding, tests/test_perf.py).
    ``rollout_dtype`` is refused (a ``ValueError``; on GPUs vLLM is the low-precision sampler).
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field

import torch
from accelerate.utils import is_peft_model
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList
from trl.models import unwrap_model_for_generation

from sdft.losses import head_top_k, teacher_top_k
from sdft.sampling import plain_sampling, sample_with_logprobs, split_warpers, truncates
from sdft.sequences import lengths_to_first_eos, pad_sequences

ROLLOUT_DTYPES = (None, "bfloat16", "float16", "float32")
TEACHER_DTYPES = (None, "bfloat16", "float16")  # autocast's low-precision types


@dataclass
class SpeedSwitches:
    """The trainer's speed switches (fields of ``SelfDistillationConfig``). All but ``rollout_dtype`` and
    ``teacher_dtype`` keep the numbers up to float rounding; those two are the CPU counterparts of the paper's bf16
    runs and change them by low-precision rounding."""

    fused_ema: bool = field(
        default=True, metadata={"help": "the EMA teacher update as one fused foreach operation over all parameters "
                                "instead of TRL's loop of two kernels per tensor; for a bf16 teacher, computed in "
                                "float32 and rounded stochastically (sdft.trainer.ema_update_), where TRL's loop "
                                "rounds to nearest and loses most small updates"},
    )
    loss_chunk_size: int = field(
        default=64,
        metadata={"help": "completion positions per chunk of the full-vocabulary loss terms, recomputed in "
                  "backward (sdft.losses.token_terms), so that their intermediates never exist for the whole "
                  "sequence; 0 computes them in one piece. Same values and gradients."},
    )
    teacher_inference_mode: bool = field(
        default=True, metadata={"help": "the teacher's forward under torch.inference_mode (TRL: no_grad)"},
    )
    fused_lm_head: bool = field(
        default=True,
        metadata={"help": "with loss_chunk_size > 0 and lean_logits: the student's logits are made chunk by chunk "
                  "from its hidden states inside the loss (sdft.losses.head_token_terms), so that they and their "
                  "gradient never exist whole. Single process, an nn.Linear output head (a LoRA student's too, "
                  "unless the head is adapted; not a 4-/8-bit model) only; otherwise the student's logits are "
                  "computed whole (the trainer prints that it is off with several processes or adapters)."},
    )
    sequence_microbatches: bool = field(
        default=True,
        metadata={"help": "with fused_lm_head: forward and backward one rollout at a time, without its padding "
                  "(the loss is a mean over sequences, so its gradient is the sum of the per-sequence ones): no "
                  "compute on padding, and the activations of one rollout instead of the whole batch's"},
    )
    lean_logits: bool = field(
        default=True,
        metadata={"help": "no copy of the logits for temperature 1, no forward of the last token (it predicts "
                  "nothing), and the logged divergence taken from the loss pass instead of a second "
                  "full-vocabulary pass"},
    )
    rollout_dtype: str | None = field(
        default=None,
        metadata={"help": "HF generation only: sample the rollouts from a copy of the student in this dtype (e.g. "
                  "'bfloat16'; decoding on CPU reads every weight for every token, so fewer bytes per weight "
                  "decode faster), refreshed after every optimizer step, with the sampled tokens' log-probabilities "
                  "kept for the importance weights (vllm_importance_sampling) -- the CPU counterpart of the "
                  "paper's bf16 vLLM sampler. None: sample from the student itself; then, with top_k > 0, "
                  "top_p < 1 or min_p and vllm_importance_sampling, HF generate records the sampled tokens' "
                  "log-probabilities as well (not under DeepSpeed or FSDP, and not with generate_from_teacher), so "
                  "that the importance weights undo the truncation as on the other samplers: each is the truncated "
                  "distribution's mass Z_t <= 1 (vllm_importance_sampling's help)."},
    )
    fast_rollout_sampler: bool = field(
        default=True,
        metadata={"help": "with rollout_dtype: the copy decodes with eager attention (at one query token SDPA's "
                  "kernel costs more than the attention) and samples with sdft.sampling's loop (one uniform per "
                  "row and token instead of HF's exponential draw per vocabulary entry); same distribution. "
                  "Temperature, top_k and top_p only (sdft.sampling.plain_sampling): other sampling settings use "
                  "HF generate"},
    )
    teacher_dtype: str | None = field(
        default=None,
        metadata={"help": "run the teacher's forward (the constant target) under autocast to this dtype, its output "
                  "head in float32 (e.g. 'bfloat16': the CPU counterpart of the paper's bf16 GPU runs, where every "
                  "forward is bf16). None: the training dtype"},
    )

    def __post_init__(self):
        for name, allowed in (("rollout_dtype", ROLLOUT_DTYPES), ("teacher_dtype", TEACHER_DTYPES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        super().__post_init__()


@dataclass
class StudentHead:
    """The student as its last hidden states of the completion positions ``[B, T, H]`` and its output head: the
    loss makes its logits ``head(hidden) / temperature`` chunk by chunk (``sdft.losses.head_token_terms``)."""

    hidden: torch.Tensor
    head: torch.nn.Linear


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


class FastPaths:
    """Mixin of ``SelfDistillationTrainer``, before TRL's ``SDFTTrainer`` in its bases: the fast paths above. Its
    loss paths end in the trainer's ``_distillation_loss`` and ``_log_divergence``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._sampler_model, self._sampler_step, self._sampler_pairs = None, None, None
        off = self._switches_off_with_adapters()
        if off and self.accelerator.is_main_process:
            print(f"[sdft] with adapters (use_peft): {'; '.join(off)}", flush=True)
        if self.args.rollout_dtype and not self.use_vllm and not is_peft_model(self.model):
            self._setup_sampler_copy(getattr(torch, self.args.rollout_dtype))
        if self._fused_head_requested() and self._distributed() and self.accelerator.is_main_process:
            print(f"[sdft] fused_lm_head and sequence_microbatches are off: they run in a single unsharded process "
                  f"only ({self.accelerator.num_processes} processes, {self.accelerator.distributed_type.value}); "
                  "the student's logits are computed whole, the batch in one forward", flush=True)

    def _switches_off_with_adapters(self) -> list[str]:
        """The speed switches that are on and cannot act on this (PEFT) student, each with why."""
        if not is_peft_model(self.model):
            return []
        off = []
        if self.args.rollout_dtype and not self.use_vllm:
            off.append(f"rollout_dtype={self.args.rollout_dtype} is off (its sampler is a copy of the whole model); "
                       "the student samples its own rollouts")
        if self._fused_head_requested() and not self._distributed() and _linear_head(self.model) is None:
            off.append("fused_lm_head and sequence_microbatches are off (a 4-/8-bit base or an adapted output head); "
                       "the student's logits are computed whole")
        return off

    # ---------------------------------------------------------------- rollouts from a low-precision copy
    def _setup_sampler_copy(self, dtype: torch.dtype) -> None:
        model = self.accelerator.unwrap_model(self.model)
        if self.accelerator.num_processes > 1 or self.is_deepspeed_enabled or self.is_fsdp_enabled \
                or is_peft_model(model):
            raise ValueError("rollout_dtype needs a single-process, unsharded, non-PEFT model; on GPUs use vLLM "
                             "(use_vllm), whose sampler is already bf16")
        sampler = copy.deepcopy(model).eval().requires_grad_(False)
        for p in sampler.parameters():  # parameters only: buffers such as RoPE's inv_freq keep their precision
            p.data = p.data.to(dtype)
        if self.args.fast_rollout_sampler and hasattr(sampler, "set_attn_implementation"):
            sampler.set_attn_implementation("eager")  # the copy's own config: the student keeps its attention
        named = dict(model.named_parameters())
        self._sampler_pairs = ([p.data for _, p in sampler.named_parameters()],
                               [named[n].data for n, _ in sampler.named_parameters()])
        self._sampler_model = sampler

    @torch.no_grad()
    def _sync_sampler(self) -> None:
        if self._sampler_step != self.state.global_step:  # once per optimizer step, one fused copy-and-cast
            torch._foreach_copy_(*self._sampler_pairs)
            self._sampler_step = self.state.global_step

    def _records_student_rollouts(self) -> bool:
        """Whether rollouts sampled from the student itself (no sampler copy) keep their tokens' log-probabilities:
        when they come from a truncated distribution (top-k / top-p / min-p) that the importance weights should
        undo (``rollout_dtype``'s help). Not under DeepSpeed or FSDP (TRL's generate there gathers the weights) and
        not with ``generate_from_teacher`` (rollouts under the teacher's prompt, off-policy by design)."""
        return (self.args.vllm_importance_sampling and truncates(self.generation_config)
                and not (self.is_deepspeed_enabled or self.is_fsdp_enabled or self.generate_from_teacher))

    def _generate_transformers(self, prompt_ids):
        if self._sampler_model is not None:
            self._sync_sampler()
            with torch.inference_mode():
                return self._recorded_rollouts(self._sampler_model, prompt_ids, self.args.fast_rollout_sampler)
        if not self._records_student_rollouts():
            return super()._generate_transformers(prompt_ids)
        # the student itself, as TRL's generate samples it (gradient checkpointing off meanwhile), with the recorder;
        # under no_grad (generate's), not inference mode: the student's tensors stay usable by autograd
        with unwrap_model_for_generation(self.model_wrapped, self.accelerator) as model:
            return self._recorded_rollouts(model, prompt_ids, fast=False)

    def _recorded_rollouts(self, model, prompt_ids, fast: bool):
        """Rollouts of ``model`` (TRL's return value: prompts and completions cut after their first EOS), their
        tokens' sampler log-probabilities kept in ``self._sampler_logps`` (with ``vllm_importance_sampling``)."""
        device = self.accelerator.device
        input_ids, attention_mask = pad_sequences(prompt_ids, self._tokenizer.pad_token_id, side="left")
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        config = self.generation_config
        if fast and plain_sampling(config):
            completion_ids, logps = sample_with_logprobs(
                model, input_ids, attention_mask, max_new_tokens=config.max_new_tokens,
                eos_token_ids=self.eos_token_ids, pad_token_id=self._tokenizer.pad_token_id,
                temperature=self.temperature, top_k=config.top_k or 0,
                top_p=1.0 if config.top_p is None else config.top_p, min_new_tokens=config.min_new_tokens or 0,
            )
        else:
            completion_ids, logps = generate_with_logprobs(model, input_ids, attention_mask, config)
        completion_ids, logps = completion_ids.cpu(), logps.cpu()
        lengths, _ = lengths_to_first_eos(completion_ids, self.eos_token_ids)
        self._sampler_logps = ([logps[i, :n].tolist() for i, n in enumerate(lengths)]
                               if self.args.vllm_importance_sampling else None)
        return prompt_ids, [completion_ids[i, :n].tolist() for i, n in enumerate(lengths)]

    # ---------------------------------------------------------------- logits
    def _forward_logits(self, model, input_ids, attention_mask, logits_to_keep):
        if not self.args.lean_logits:
            return super()._forward_logits(model, input_ids, attention_mask, logits_to_keep)
        # The last position's logits predict past the completion and are dropped by TRL: do not compute them.
        model_inputs = {"input_ids": input_ids[:, :-1], "attention_mask": attention_mask[:, :-1], "use_cache": False}
        if "logits_to_keep" in self.model_kwarg_keys:
            model_inputs["logits_to_keep"] = logits_to_keep
        logits = model(**model_inputs).logits[:, -logits_to_keep:, :]
        return logits if self.temperature == 1.0 else logits / self.temperature

    def _teacher_logits(self, teacher_model, inputs, logits_to_keep):
        """The teacher's logits of the completion positions: constants, computed without autograd bookkeeping
        (``teacher_inference_mode``), optionally with its body under low-precision autocast (``teacher_dtype``).

        With ``distillation_topk = K > 0``: only their top-K reduction (``sdft.losses.TeacherTopK``, ``[B, T, K]``
        values and indices, the tail's log-mass, the sampled tokens' log-probabilities). With ``lean_logits`` and a
        plain ``nn.Linear`` output head it is made from the teacher's hidden states ``loss_chunk_size`` positions at a
        time (``sdft.losses.head_top_k``), so the teacher's ``[B, T, V]`` logits never exist whole; otherwise they
        come whole from its forward and are reduced at once (``sdft.losses.teacher_top_k``) and freed.
        """
        k = getattr(self.args, "distillation_topk", 0) or 0
        chunk = self.args.loss_chunk_size or None
        ids = inputs["completion_ids"]
        if k > 0 and self.args.lean_logits and _linear_head(teacher_model) is not None:
            with self._teacher_no_graph():
                hidden = self._teacher_hidden(teacher_model, inputs, logits_to_keep)
            head = _linear_head(teacher_model)
            if self.args.teacher_dtype is not None:
                hidden = hidden.float()  # the head in float32, as for the full logits below
            # outside inference mode: the reduction is made of ordinary tensors, which autograd may save
            return head_top_k(hidden, head.weight, head.bias, k, ids, chunk, self.temperature)
        logits = self._teacher_full_logits(teacher_model, inputs, logits_to_keep)
        return logits if k == 0 else teacher_top_k(logits, k, ids, chunk)

    def _teacher_no_graph(self):
        return torch.inference_mode() if self.args.teacher_inference_mode else torch.no_grad()

    def _teacher_hidden(self, teacher_model, inputs, logits_to_keep):
        """The teacher body's last hidden states of the completion positions (under ``teacher_dtype`` autocast when
        set); the last position predicts past the completion and is not computed."""
        ids, mask = inputs["teacher_input_ids"], inputs["teacher_attention_mask"]
        autocast = (torch.autocast(ids.device.type, dtype=getattr(torch, self.args.teacher_dtype))
                    if self.args.teacher_dtype is not None else contextlib.nullcontext())
        with self._get_teacher_context_for_self_distillation(), autocast:
            return _causal_lm(teacher_model).model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1],
                                                   use_cache=False).last_hidden_state[:, -logits_to_keep:]

    def _teacher_full_logits(self, teacher_model, inputs, logits_to_keep):
        ids, mask = inputs["teacher_input_ids"], inputs["teacher_attention_mask"]
        with self._teacher_no_graph(), self._get_teacher_context_for_self_distillation():
            if self.args.teacher_dtype is None:
                return self._forward_logits(teacher_model, ids, mask, logits_to_keep)
            autocast = torch.autocast(ids.device.type, dtype=getattr(torch, self.args.teacher_dtype))
            head = _linear_head(teacher_model) if self.args.lean_logits else None
            if head is None:
                with autocast:
                    return self._forward_logits(teacher_model, ids, mask, logits_to_keep).float()
            with autocast:  # the body; the last position predicts past the completion and is not computed
                hidden = _causal_lm(teacher_model).model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1],
                                             use_cache=False).last_hidden_state[:, -logits_to_keep:]
            logits = torch.nn.functional.linear(hidden.float(), head.weight, head.bias)  # the head in float32
        return logits if self.temperature == 1.0 else logits / self.temperature

    # ---------------------------------------------------------------- the student's fused head
    def _fused_head_requested(self) -> bool:
        return bool(self.args.fused_lm_head and self.args.loss_chunk_size and self.args.lean_logits)

    def _distributed(self) -> bool:
        """Several processes, or sharded weights: the student's forward must go through the wrapped model."""
        return self.accelerator.num_processes > 1 or self.is_deepspeed_enabled or self.is_fsdp_enabled

    def _fused_head_usable(self, model) -> bool:
        if not self._fused_head_requested() or self.use_teacher_server or self._distributed():
            return False
        return _linear_head(model) is not None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if return_outputs or not self._fused_head_usable(model):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        loss, div = self._fused_self_distillation_loss(model, inputs)
        self._log_divergence(model, [(inputs["completion_mask"], div)])
        return loss / (self.current_gradient_accumulation_steps if self.model.training else 1.0)

    def training_step(self, model, inputs, num_items_in_batch=None):
        if not (self.args.sequence_microbatches and self._fused_head_usable(model)):
            return super().training_step(model, inputs, num_items_in_batch)
        model.train()
        inputs = self._prepare_inputs(inputs)
        batch_size = inputs["completion_ids"].size(0)
        scale = batch_size * self.current_gradient_accumulation_steps
        total = torch.zeros((), device=inputs["completion_ids"].device)
        logged = []
        for b in range(batch_size):
            seq = _one_sequence(inputs, b)
            if seq is None:  # an empty completion has no loss term (its share of the mean is 0)
                continue
            with self.compute_loss_context_manager():
                loss, div = self._fused_self_distillation_loss(model, seq)
            self.accelerator.backward(loss / scale)
            total += loss.detach() / scale
            logged.append((seq["completion_mask"], div))
        self._log_divergence(model, logged)
        self._step += 1  # TRL's training_step counts steps for its rollout buffer
        return total

    def _fused_self_distillation_loss(self, model, inputs):
        """``_distillation_loss`` of the teacher's logits and the student's hidden states and output head."""
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        T = completion_ids.size(1)
        teacher_logits = self._teacher_logits(self.teacher_model, inputs, T)
        input_ids = torch.cat([inputs["prompt_ids"], completion_ids], dim=1)[:, :-1]
        attention_mask = torch.cat([inputs["prompt_mask"], completion_mask], dim=1)[:, :-1]
        lm = _causal_lm(model)
        hidden = lm.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        return self._distillation_loss(StudentHead(hidden[:, -T:], lm.get_output_embeddings()), teacher_logits,
                                       inputs)


def _causal_lm(model):
    """The causal LM itself: under a PEFT wrapper, the model it wraps (whose layers hold the LoRA layers, so that
    its body's forward is the adapted one, and follows the active or disabled adapter)."""
    return model.get_base_model() if is_peft_model(model) else model


def _linear_head(model) -> torch.nn.Linear | None:
    """The output head of an unquantized causal LM (a PEFT model's included) whose body is ``.model``, when that
    head is an ``nn.Linear`` (an adapted head is not) whose weight is whole outside the model's forward (a ZeRO-3
    partitioned one is not): then logits = head(body(...).last_hidden_state) can be computed in two parts."""
    lm = _causal_lm(model)
    if getattr(lm, "_is_quantized", False) or getattr(lm, "is_quantized", False) \
            or getattr(lm, "is_loaded_in_4bit", False) or getattr(lm, "is_loaded_in_8bit", False) \
            or getattr(lm, "model", None) is None:
        return None
    head = lm.get_output_embeddings() if hasattr(lm, "get_output_embeddings") else None
    if not isinstance(head, torch.nn.Linear) or hasattr(head.weight, "ds_id"):  # (ds_id: a ZeRO-3 parameter)
        return None
    return head


def _one_sequence(inputs: dict, b: int) -> dict | None:
    """Row ``b`` of a rollout batch without its padding (prompts are left-padded, completions right-padded)."""
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
