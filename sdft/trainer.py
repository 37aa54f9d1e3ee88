"""SDFT training on TRL's ``SDFTTrainer`` (trl.experimental.sdft); its config is ``sdft.sdft_config``.

One step: TRL's ``_prepare_inputs`` samples the rollouts (``sample_rollouts`` -> ``_generate``) and builds the
teacher's prompts; ``compute_loss`` (or ``training_step``, one rollout at a time) calls ``_sdft_loss``, which reads top
to bottom: teacher logits -> the student's logits or hidden states -> per-token terms -> importance weights -> the
estimator's surrogate (divergence, clip, per-rollout mean). The fast paths it takes are functions of
``sdft.speedups``, the losses pure functions of ``sdft.losses``. The TRL / transformers methods overridden are
``OVERRIDDEN_HOOKS``. What this adds to TRL 1.16's trainer:
  * our loss: the full-vocabulary per-token divergence (forward, reverse or generalized JSD) with the three
    gradient estimators of Appendix A.1 (TRL lacks the Rao-Blackwellized one) and first-k masking; or, with
    ``distillation_topk = K``, the forward KL over the teacher's top K tokens and a tail bucket;
  * when the rollouts come from another copy of the weights (vLLM, or the low-precision sampler copy), the loss
    reweighted by the truncated ratios pi_train(y_t) / pi_sampler(y_t) (Algorithm 1, line 17): one weight per
    rollout, the mean over its loss tokens (the authors' code), or one per token (TRL's;
    ``importance_sampling_level``);
  * ``num_generations`` rollouts per prompt at the same prompts per optimizer step and steps (``sdft.sdft_config``);
  * the EMA teacher update fused over all parameters (``sdft.ema``);
  * checkpoints that hold the teacher's weights (``sdft.teacher_checkpoint``) and count as complete only with them
    (``sdft.checkpoints``): a resumed run continues with the same EMA teacher, never a restarted one;
  * with a LoRA student (``use_peft``, ``sdft.adapters``) the teacher kinds without a copy of the base weights:
    ``ema`` is a second adapter, ``teacher``, that starts as a copy of the student's and moves towards it by the
    fused EMA (TRL's ``PEFTAdapterEMACallback`` starts at zero and does not survive a resume); ``base`` is the
    student with its adapter disabled; ``live`` the student;
  * the prompts of epoch e are the (e+1)-th permutation of the seeded sampler whichever epoch the process started in
    (``EpochSeededRepeatSampler``; TRL's replays the first epoch's order after a resume in a later epoch).
Everything else -- on-policy rollouts (HF ``generate``, or on GPUs vLLM colocated with sleep mode), the teacher's
prompts, the teacher copy for ``base`` / ``ema`` -- is TRL's.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from sdft.sdft_config import SelfDistillationConfig  # first: it imports trl.experimental silenced

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from trl.experimental.sdft import SDFTTrainer
    from trl.experimental.sdft.teacher_sync import SyncTeacherModelCallback

from accelerate.utils import is_peft_model
from trl.models import unwrap_model_for_generation
from trl.trainer.utils import RepeatSampler, selective_log_softmax, use_adapter

from sdft.adapters import add_teacher_adapter
from sdft.checkpoints import CompleteCheckpoints
from sdft.ema import FusedEMATeacherCallback
from sdft.health import format_rate, head_entropy, rollout_health, token_entropy, token_health
from sdft.losses import (head_token_log_probs, head_token_terms, loss_from_terms, loss_mask_for, per_token_divergence,
                         sequence_importance_weights, token_terms, truncated_importance_weights)
from sdft.run_io import bf16_matmul_in_hardware
from sdft.sampling import truncates
from sdft.sequences import pad_sequences
from sdft.speedups import (SamplerCopy, StudentHead, fused_head_requested, lean_logits, linear_head, one_sequence,
                           recorded_rollouts, student_head, teacher_logits)
from sdft.teacher_checkpoint import (load_teacher_adapter, load_teacher_model, save_teacher_adapter,
                                     save_teacher_model, teacher_file)
from sdft.timing import TimedSteps
from sdft.distributed import weights_sharded

# The versions the overrides below were written and tested against; another one warns once at import.
CHECKED_VERSIONS = {"trl": "1.16.0", "transformers": "5.17.0"}
# Every TRL / transformers method SelfDistillationTrainer (or its CompleteCheckpoints mixin) overrides, by where the
# overridden one is defined, and why. tests/sdft/test_trainer_hooks.py holds each one's signature under CHECKED_VERSIONS
# and fails when it changes, when one is no longer there, or when an override is missing from this table.
_TRL = "trl.experimental.sdft.sdft_trainer.SDFTTrainer."
_HF = "transformers.trainer.Trainer."
OVERRIDDEN_HOOKS = {
    _TRL + "__init__": "the low-precision sampler copy (rollout_dtype); says which speed switches cannot act; "
                       "the step's timer (sdft.timing.TimedSteps)",
    _TRL + "compute_loss": "ours whole (_sdft_loss): TRL's loss hooks, _compute_teacher_student_logits and "
                           "_compute_self_distillation_loss, are never called",
    _TRL + "training_step": "one rollout at a time without its padding (sequence_microbatches)",
    _TRL + "_forward_logits": "lean_logits; also TRL's rollout log-probs (_compute_rollout_logps), so that an "
                              "unchanged policy has an importance ratio of exactly 1",
    _TRL + "_generate": "rollouts with their tokens' sampler log-probabilities: vLLM's, the sampler copy's, or the "
                        "student's when it samples a truncated distribution",
    _TRL + "sample_rollouts": "the batch gets those log-probabilities (sampler_per_token_logps); rollout health; "
                              "timed (time/rollout_s)",
    _TRL + "_setup_teacher_model": "the fused EMA callback; the teacher adapter of a LoRA student",
    _TRL + "_get_train_sampler": "EpochSeededRepeatSampler: a resumed run sees an uninterrupted run's prompts",
    _TRL + "log": "the _max metrics of a logging window are reduced by max (TRL averages all); the step's time/* "
                  "phases (sdft.timing.TimedSteps)",
    _HF + "autocast_smart_context_manager": "the run's mixed-precision autocast (accelerate's) around the loss, so "
                                            "that bf16 reaches the fused head's student body, which calls the "
                                            "model's body directly and so misses accelerate's wrapped forward",
    _HF + "_save": "a LoRA student with a teacher adapter: the student's adapter only",
    _HF + "_save_checkpoint": "sdft.checkpoints.CompleteCheckpoints: a checkpoint is complete (marked) or ignored; "
                              "timed (sdft.timing.TimedSteps: time/checkpoint_s)",
    _HF + "_load_from_checkpoint": "the teacher's weights with the student's",
    _HF + "_load_optimizer_and_scheduler": "the teacher's weights under DeepSpeed (which skips _load_from_checkpoint)",
}


def _warn_on_other_versions() -> None:
    from importlib.metadata import version

    other = {name: version(name) for name, want in CHECKED_VERSIONS.items() if version(name) != want}
    if other:
        warnings.warn(f"sdft.trainer overrides TRL / transformers hooks (OVERRIDDEN_HOOKS) checked against "
                      f"{CHECKED_VERSIONS}; installed: {other}. Run the test suite before trusting results "
                      "(requirements.txt pins the checked ones).", stacklevel=2)


_warn_on_other_versions()

TEACHER_ADAPTER = "teacher"  # the EMA teacher's adapter beside a LoRA student's


class EpochSeededRepeatSampler(RepeatSampler):
    """TRL's ``RepeatSampler`` whose order in epoch ``e`` (``set_epoch``, called by the Trainer before each epoch) is
    the (e+1)-th permutation drawn from a generator seeded with ``seed``: the order TRL's sampler gives an
    uninterrupted run, which draws every epoch from one generator, and the same order again in a process that
    resumed in epoch ``e`` with a fresh sampler. Without a seed or shuffling it is TRL's sampler."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        if self.shuffle and self.seed is not None:
            self.generator.manual_seed(self.seed)
            for _ in range(self.epoch):  # the permutations of the epochs before this one
                torch.randperm(self.num_samples, generator=self.generator)
        return super().__iter__()


class SelfDistillationTrainer(TimedSteps, CompleteCheckpoints, SDFTTrainer):
    """TRL's SDFT trainer with the paper's objective (the module docstring; the hooks: ``OVERRIDDEN_HOOKS``). Each
    logged step's line has the seconds of its phases (``sdft.timing``): the rollouts, the teacher's forward, the
    student's forward and loss, the rest of the forward-backward span (``backward``), the optimizer, the EMA update
    and checkpoints."""

    args: SelfDistillationConfig
    teacher_adapter: str | None = None  # the EMA teacher's adapter (LoRA students, teacher_model_kind=ema)
    rollout_format_check = None  # the task's Task.format_check, set by sdft.self_distillation: logs health/format_rate
    timed_phases = ("rollout", "teacher", "student", "backward", "optimizer", "checkpoint")  # (+ ema: the callback's)
    step_span = "backward"  # the forward-backward span less the rollout, teacher and student phases inside it

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)  # TRL's, which ends with _setup_teacher_model
        self.sampler_copy: SamplerCopy | None = None
        self._sampler_logps: list[list[float]] | None = None  # the batch's, from _generate to sample_rollouts
        config, main = self.args, self.accelerator.is_main_process
        if is_peft_model(self.model):
            off = []
            if config.rollout_dtype and not self.use_vllm:
                off.append(f"rollout_dtype={config.rollout_dtype} is off (its sampler is a copy of the whole model); "
                           "the student samples its own rollouts")
            if fused_head_requested(config) and not self._distributed() and linear_head(self.model) is None:
                off.append("fused_lm_head and sequence_microbatches are off (a 4-/8-bit base or an adapted output "
                           "head); the student's logits are computed whole")
            if off and main:
                print(f"[sdft] with adapters (use_peft): {'; '.join(off)}", flush=True)
        elif config.rollout_dtype and not self.use_vllm:
            if self._distributed():
                raise ValueError("rollout_dtype needs a single-process, unsharded, non-PEFT model; on GPUs use vLLM "
                                 "(use_vllm), whose sampler is already bf16")
            self.sampler_copy = SamplerCopy(self.accelerator.unwrap_model(self.model),
                                            getattr(torch, config.rollout_dtype), config.fast_rollout_sampler)
        slow = [f"{key}=bfloat16" for key in ("rollout_dtype", "teacher_dtype") if getattr(config, key) == "bfloat16"]
        if slow and main and self.accelerator.device.type == "cpu" and bf16_matmul_in_hardware() is False:
            print(f"[sdft] {' and '.join(slow)} on a CPU without bf16 dot-product instructions (no AVX512-BF16 or "
                  "AMX): torch multiplies bf16 matrices several times slower than float32 here "
                  "(experiments/results/bench_cost_cpu_avx2.md). rollout_dtype=float32 and teacher_dtype=null are "
                  "faster on this CPU; they give other numbers than bf16 (the committed mini runs used bf16)",
                  flush=True)
        if fused_head_requested(config) and self._distributed() and main:
            print(f"[sdft] fused_lm_head and sequence_microbatches are off: they run in a single unsharded process "
                  f"only ({self.accelerator.num_processes} processes, {self.accelerator.distributed_type.value}); "
                  "the student's logits are computed whole, the batch in one forward", flush=True)

    def _distributed(self) -> bool:
        """Several processes, or sharded weights: the student's forward must go through the wrapped model."""
        return self.accelerator.num_processes > 1 or self.is_deepspeed_enabled or self.is_fsdp_enabled

    def _get_train_sampler(self, dataset=None):
        """TRL's sampler (``SDFTTrainer._get_train_sampler``, same arguments), seeded per epoch so that a resumed run
        sees the prompts an uninterrupted one sees (``EpochSeededRepeatSampler``)."""
        return EpochSeededRepeatSampler(
            data_source=self.train_dataset if dataset is None else dataset, mini_repeat_count=self.num_generations,
            batch_size=self.args.generation_batch_size // self.num_generations,
            repeat_count=self.num_iterations * self.args.steps_per_generation, shuffle=self.shuffle_dataset,
            seed=self.args.seed)

    # ---------------------------------------------------------------- the loss of one step
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The batch's SDFT loss (``_sdft_loss``), scaled for gradient accumulation as TRL's."""
        if return_outputs:
            raise ValueError("The SDFTTrainer does not support returning outputs")
        with self.phase_timer.phase("student"):  # (the teacher's forward inside it is its own phase)
            loss, div = self._sdft_loss(model, inputs)
        self._log_divergence(model, [(inputs["completion_mask"], div)])
        return loss / (self.current_gradient_accumulation_steps if self.model.training else 1.0)

    def autocast_smart_context_manager(self, cache_enabled: bool | None = True):
        """Accelerate's autocast for the run's mixed precision (``bf16`` / ``fp16``; a no-op without it or under
        DeepSpeed, which casts itself). transformers 5 returns a no-op here and leaves autocast to accelerate's
        wrapper of ``model.forward``; the fused head (``sdft.speedups.student_head``) runs the model's body
        without that wrapper, so without this its forward and backward ignored ``bf16=True``. Entered by
        ``compute_loss_context_manager`` around every loss (TRL's ``training_step`` and ours)."""
        return self.accelerator.autocast()

    def training_step(self, model, inputs, num_items_in_batch=None):
        """With the fused head and ``sequence_microbatches``: forward and backward one rollout at a time, without its
        padding (the loss is a mean over sequences: its gradient is the sum of the rollouts'); else TRL's."""
        if not (self.args.sequence_microbatches and self._fused_head_usable(model)):
            return super().training_step(model, inputs, num_items_in_batch)
        model.train()
        inputs = self._prepare_inputs(inputs)
        batch_size = inputs["completion_ids"].size(0)
        scale = batch_size * self.current_gradient_accumulation_steps
        total = torch.zeros((), device=inputs["completion_ids"].device)
        logged = []
        for b in range(batch_size):
            seq = one_sequence(inputs, b)
            if seq is None:  # an empty completion has no loss term (its share of the mean is 0)
                continue
            with self.compute_loss_context_manager(), self.phase_timer.phase("student"):
                loss, div = self._sdft_loss(model, seq)
            self.accelerator.backward(loss / scale)
            total += loss.detach() / scale
            logged.append((seq["completion_mask"], div))
        self._log_divergence(model, logged)
        self._step += 1  # TRL's training_step counts steps for its rollout buffer
        return total

    def _sdft_loss(self, model, inputs):
        """The SDFT loss of a batch of rollouts and its detached per-token divergence ``[B, T]``.

        ``inputs`` is TRL's batch (``sample_rollouts``): the rollouts' prompt and completion ids and masks, the
        teacher's prompt (with its privileged context) and the same completions, and the sampled tokens'
        log-probabilities under the weights that sampled them where those differ from the student's now
        (``sampler_per_token_logps``; ``old_per_token_logps``, TRL's, for rollouts reused across steps).
        """
        args, ids, completion_mask = self.args, inputs["completion_ids"], inputs["completion_mask"]
        # 1. the teacher's logits of the completion positions: constants (with distillation_topk, their top K)
        with self.phase_timer.phase("teacher"):
            teacher = teacher_logits(self.teacher_model, inputs, args, self._loss_logits, self._teacher_weights)
        # 2. the student: its logits, or (fused head) its hidden states and output head, the logits made in the loss
        fused = self._fused_head_usable(model)
        if fused:
            student = student_head(model, inputs)
        else:
            student = self._loss_logits(model, torch.cat([inputs["prompt_ids"], ids], dim=1),
                                        torch.cat([inputs["prompt_mask"], completion_mask], dim=1), ids.size(1))
        # 3. the per-token terms (D_t, log pi_theta(y_t), log pi(y_t)), at the loss's temperature. With lean_logits
        # (which the fused head requires) D_t is computed here whatever the estimator, and logged; without it, a
        # second pass below.
        need_div = args.estimator != "token" or args.lean_logits
        loss_t, sample_t = args.distillation_temperature, self.temperature
        reweighted = self._reweighted(inputs)
        if fused:
            div, s_tok, t_tok = head_token_terms(
                student.hidden, student.head.weight, student.head.bias, teacher, ids, args.distillation_alpha,
                chunk_size=args.loss_chunk_size, need_div=need_div, temperature=loss_t, topk=args.distillation_topk)
            sampled_logps = s_tok
            if reweighted and loss_t != sample_t:
                sampled_logps = head_token_log_probs(student.hidden.detach(), student.head.weight.detach(),
                                                     student.head.bias, ids, sample_t, args.loss_chunk_size)
        else:
            div, s_tok, t_tok = token_terms(student, teacher, ids, args.distillation_alpha,
                                            args.loss_chunk_size or None, need_div, args.distillation_topk)
            # TRL's log-probabilities of the sampled tokens, the function of its old_per_token_logps (so that an
            # unchanged policy has a ratio of exactly 1), at the sampling temperature; only when a ratio is taken
            sampled = student if loss_t == sample_t else student.detach() * (loss_t / sample_t)
            sampled_logps = selective_log_softmax(sampled, ids) if reweighted else None
        # 4. the importance weights: truncated pi_train / pi_sampler (and pi_train / pi_old), [B, T], both at the
        # sampling temperature
        is_weights = None if sampled_logps is None else self._importance_weights(inputs, sampled_logps.detach())
        # 5. the estimator's surrogate: each token's divergence, clipped (token_kl_clip), weighted, averaged over
        # the loss tokens of each rollout, then over rollouts
        loss = loss_from_terms(div, s_tok, t_tok, completion_mask, args.estimator, self.num_loss_tokens_to_skip,
                               is_weights, "sequence_mean", args.token_kl_clip, args.token_kl_clip_mode)
        # 6. what is logged: the per-token divergence (TRL's way without lean_logits: a second full pass), health
        if not args.lean_logits:
            with torch.no_grad():
                div = per_token_divergence(student.detach(), teacher, args.distillation_alpha, args.distillation_topk)
        if args.log_health and div is not None:
            mask = loss_mask_for(completion_mask, self.num_loss_tokens_to_skip)
            clipped = None if args.token_kl_clip is None else div.detach() > args.token_kl_clip
            self._log_token_health(student, teacher, div.detach(), mask, clipped)
        return loss, div.detach()

    def _forward_logits(self, model, input_ids, attention_mask, logits_to_keep):
        """TRL's forward to the tempered logits of the completion positions (the student's, the teacher's whole
        logits, TRL's rollout log-probs); with ``lean_logits``, ``sdft.speedups.lean_logits``."""
        if not self.args.lean_logits:
            return super()._forward_logits(model, input_ids, attention_mask, logits_to_keep)
        return lean_logits(model, input_ids, attention_mask, logits_to_keep, self.temperature, self.model_kwarg_keys)

    def _loss_logits(self, model, input_ids, attention_mask, logits_to_keep):
        """``_forward_logits`` at the loss's temperature (``loss_temperature``) instead of the sampling one."""
        loss_t = self.args.distillation_temperature
        if loss_t == self.temperature:
            return self._forward_logits(model, input_ids, attention_mask, logits_to_keep)
        if self.args.lean_logits:
            return lean_logits(model, input_ids, attention_mask, logits_to_keep, loss_t, self.model_kwarg_keys)
        return super()._forward_logits(model, input_ids, attention_mask, logits_to_keep) * (self.temperature / loss_t)

    def _fused_head_usable(self, model) -> bool:
        """Whether the loss gets the student's hidden states and output head (``fused_lm_head``) for ``model``."""
        return fused_head_requested(self.args) and not self._distributed() and linear_head(model) is not None

    # ---------------------------------------------------------------- teacher
    def _setup_teacher_model(self) -> None:
        """TRL's teacher (a copy for ``ema`` / ``base``, made from the model's path: under ZeRO-3 a DeepSpeed engine
        partitioned as the student, under ZeRO-2 a whole copy on every process), with the EMA update replaced by
        ``FusedEMATeacherCallback`` (``fused_ema``; under ZeRO-3 gathered a bucket at a time); the teacher adapter
        for ``ema`` with a LoRA student, except under DeepSpeed (TRL's ``PEFTAdapterEMACallback`` there)."""
        if self.args.teacher_model_kind == "ema" and is_peft_model(self.model) and not self.is_deepspeed_enabled:
            self._setup_teacher_adapter()
            return
        super()._setup_teacher_model()  # TRL's: ema / base copies, base adapters off, live the student
        if self.args.teacher_model_kind != "ema" or not self.args.fused_ema:
            return
        if self.teacher_model is self.model:  # (DeepSpeed with adapters: TRL's PEFTAdapterEMACallback)
            return
        self.remove_callback(SyncTeacherModelCallback)
        self.add_callback(FusedEMATeacherCallback.of_models(
            self.accelerator.unwrap_model(self.teacher_model), self.accelerator.unwrap_model(self.model),
            self.args.teacher_update_rate, self.args.teacher_sync_steps, sharded=weights_sharded(),
            timer=self.phase_timer,
        ))

    def _setup_teacher_adapter(self) -> None:
        """``ema`` with a LoRA student: the ``teacher`` adapter, a copy of the student's over the same base weights,
        moved by the fused EMA (module docstring)."""
        model = self.accelerator.unwrap_model(self.model)
        teacher, student = add_teacher_adapter(model, TEACHER_ADAPTER)
        self.teacher_model, self.teacher_adapter = self.model, TEACHER_ADAPTER
        if not self.args.fused_ema and self.accelerator.is_main_process:
            print("[sdft] fused_ema=false has no effect with adapters: the EMA teacher's adapter is always updated by "
                  "the fused update of sdft.ema.ema_update_", flush=True)
        self.add_callback(FusedEMATeacherCallback(teacher, student, self.args.teacher_update_rate,
                                                  self.args.teacher_sync_steps, timer=self.phase_timer))

    def _teacher_weights(self):
        """The context of the teacher's forward that selects its weights: the teacher adapter when there is one;
        else TRL's (the adapter disabled for ``base`` with a LoRA student, nothing to do otherwise)."""
        if self.teacher_adapter is not None:
            return use_adapter(self.accelerator.unwrap_model(self.model), self.teacher_adapter)
        return self._get_teacher_context_for_self_distillation()

    # ---------------------------------------------------------------- checkpoints (the teacher's weights)
    def _has_separate_teacher(self) -> bool:
        return self.teacher_model is not None and self.teacher_model is not self.model

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        """transformers' save (checkpoints and ``save_model``), of the student's adapter only when there is a
        teacher adapter: PEFT would write every adapter, the teacher's in a subfolder, and transformers' resume loads
        the subfolders instead of the student's (the teacher's weights are ``sdft.teacher_checkpoint``'s)."""
        if self.teacher_adapter is None:
            return super()._save(output_dir, state_dict)
        from transformers.trainer import TRAINING_ARGS_NAME

        from sdft.adapters import save_model_dir

        output_dir = output_dir if output_dir is not None else self.args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        save_model_dir(self.accelerator.unwrap_model(self.model), output_dir)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))

    def _save_checkpoint_extras(self, folder: Path) -> None:
        """``CompleteCheckpoints``' hook: the teacher's weights, the teacher adapter's or the separate teacher's
        (``sdft.teacher_checkpoint``), written before the checkpoint is marked complete (every process calls it)."""
        if self.teacher_adapter is not None:
            save_teacher_adapter(self.accelerator.unwrap_model(self.model), self.teacher_adapter, folder,
                                 self.args.should_save)
        elif self._has_separate_teacher():
            save_teacher_model(self.accelerator, self.teacher_model, folder, self.args.should_save)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        """The student (transformers') and the teacher. Under DeepSpeed transformers restores the student itself and
        never calls this: the teacher is loaded in ``_load_optimizer_and_scheduler`` there."""
        if self.teacher_adapter is not None or self._has_separate_teacher():
            teacher_file(resume_from_checkpoint)  # missing: an error before anything is loaded
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        self._load_teacher(resume_from_checkpoint)

    def _load_optimizer_and_scheduler(self, checkpoint):
        """transformers' (called on every resume, after the student is restored), then under DeepSpeed the
        teacher."""
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None and self.is_deepspeed_enabled:
            self._load_teacher(checkpoint)

    def _load_teacher(self, checkpoint) -> None:
        if self.teacher_adapter is not None:
            load_teacher_adapter(self.accelerator.unwrap_model(self.model), self.teacher_adapter, checkpoint)
        elif self._has_separate_teacher():
            load_teacher_model(self.accelerator.unwrap_model(self.teacher_model), checkpoint,
                               self.accelerator.process_index == 0)

    # ---------------------------------------------------------------- rollouts
    def _generate(self, prompt_ids):
        """TRL's rollouts (``(prompt_ids, completion_ids)``, lists of token ids), keeping in ``_sampler_logps`` each
        sampled token's log-probability wherever the sampler is not the student's full tempered softmax (with
        ``vllm_importance_sampling``): vLLM's; the sampler copy's (``rollout_dtype``); the student's own when it
        samples a truncation (top-k / top-p / min-p; not under DeepSpeed or FSDP, where TRL's generate gathers the
        weights, nor with ``generate_from_teacher``, off-policy by design). Otherwise TRL's ``generate``."""
        wants_logps = self.args.vllm_importance_sampling
        if self.use_vllm:
            if wants_logps:  # the sampled token's, after temperature, top-k and top-p (TRL asks for processed ones)
                self.vllm_generation.logprobs = 0
            if self.state.global_step != self._last_loaded_step:
                self.vllm_generation.sync_weights()
                self._last_loaded_step = self.state.global_step
            num_generations = self.num_generations if self.model.training else self.num_generations_eval
            prompt_ids_out, completion_ids, logprobs, _ = self.vllm_generation.generate(
                prompts=prompt_ids, images=None, num_generations=num_generations)
            self._sampler_logps = (
                [[float("nan") if lp[0] is None else lp[0] for lp in seq] for seq in logprobs]
                if wants_logps and logprobs is not None else None)
            return prompt_ids_out, completion_ids

        def record(model, fast):
            return recorded_rollouts(model, prompt_ids, self.generation_config, self.eos_token_ids,
                                     self._tokenizer.pad_token_id, self.temperature, self.accelerator.device, fast)

        if self.sampler_copy is not None:
            self.sampler_copy.sync(self.state.global_step)
            with torch.inference_mode():
                prompt_ids, completion_ids, logps = record(self.sampler_copy.model, self.args.fast_rollout_sampler)
        elif wants_logps and truncates(self.generation_config) and not (
                self.is_deepspeed_enabled or self.is_fsdp_enabled or self.generate_from_teacher):
            # the student, as TRL's generate samples it (gradient checkpointing off meanwhile), under no_grad
            # (generate's), not inference mode: the student's tensors stay usable by autograd
            with unwrap_model_for_generation(self.model_wrapped, self.accelerator) as model:
                prompt_ids, completion_ids, logps = record(model, fast=False)
        else:
            return super()._generate(prompt_ids)
        self._sampler_logps = logps if wants_logps else None
        return prompt_ids, completion_ids

    def sample_rollouts(self, inputs):
        """TRL's batch of rollouts, with their tokens' sampler log-probabilities (``sampler_per_token_logps``, from
        ``_generate``) and the rollouts' health metrics."""
        with self.phase_timer.phase("rollout"):
            self._sampler_logps = None
            batch = super().sample_rollouts(inputs)
            if self._sampler_logps is not None:
                logps, _ = pad_sequences(self._sampler_logps, 0.0, side="right", dtype=torch.float32)
                batch["sampler_per_token_logps"] = logps[:, : batch["completion_ids"].size(1)].to(
                    batch["completion_ids"].device)
            if self.args.log_health:
                self._log_rollout_health(batch)
        return batch

    # ---------------------------------------------------------------- importance weights and logged metrics
    def _reweighted(self, inputs) -> bool:
        """Whether the batch's rollouts came from other weights: reused ones (TRL's ``old_per_token_logps``, with
        ``distillation_is_clip``) or those of a sampler (``sampler_per_token_logps``)."""
        return (inputs.get("old_per_token_logps") is not None and self.args.distillation_is_clip is not None) \
            or inputs.get("sampler_per_token_logps") is not None

    def _importance_weights(self, inputs, student_tok_logps):
        """Truncated ratios pi_train / pi_old (reused rollouts; per token, TRL's correction) times pi_train /
        pi_sampler (per sequence or per token: ``importance_sampling_level``), ``[B, T]``."""
        is_weights = None
        old = inputs.get("old_per_token_logps")
        sampler = inputs.get("sampler_per_token_logps")
        if old is not None and self.args.distillation_is_clip is not None:  # reused rollouts (TRL's correction)
            is_weights = truncated_importance_weights(student_tok_logps, old, self.args.distillation_is_clip)
        if sampler is not None:  # sampler (vLLM or the rollout_dtype copy) vs trainer mismatch
            w = truncated_importance_weights(student_tok_logps, torch.nan_to_num(sampler, nan=0.0),
                                             self.args.importance_sampling_cap)
            if self.args.importance_sampling_level == "per_sequence":
                w = sequence_importance_weights(
                    w, loss_mask_for(inputs["completion_mask"], self.num_loss_tokens_to_skip))
            is_weights = w if is_weights is None else is_weights * w
            real = inputs["completion_mask"].bool()
            if real.any():  # how far the sampler is from the student: 1.0 when they agree
                mode = "train" if self.model.training else "eval"
                self._metrics[mode]["sampler_is_weight"].append(w[real].mean().item())
        return is_weights

    def _log_divergence(self, model, pieces) -> None:
        """Log the mean per-token divergence over the loss tokens of a batch, given as ``(completion_mask,
        divergence)`` pieces: the whole batch, or its rows one by one."""
        div_sum = n_tokens = torch.zeros((), device=self.accelerator.device)
        for completion_mask, div in pieces:
            mask = loss_mask_for(completion_mask, self.num_loss_tokens_to_skip)
            div_sum, n_tokens = div_sum + (div * mask).sum(), n_tokens + mask.sum()
        mean = self.accelerator.gather(div_sum / n_tokens.clamp(min=1.0)).mean().item()
        self._log_self_distillation_metric("train" if model.training else "eval", mean)

    def _log_rollout_health(self, batch) -> None:
        completions = self._get_completion_ids_list(batch)
        mode = "train" if self.model.training else "eval"
        values = rollout_health(completions, self.eos_token_ids, self.args.max_completion_length)
        if self.rollout_format_check is not None:
            texts = self._tokenizer.batch_decode(completions, skip_special_tokens=True)
            values["format_rate"] = format_rate(texts, self.rollout_format_check)
        for key, value in values.items():
            self._metrics[mode][f"health/{key}"].append(value)

    def _log_token_health(self, student, teacher_logits, div, loss_mask, clipped) -> None:
        """``sdft.health.token_health`` of the batch, with the student's and the teacher's entropies."""
        mode = "train" if self.model.training else "eval"
        chunk = self.args.loss_chunk_size or None
        if isinstance(student, StudentHead):
            s_ent = head_entropy(student.hidden.detach(), student.head.weight, student.head.bias,
                                 self.args.distillation_temperature, chunk)
        else:
            s_ent = token_entropy(student.detach(), chunk)
        t_ent = token_entropy(teacher_logits, chunk) if torch.is_tensor(teacher_logits) else None
        for key, values in token_health(s_ent, t_ent, div, loss_mask, clipped).items():
            self._metrics[mode][f"health/{key}"].extend(values)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """TRL's, except that the ``_max`` metrics of a logging window are reduced by max (TRL averages all)."""
        mode = "train" if self.model.training else "eval"
        maxima = {k: max(v) for k, v in self._metrics[mode].items() if v and k.endswith("_max")}
        for k in maxima:
            self._metrics[mode][k].clear()
        if mode == "eval":
            maxima = {f"eval_{k}": v for k, v in maxima.items()}
        super().log({**logs, **maxima}, start_time)

