"""SDFT training on TRL's ``SDFTTrainer``. The only module of this repository that imports ``trl.experimental``.

What this adds to TRL 1.16's trainer, and why:
  * The loss is ours (``sdft.losses.self_distillation_loss``): full-vocabulary per-token divergence
    (forward, reverse or generalized JSD) with all three gradient estimators of Appendix A.1
    (TRL has the analytic and sampled-token ones, not the Rao-Blackwellized one) and first-k masking.
  * The EMA teacher update is one fused ``torch._foreach_lerp_`` over all parameters
    (phi <- phi + alpha * (theta - phi) = alpha * theta + (1 - alpha) * phi), after every optimizer step,
    instead of a Python loop of two kernels per tensor.
  * With vLLM, or with ``rollout_dtype`` (HF generation from a bf16 copy of the student, refreshed after every
    optimizer step: the CPU counterpart of the paper's bf16 vLLM sampler, half the decoding time), the sampler's
    token log-probabilities are kept and each token's divergence is reweighted by the truncated ratio
    pi_train(y_t) / pi_sampler(y_t) (Algorithm 1, line 17). That copy decodes with eager attention and samples
    with ``sdft.sampling`` (``fast_rollout_sampler``: same distribution, a quarter less decoding time on CPU).
  * ``teacher_dtype``: the teacher's forward (a constant target) under low-precision autocast, its output head in
    float32, as in the paper's bf16 runs (where the teacher's forward is bf16 too); off by default, on in ``mini``.
  * Checkpoints also hold the teacher's weights, so a resumed run continues with the same EMA teacher.
  * Cost (``SelfDistillationConfig`` switches, all on by default, none changes the math; measured by
    ``python -m experiments.bench_cost``): the full-vocabulary loss terms are computed ``loss_chunk_size``
    positions at a time and recomputed in backward; the student's output head is fused into those chunks so
    its ``[B, T, V]`` logits and their gradient never exist whole (``fused_lm_head``, single process only);
    the teacher runs under ``torch.inference_mode`` (``teacher_inference_mode``); no copy of the logits for
    temperature 1, no forward of the last sampled token, and the logged divergence comes from the loss pass
    instead of a second full-vocabulary pass (``lean_logits``). Rollouts use TRL's HF ``generate`` (batched,
    left-padded, KV cache, only the last position's logits, stops when every sequence has ended) or, on GPUs,
    vLLM colocated with sleep mode (``sdft_config_from``).

Everything else -- on-policy rollouts, teacher prompt construction, the teacher copy for ``base`` /
``ema`` and the student itself for ``live`` -- is TRL's.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList, TrainerCallback

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from trl.experimental.sdft import SDFTConfig, SDFTTrainer
    from trl.experimental.sdft.teacher_sync import SyncTeacherModelCallback

from trl.trainer.utils import selective_log_softmax

from accelerate.utils import is_peft_model

from sdft.losses import (head_token_terms, loss_from_terms, loss_mask_for, per_token_divergence,
                         self_distillation_loss, truncated_importance_weights)
from sdft.sampling import plain_sampling, sample_with_logprobs
from sdft.sequences import lengths_to_first_eos, pad_sequences

TEACHER_WEIGHTS_FILE = "teacher_model.safetensors"
ROLLOUT_DTYPES = (None, "bfloat16", "float16", "float32")
TEACHER_DTYPES = (None, "bfloat16", "float16")  # autocast's low-precision types


@dataclass
class SelfDistillationConfig(SDFTConfig):
    """TRL's ``SDFTConfig`` plus the knobs of the paper that TRL lacks.

    The divergence is TRL's ``distillation_alpha`` (0 forward, 1 reverse, between: generalized JSD) and is
    always computed over the full vocabulary (``distillation_mode="full_logits"``).
    """

    estimator: str = field(default="analytic", metadata={"help": "analytic | token | rao_blackwell (Appendix A.1)"})
    vllm_importance_sampling: bool = field(
        default=True, metadata={"help": "reweight by truncated pi_train / pi_sampler when the rollouts come from "
                                "another copy of the weights (vLLM, or the rollout_dtype copy)"}
    )
    rollout_dtype: str | None = field(
        default=None,
        metadata={"help": "HF generation only: sample the rollouts from a copy of the student in this dtype (e.g. "
                  "'bfloat16'; on CPU decoding reads every weight per token, so half the bytes is about half the "
                  "time), refreshed after every optimizer step, with the sampled tokens' log-probabilities kept for "
                  "the importance weights above -- the CPU counterpart of the paper's bf16 vLLM sampler. None: "
                  "sample from the student itself."},
    )
    fast_rollout_sampler: bool = field(
        default=True,
        metadata={"help": "with rollout_dtype: the copy decodes with eager attention (at one query token SDPA's kernel "
                  "costs more than the attention) and samples with sdft.sampling's loop (one uniform per row and token "
                  "instead of HF's exponential draw per vocabulary entry); same distribution. Temperature sampling "
                  "only: other sampling settings use HF generate"},
    )
    teacher_dtype: str | None = field(
        default=None,
        metadata={"help": "run the teacher's forward (the constant target) under autocast to this dtype, its output "
                  "head in float32 (e.g. 'bfloat16': the CPU counterpart of the paper's bf16 GPU runs, where every "
                  "forward is bf16; measured shift of the teacher's distribution: mean KL ~3e-4 nats per token on "
                  "SmolLM2-135M). None: the training dtype"},
    )
    importance_sampling_cap: float = field(default=2.0, metadata={"help": "truncation of the importance weights"})
    fused_ema: bool = field(default=True, metadata={"help": "one fused foreach EMA update instead of TRL's loop"})
    loss_chunk_size: int = field(
        default=64,
        metadata={"help": "completion positions per chunk of the full-vocabulary loss terms, recomputed in "
                  "backward (sdft.losses.token_terms); 0 computes them in one piece. Same values and gradients."},
    )
    teacher_inference_mode: bool = field(
        default=True, metadata={"help": "teacher forward under torch.inference_mode (TRL: no_grad)"}
    )
    fused_lm_head: bool = field(
        default=True,
        metadata={"help": "with loss_chunk_size > 0: the student's logits are made chunk by chunk from its hidden "
                  "states inside the loss, never whole (sdft.losses.head_token_terms). Single process, non-PEFT "
                  "models with an output-embedding head only; otherwise the plain path runs."},
    )
    sequence_microbatches: bool = field(
        default=True,
        metadata={"help": "with fused_lm_head: forward and backward one rollout at a time, without its padding "
                  "(the loss is a mean over sequences, so its gradient is the sum of the per-sequence ones): no "
                  "compute on padding, a quarter of the activation memory at batch 4"},
    )
    lean_logits: bool = field(
        default=True,
        metadata={"help": "no copy of the logits for temperature 1, no forward of the last token (it predicts "
                  "nothing), and the logged divergence taken from the loss pass instead of a second full-vocabulary pass"},
    )

    def __post_init__(self):
        self.distillation_mode = "full_logits"
        for name, allowed in (("rollout_dtype", ROLLOUT_DTYPES), ("teacher_dtype", TEACHER_DTYPES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        super().__post_init__()


@torch.no_grad()
def ema_update_(teacher_params: list[torch.Tensor], student_params: list[torch.Tensor], alpha: float) -> None:
    """phi <- alpha * theta + (1 - alpha) * phi for every pair, as one fused multi-tensor operation."""
    torch._foreach_lerp_(teacher_params, student_params, alpha)


class FusedEMATeacherCallback(TrainerCallback):
    """Moves the teacher towards the student after every ``sync_steps`` optimizer steps."""

    def __init__(self, teacher_model, student_model, alpha: float, sync_steps: int = 1):
        self.alpha, self.sync_steps = alpha, sync_steps
        t_named = dict(teacher_model.named_parameters())
        s_named = dict(student_model.named_parameters())
        if t_named.keys() != s_named.keys():
            raise ValueError("EMA teacher and student have different parameter names")
        self.teacher = [t_named[k] for k in s_named]
        self.student = [s_named[k] for k in s_named]

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.sync_steps == 0:
            ema_update_([p.data for p in self.teacher], [p.data for p in self.student], self.alpha)


class SampledTokenLogProbs(LogitsProcessor, StoppingCriteria):
    """Records log pi_sampler(y_t | y_<t) of every sampled token during HF ``generate``.

    As a logits processor (HF runs user processors after its own, e.g. repetition penalty or minimum length, and
    before its temperature / top-k / top-p warpers) it keeps the step's log-softmax of ``scores / temperature``; as
    a stopping criterion (called once the token is appended) it picks the sampled token's entry. Never changes the scores and never stops generation. Like TRL's own
    ``old_per_token_logps``, top-k / top-p truncation is not part of the recorded probability.
    """

    def __init__(self, temperature: float = 1.0):
        self.temperature = temperature
        self._step_logps: torch.Tensor | None = None
        self.steps: list[torch.Tensor] = []

    def __call__(self, input_ids, scores):  # no **kwargs: HF's processor list would demand them by name
        if scores is not None and self._step_logps is None:  # as a logits processor: before sampling
            self._step_logps = torch.log_softmax(scores.float() / self.temperature, dim=-1)
            return scores
        # as a stopping criterion: the token sampled from the recorded distribution is now input_ids[:, -1]
        self.steps.append(self._step_logps.gather(1, input_ids[:, -1:]).squeeze(1))
        self._step_logps = None
        return torch.zeros(input_ids.size(0), dtype=torch.bool, device=input_ids.device)

    def per_token_logps(self) -> torch.Tensor:
        """[batch, generated steps]"""
        return torch.stack(self.steps, dim=1)


class SelfDistillationTrainer(SDFTTrainer):
    """TRL's SDFT trainer with the paper's objective (see the module docstring)."""

    args: SelfDistillationConfig

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._sampler_model, self._sampler_step, self._sampler_pairs = None, None, None
        if self.args.rollout_dtype and not self.use_vllm:
            self._setup_sampler_copy(getattr(torch, self.args.rollout_dtype))

    # ---------------------------------------------------------------- rollouts from a low-precision copy
    def _setup_sampler_copy(self, dtype: torch.dtype) -> None:
        model = self.accelerator.unwrap_model(self.model)
        if self.accelerator.num_processes > 1 or self.is_deepspeed_enabled or self.is_fsdp_enabled \
                or is_peft_model(model):
            raise ValueError("rollout_dtype needs a single-process, unsharded, non-PEFT model; on GPUs use vLLM "
                             "(use_vllm), whose sampler is already bf16")
        import copy

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

    def _generate_transformers(self, prompt_ids):
        if self._sampler_model is None:
            return super()._generate_transformers(prompt_ids)
        self._sync_sampler()
        device = self.accelerator.device
        input_ids, attention_mask = pad_sequences(prompt_ids, self._tokenizer.pad_token_id, side="left")
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        config = self.generation_config
        if self.args.fast_rollout_sampler and plain_sampling(config):
            completion_ids, logps = sample_with_logprobs(
                self._sampler_model, input_ids, attention_mask, max_new_tokens=config.max_new_tokens,
                eos_token_ids=self.eos_token_ids, pad_token_id=self._tokenizer.pad_token_id,
                temperature=self.temperature, min_new_tokens=config.min_new_tokens or 0,
            )
        else:
            recorder = SampledTokenLogProbs(self.temperature)
            with torch.inference_mode():
                out = self._sampler_model.generate(
                    input_ids=input_ids, attention_mask=attention_mask, generation_config=config,
                    logits_processor=LogitsProcessorList([recorder]),
                    stopping_criteria=StoppingCriteriaList([recorder]),
                )
            completion_ids, logps = out[:, input_ids.size(1):], recorder.per_token_logps()
        completion_ids, logps = completion_ids.cpu(), logps.cpu()
        lengths, _ = lengths_to_first_eos(completion_ids, self.eos_token_ids)
        self._sampler_logps = ([logps[i, :n].tolist() for i, n in enumerate(lengths)]
                               if self.args.vllm_importance_sampling else None)
        return prompt_ids, [completion_ids[i, :n].tolist() for i, n in enumerate(lengths)]

    # ---------------------------------------------------------------- teacher
    def _setup_teacher_model(self) -> None:
        super()._setup_teacher_model()
        if self.args.teacher_model_kind != "ema" or not self.args.fused_ema or self.is_deepspeed_enabled:
            return
        if self.teacher_model is self.model:  # PEFT adapter EMA: TRL's callback handles it
            return
        self.remove_callback(SyncTeacherModelCallback)
        self.add_callback(FusedEMATeacherCallback(
            self.accelerator.unwrap_model(self.teacher_model), self.accelerator.unwrap_model(self.model),
            self.args.teacher_update_rate, self.args.teacher_sync_steps,
        ))

    def _has_separate_teacher(self) -> bool:
        return self.teacher_model is not None and self.teacher_model is not self.model

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self._has_separate_teacher() and self.args.should_save:
            from safetensors.torch import save_file
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            state = {k: v.detach().contiguous().cpu() for k, v in
                     self.accelerator.unwrap_model(self.teacher_model).state_dict().items()}
            save_file(_untie(state), str(folder / TEACHER_WEIGHTS_FILE))

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = Path(resume_from_checkpoint) / TEACHER_WEIGHTS_FILE
        if self._has_separate_teacher() and path.exists():
            from safetensors.torch import load_file

            teacher = self.accelerator.unwrap_model(self.teacher_model)
            teacher.load_state_dict(load_file(str(path), device=str(next(teacher.parameters()).device)), strict=False)

    # ---------------------------------------------------------------- rollouts (vLLM importance sampling)
    def _generate_vllm(self, prompt_ids):
        wants_logps = self.args.vllm_importance_sampling
        if wants_logps:
            self.vllm_generation.logprobs = 0  # the sampled token's log-prob, after temperature
        if self.state.global_step != self._last_loaded_step:
            self.vllm_generation.sync_weights()
            self._last_loaded_step = self.state.global_step
        num_generations = self.num_generations if self.model.training else self.num_generations_eval
        prompt_ids_out, completion_ids, logprobs, _ = self.vllm_generation.generate(
            prompts=prompt_ids, images=None, num_generations=num_generations
        )
        self._sampler_logps = (
            [[float("nan") if lp[0] is None else lp[0] for lp in seq] for seq in logprobs]
            if wants_logps and logprobs is not None else None
        )
        return prompt_ids_out, completion_ids

    def sample_rollouts(self, inputs):
        self._sampler_logps = None  # set by _generate_vllm / the rollout_dtype sampler
        batch = super().sample_rollouts(inputs)
        if self._sampler_logps is not None:
            logps, _ = pad_sequences(self._sampler_logps, 0.0, side="right", dtype=torch.float32)
            batch["sampler_per_token_logps"] = logps[:, : batch["completion_ids"].size(1)].to(
                batch["completion_ids"].device)
        return batch

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
        (``teacher_inference_mode``), optionally with its body under low-precision autocast (``teacher_dtype``)."""
        no_graph = torch.inference_mode() if self.args.teacher_inference_mode else torch.no_grad()
        ids, mask = inputs["teacher_input_ids"], inputs["teacher_attention_mask"]
        with no_graph, self._get_teacher_context_for_self_distillation():
            if self.args.teacher_dtype is None:
                return self._forward_logits(teacher_model, ids, mask, logits_to_keep)
            autocast = torch.autocast(ids.device.type, dtype=getattr(torch, self.args.teacher_dtype))
            head = _linear_head(teacher_model) if self.args.lean_logits else None
            if head is None:
                with autocast:
                    return self._forward_logits(teacher_model, ids, mask, logits_to_keep).float()
            with autocast:  # the body; the last position predicts past the completion and is not computed
                hidden = teacher_model.model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1],
                                             use_cache=False).last_hidden_state[:, -logits_to_keep:]
            logits = torch.nn.functional.linear(hidden.float(), head.weight, head.bias)  # the head in float32
        return logits if self.temperature == 1.0 else logits / self.temperature

    def _compute_teacher_student_logits(self, model, teacher_model, inputs):
        if not self.args.teacher_inference_mode and self.args.teacher_dtype is None:
            return super()._compute_teacher_student_logits(model, teacher_model, inputs)
        from trl.experimental.sdft.sdft_trainer import DistillationLogits

        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        logits_to_keep = completion_ids.size(1)
        teacher_logits = self._teacher_logits(teacher_model, inputs, logits_to_keep)  # first: constants
        student_logits = self._forward_logits(
            model, torch.cat([inputs["prompt_ids"], completion_ids], dim=1),
            torch.cat([inputs["prompt_mask"], completion_mask], dim=1), logits_to_keep,
        )
        return DistillationLogits(completion_ids=completion_ids,
                                  loss_mask=loss_mask_for(completion_mask, self.num_loss_tokens_to_skip),
                                  student_logits=student_logits, teacher_logits=teacher_logits)

    def _fused_head_usable(self, model) -> bool:
        if not (self.args.fused_lm_head and self.args.loss_chunk_size and self.args.lean_logits):
            return False
        if self.use_teacher_server or self.accelerator.num_processes > 1 or self.is_deepspeed_enabled \
                or self.is_fsdp_enabled:
            return False
        return _linear_head(model) is not None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if return_outputs or not self._fused_head_usable(model):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        loss = self._fused_self_distillation_loss(model, inputs)
        return loss / (self.current_gradient_accumulation_steps if self.model.training else 1.0)

    def training_step(self, model, inputs, num_items_in_batch=None):
        if not (self.args.sequence_microbatches and self._fused_head_usable(model)):
            return super().training_step(model, inputs, num_items_in_batch)
        model.train()
        inputs = self._prepare_inputs(inputs)
        batch_size = inputs["completion_ids"].size(0)
        scale = batch_size * self.current_gradient_accumulation_steps
        total = torch.zeros((), device=inputs["completion_ids"].device)
        div_sum = torch.zeros((), device=total.device)
        n_tokens = torch.zeros((), device=total.device)
        for b in range(batch_size):
            seq = _one_sequence(inputs, b)
            if seq is None:  # an empty completion has no loss term (its share of the mean is 0)
                continue
            with self.compute_loss_context_manager():
                loss, div = self._fused_self_distillation_loss(model, seq, log=False)
            self.accelerator.backward(loss / scale)
            total += loss.detach() / scale
            mask = loss_mask_for(seq["completion_mask"], self.num_loss_tokens_to_skip)
            div_sum += (div * mask).sum()
            n_tokens += mask.sum()
        mode = "train" if model.training else "eval"
        self._log_self_distillation_metric(
            mode, self.accelerator.gather(div_sum / n_tokens.clamp(min=1.0)).mean().item())
        self._step += 1  # TRL's training_step counts steps for its rollout buffer
        return total

    def _fused_self_distillation_loss(self, model, inputs, log: bool = True):
        """The loss of ``_compute_teacher_student_logits`` + ``_compute_self_distillation_loss`` with the student's
        output head fused into the chunked loss terms (``SelfDistillationConfig.fused_lm_head``)."""
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        T = completion_ids.size(1)
        teacher_logits = self._teacher_logits(self.teacher_model, inputs, T)
        input_ids = torch.cat([inputs["prompt_ids"], completion_ids], dim=1)[:, :-1]
        attention_mask = torch.cat([inputs["prompt_mask"], completion_mask], dim=1)[:, :-1]
        hidden = model.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        head = model.get_output_embeddings()
        div, s_tok, t_tok = head_token_terms(  # need_div: the logged value is the divergence, whatever the estimator
            hidden[:, -T:], head.weight, head.bias, teacher_logits, completion_ids, self.args.distillation_alpha,
            chunk_size=self.args.loss_chunk_size, need_div=True, temperature=self.temperature,
        )
        is_weights = self._importance_weights(inputs, s_tok.detach())
        loss = loss_from_terms(div, s_tok, t_tok, completion_mask, self.args.estimator, self.num_loss_tokens_to_skip,
                               is_weights, "sequence_mean")
        if not log:
            return loss, div.detach()
        self._log_divergence(model, completion_mask, div.detach())
        return loss

    def _importance_weights(self, inputs, student_tok_logps):
        is_weights = None
        old = inputs.get("old_per_token_logps")
        sampler = inputs.get("sampler_per_token_logps")
        if old is not None and self.args.distillation_is_clip is not None:  # reused rollouts (TRL's correction)
            is_weights = truncated_importance_weights(student_tok_logps, old, self.args.distillation_is_clip)
        if sampler is not None:  # sampler (vLLM or the rollout_dtype copy) vs trainer mismatch
            w = truncated_importance_weights(student_tok_logps, torch.nan_to_num(sampler, nan=0.0),
                                             self.args.importance_sampling_cap)
            is_weights = w if is_weights is None else is_weights * w
            real = inputs["completion_mask"].bool()
            if real.any():  # how far the sampler is from the student: 1.0 when they agree
                mode = "train" if self.model.training else "eval"
                self._metrics[mode]["sampler_is_weight"].append(w[real].mean().item())
        return is_weights

    def _log_divergence(self, model, completion_mask, div):
        with torch.no_grad():
            mask = loss_mask_for(completion_mask, self.num_loss_tokens_to_skip)
            mean_div = (div * mask).sum() / mask.sum().clamp(min=1.0)
        mode = "train" if model.training else "eval"
        self._log_self_distillation_metric(mode, self.accelerator.gather(mean_div).mean().item())

    # ---------------------------------------------------------------- loss
    def _compute_self_distillation_loss(self, model, inputs, distillation_logits):
        logits = distillation_logits
        completion_mask = inputs["completion_mask"]
        needs_tok = (inputs.get("old_per_token_logps") is not None and self.args.distillation_is_clip is not None) \
            or inputs.get("sampler_per_token_logps") is not None
        is_weights = None
        if needs_tok:
            student_tok = selective_log_softmax(logits.student_logits, logits.completion_ids).detach()
            is_weights = self._importance_weights(inputs, student_tok)

        lean = self.args.lean_logits
        loss = self_distillation_loss(
            logits.student_logits, logits.teacher_logits, logits.completion_ids, completion_mask,
            divergence=self.args.distillation_alpha, estimator=self.args.estimator,
            skip_first=self.num_loss_tokens_to_skip, is_weights=is_weights, reduction="sequence_mean",
            chunk_size=self.args.loss_chunk_size or None, return_divergence=lean,
        )
        if lean:
            loss, div = loss
        else:  # TRL's way: a second full-vocabulary pass for the logged value
            with torch.no_grad():
                div = per_token_divergence(logits.student_logits.detach(), logits.teacher_logits,
                                           self.args.distillation_alpha)
        self._log_divergence(model, completion_mask, div)
        return loss


def _linear_head(model) -> torch.nn.Linear | None:
    """The output head of a plain (non-PEFT, unquantized) causal LM whose body is ``model.model``, when that head
    is an ``nn.Linear``: then logits = head(body(...).last_hidden_state) can be computed in two parts."""
    if is_peft_model(model) or getattr(model, "_is_quantized", False) or getattr(model, "model", None) is None:
        return None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return head if isinstance(head, torch.nn.Linear) else None


def _one_sequence(inputs: dict, b: int) -> dict | None:
    """Row ``b`` of a rollout batch without its padding (prompts are left-padded, completions right-padded)."""
    n = int(inputs["completion_mask"][b].sum())
    if n == 0:
        return None
    prompt = inputs["prompt_mask"][b].bool()
    teacher = inputs["teacher_attention_mask"][b].bool()
    out = {
        "prompt_ids": inputs["prompt_ids"][b][prompt][None], "prompt_mask": inputs["prompt_mask"][b][prompt][None],
        "completion_ids": inputs["completion_ids"][b, :n][None], "completion_mask": inputs["completion_mask"][b, :n][None],
        "teacher_input_ids": inputs["teacher_input_ids"][b][teacher][None],
        "teacher_attention_mask": inputs["teacher_attention_mask"][b][teacher][None],
    }
    for key in ("old_per_token_logps", "sampler_per_token_logps"):
        if inputs.get(key) is not None:
            out[key] = inputs[key][b, :n][None]
    return out


def _untie(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses shared storage (tied embeddings): store independent copies."""
    seen, out = {}, {}
    for k, v in state.items():
        ptr = v.data_ptr()
        out[k] = v.clone() if ptr in seen else v
        seen[ptr] = k
    return out


# ------------------------------------------------------------------------------------------------------
def sdft_config_from(cfg, output_dir) -> SelfDistillationConfig:
    """Translate a RunConfig into the trainer's config (the paper's settings: one rollout, full vocabulary)."""
    from sdft.config import trainer_kwargs
    from sdft.prompts import to_trl_template

    return SelfDistillationConfig(
        **trainer_kwargs(cfg, output_dir),
        max_prompt_length=cfg.max_prompt_length,
        max_completion_length=cfg.max_completion_length,
        num_generations=cfg.num_generations,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        distillation_alpha=cfg.divergence_alpha,
        distillation_is_clip=cfg.importance_sampling_cap,
        estimator=cfg.estimator,
        teacher_model_kind=cfg.teacher_kind,
        teacher_update_rate=cfg.ema_alpha,
        teacher_prompt_template=to_trl_template(cfg.teacher_template),
        num_loss_tokens_to_skip=cfg.skip_first_tokens,
        use_vllm=cfg.use_vllm,
        vllm_mode="colocate",
        vllm_enable_sleep_mode=cfg.use_vllm,
        vllm_gpu_memory_utilization=cfg.vllm_gpu_memory_utilization,
        vllm_importance_sampling=cfg.vllm_importance_sampling,
        importance_sampling_cap=cfg.importance_sampling_cap,
        rollout_dtype=cfg.rollout_dtype,
        teacher_dtype=cfg.teacher_dtype,
        shuffle_dataset=True,
    )


def sdft_dataset(records: list[dict], demonstration_key: str = "demonstration"):
    """TRL's columns: ``prompt`` (chat messages, the student's context) and ``privileged_context``."""
    from datasets import Dataset

    return Dataset.from_list([{"prompt": r["prompt"], "privileged_context": r[demonstration_key]} for r in records])


def build_sdft_trainer(cfg, records, run_dir, model=None, tokenizer=None, callbacks=None,
                       checkpoint_dir=None, args_overrides: dict | None = None) -> SelfDistillationTrainer:
    """``checkpoint_dir`` defaults to ``<run_dir>/checkpoints`` (multi-stage methods give each stage its own).

    ``args_overrides`` sets fields of the ``SelfDistillationConfig`` (e.g. the performance switches).
    """
    from sdft.training import load_student, run_callbacks

    if model is None:
        model, tokenizer = load_student(cfg)
    args = sdft_config_from(cfg, checkpoint_dir or Path(run_dir) / "checkpoints")
    for key, value in (args_overrides or {}).items():
        if not hasattr(args, key):
            raise ValueError(f"SelfDistillationConfig has no field {key!r}")
        setattr(args, key, value)
    return SelfDistillationTrainer(
        model=model,
        args=args,
        train_dataset=sdft_dataset(records),
        processing_class=tokenizer,
        callbacks=(callbacks if callbacks is not None else run_callbacks(run_dir)),
    )


def train_sdft(cfg, records, run_dir, resume_from_checkpoint=None):
    """SDFT (Algorithm 1): on-policy rollouts, demonstration-conditioned EMA teacher, per-token divergence."""
    from sdft.training import final_train_metrics

    trainer = build_sdft_trainer(cfg, records, run_dir)
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    return trainer.model, trainer.processing_class, final_train_metrics(trainer)
