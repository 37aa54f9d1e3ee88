"""SDFT training on TRL's ``SDFTTrainer``. The only module of this repository that imports ``trl.experimental``.

What this adds to TRL 1.16's trainer:
  * The loss is ours (``sdft.losses``): full-vocabulary per-token divergence (forward, reverse or generalized JSD)
    with all three gradient estimators of Appendix A.1 (TRL has the analytic and sampled-token ones, not the
    Rao-Blackwellized one) and first-k masking; or, with ``distillation_topk = K``, the forward KL over the
    teacher's top K tokens and a tail bucket, the teacher's logits reduced to their top K right after its forward
    (``FastPaths._teacher_logits``).
  * When the rollouts come from another copy of the weights (vLLM, or the low-precision sampler copy of
    ``sdft.speedups``), the sampler's token log-probabilities are kept and the loss is reweighted by the truncated
    ratios pi_train(y_t) / pi_sampler(y_t) (Algorithm 1, line 17): one weight per rollout, their mean over its loss
    tokens, as the authors' code, or each token its own, as TRL (``importance_sampling_level``).
  * ``num_generations`` rollouts per prompt keep the prompts per optimizer step and the number of steps (TRL's
    trainer divides the prompts of a step by it).
  * The EMA teacher update is one fused ``torch._foreach_lerp_`` over all parameters
    (phi <- phi + alpha * (theta - phi) = alpha * theta + (1 - alpha) * phi) instead of a loop over tensors.
  * Checkpoints also hold the teacher's weights, so a resumed run continues with the same EMA teacher; a
    checkpoint counts as complete only with them (``sdft.checkpoints``), and resuming one without them is an
    error, never a silent restart of the teacher.
  * With a LoRA student (``use_peft``, ``sdft.adapters``) the teacher kinds keep their meaning without a copy of the
    base weights: ``ema`` is the shared base weights with a second adapter, ``teacher``, which starts as a copy of
    the student's adapter and moves towards it by the fused EMA (only the adapter weights are lerped; TRL's
    ``PEFTAdapterEMACallback`` starts its adapter at zero instead and does not survive a resume); ``base`` is the
    student with its adapter disabled; ``live`` is the student. Checkpoints hold the student's adapter (the
    teacher's is not saved with it) and the teacher's in ``teacher_model.safetensors`` (PEFT's adapter form).
  * The prompts of epoch e are the (e+1)-th permutation of the seeded sampler whichever epoch the process started
    in (``EpochSeededRepeatSampler``): TRL's sampler draws every epoch from one generator, so a run resumed in its
    second epoch or later replayed the first epoch's order.

The loss, one path: ``SelfDistillationTrainer._distillation_loss(student, teacher_logits, batch)``
  1. computes the per-token terms (D_t, log pi_theta(y_t), log pi(y_t)) at the completion positions:
     ``sdft.losses.token_terms`` from the student's logits ``[B, T, V]``, or ``sdft.losses.head_token_terms`` from
     its hidden states and output head (``sdft.speedups.StudentHead``), which makes the logits chunk by chunk;
  2. reweights each token by the importance weights above, from the student's log-probabilities of the sampled
     tokens;
  3. returns ``sdft.losses.loss_from_terms``, the estimator's surrogate averaged per sequence and then over
     sequences, with the per-token divergence, whose mean over the loss tokens is logged.
Its inputs come from TRL's ``compute_loss``, through ``_compute_teacher_student_logits`` (the teacher's and the
student's logits) and ``_compute_self_distillation_loss``, or from the fast paths of ``sdft.speedups`` (the
``FastPaths`` mixin, switched by the ``SpeedSwitches`` fields), which change only how the inputs are produced: the
student's hidden states instead of its logits, one rollout at a time, the teacher under inference mode or
autocast.

Everything else -- on-policy rollouts (HF ``generate``, or on GPUs vLLM colocated with sleep mode), teacher prompt
construction, the teacher copy for ``base`` / ``ema`` and the student itself for ``live`` -- is TRL's.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from transformers import TrainerCallback

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from trl.experimental.sdft import SDFTConfig, SDFTTrainer
    from trl.experimental.sdft.sdft_trainer import DistillationLogits
    from trl.experimental.sdft.teacher_sync import SyncTeacherModelCallback

from accelerate.utils import is_peft_model
from trl.trainer.utils import RepeatSampler, selective_log_softmax, use_adapter

from sdft.adapters import add_teacher_adapter, adapter_state, load_adapter_state
from sdft.checkpoints import CompleteCheckpoints
from sdft.health import divergence_summary, format_rate, head_entropy, masked_mean, rollout_health, token_entropy
from sdft.losses import (ESTIMATORS, head_token_terms, loss_from_terms, loss_mask_for, per_token_divergence,
                         sequence_importance_weights, token_terms, truncated_importance_weights)
from sdft.sequences import pad_sequences
from sdft.speedups import FastPaths, SpeedSwitches, StudentHead
from sdft.distributed import gathered, weights_sharded

# The library versions the overrides below were written and tested against. TRL's SDFT trainer is experimental:
# another version may rename or re-order what these hooks assume, so an import under another version warns once.
#   from TRL's SDFTTrainer (trl.experimental.sdft): __init__, compute_loss, training_step, log, sample_rollouts,
#     _setup_teacher_model, _get_train_sampler, _get_teacher_context_for_self_distillation,
#     _compute_teacher_student_logits, _compute_self_distillation_loss, _forward_logits, _generate_transformers,
#     _generate_vllm;
#   from transformers' Trainer: _save, _save_checkpoint, _load_from_checkpoint, _load_optimizer_and_scheduler.
CHECKED_VERSIONS = {"trl": "1.16.0", "transformers": "5.17.0"}


def _warn_on_other_versions() -> None:
    from importlib.metadata import version

    other = {name: version(name) for name, want in CHECKED_VERSIONS.items() if version(name) != want}
    if other:
        warnings.warn(f"sdft.trainer overrides TRL / transformers hooks checked against {CHECKED_VERSIONS}; installed: "
                      f"{other}. Run the test suite before trusting results (requirements.txt pins the checked ones).",
                      stacklevel=2)


_warn_on_other_versions()

TEACHER_WEIGHTS_FILE = "teacher_model.safetensors"
TEACHER_ADAPTER = "teacher"  # the EMA teacher's adapter beside a LoRA student's
IMPORTANCE_SAMPLING_LEVELS = ("per_sequence", "per_token")
EMA_CHUNK = 1 << 24  # elements per float32 intermediate of the bf16 EMA update
EMA_GATHER_BUCKET = 1 << 26  # ZeRO-3: elements of each model gathered at once for the EMA update (128 MiB in bf16)


@dataclass
class SelfDistillationConfig(SpeedSwitches, SDFTConfig):
    """TRL's ``SDFTConfig`` with the paper's defaults where TRL's differ, the knobs of the paper that TRL lacks, and
    the speed switches (``sdft.speedups.SpeedSwitches``: the one list of them, with what each does).

    The divergence is computed over the full vocabulary (``distillation_mode="full_logits"``), or with
    ``distillation_topk = K > 0`` over the teacher's top K tokens and a tail bucket (forward KL only; our loss, not
    TRL's ``topk_logits`` mode); ``divergence`` names it and sets TRL's ``distillation_alpha`` (0 forward, 1 reverse,
    between: generalized JSD).
    ``teacher_template`` names the teacher's context (``sdft.prompts.TEACHER_TEMPLATES``) and sets TRL's
    ``teacher_prompt_template``; ``teacher_context`` says what fills its demonstration slot.
    """

    # --- the paper's values where TRL's defaults differ (Appendix B; where the paper is silent, the authors' code)
    num_generations: int = field(
        default=1,
        metadata={"help": "on-policy rollouts per prompt (the paper: 1; Appendix A.1 tries more). Unlike TRL, G > 1 "
                  "changes neither the prompts per optimizer step nor the number of steps: each step sees "
                  "per_device_train_batch_size x processes x gradient_accumulation_steps prompts, G rollouts of "
                  "each, in G times as many micro-batches of per_device_train_batch_size rollouts (the trainer's "
                  "gradient_accumulation_steps is multiplied by G; config.yaml keeps the value you wrote). Every "
                  "rollout weighs the same, so the loss averages the G rollouts of a prompt, then the prompts."})
    max_prompt_length: int | None = field(default=1024, metadata={"help": "prompts longer than this are cut on "
                                                                          "the left"})
    max_completion_length: int | None = field(
        default=2048, metadata={"help": "rollout length (the paper: 2048 for skills, 1024 for knowledge)"})
    teacher_model_kind: Literal["ema", "base", "live"] = field(
        default="ema", metadata={"help": "teacher weights: ema (an EMA of the student, the paper's), base (the "
                                         "frozen initial model) or live (the current student) (Appendix A.3)"})
    teacher_update_rate: float = field(
        default=0.01, metadata={"help": "EMA rate alpha of the teacher: phi <- alpha * theta + (1 - alpha) * phi "
                                        "after every teacher_sync_steps optimizer steps (Table 3 sweeps "
                                        "{0.01, 0.02, 0.05}; the authors' code: 0.01 every step)"})
    num_loss_tokens_to_skip: int = field(
        default=3, metadata={"help": "the first completion tokens left out of the loss (the paper is silent; the "
                                     "authors' code skips 3, which masks the teacher template's opening artifacts "
                                     "that Section 5 describes)"})
    # --- ours ----------------------------------------------------------------------------------------------------
    divergence: str = field(
        default="forward",
        metadata={"help": "per-token divergence: 'forward' KL(teacher || student) -- what the authors' code used for "
                  "the paper's numbers --, 'reverse' KL(student || teacher) -- the paper's Eq. 1 --, or a number in "
                  "[0, 1] for the generalized JSD (0 = forward, 1 = reverse, TRL's convention). Sets "
                  "distillation_alpha."},
    )
    teacher_template: str = field(
        default="paper", metadata={"help": "the teacher's context: a name of sdft.prompts.TEACHER_TEMPLATES (paper: "
                                           "the paper's template verbatim) or a template text; sets "
                                           "teacher_prompt_template"})
    teacher_context: Literal["answer", "text", "text+answer"] = field(
        default="answer", metadata={"help": "what fills the template's demonstration slot (Figure 7): answer (the "
                                            "record's demonstration, every task's), text (its source text, "
                                            "meta.article: the knowledge task's article) or text+answer (both)"})
    estimator: Literal["analytic", "token", "rao_blackwell"] = field(
        default="analytic", metadata={"help": "gradient estimator (Appendix A.1): analytic (full vocabulary per "
                                              "token, the paper's), token (sampled token; reverse KL only), "
                                              "rao_blackwell (unbiased for the sequence-level reverse KL)"})
    vllm_importance_sampling: bool = field(
        default=True,
        metadata={"help": "reweight by truncated pi_train / pi_sampler when the rollouts come from another copy of "
                  "the weights (vLLM, or the rollout_dtype copy), or from the student itself with top_k > 0, "
                  "top_p < 1 or min_p (rollout_dtype's help). pi_train is the student's full tempered softmax (the "
                  "trainer's logits / temperature); pi_sampler the distribution actually sampled: the sampler's "
                  "tempered softmax truncated by top-k, then top-p (then min-p) and renormalized (vLLM: its "
                  "processed_logprobs, which TRL's vLLM setup requests). On a kept token the ratio is Z_t x "
                  "pi_train / (the sampler's untruncated tempered softmax), Z_t <= 1 the mass the truncation kept "
                  "(>= top_p with top-p alone): the student sampling itself gets weights Z_t <= 1, a different copy "
                  "Z_t times its precision ratio. The weights thus correct towards the student's full distribution "
                  "on the tokens the sampler can draw; the dropped tokens are never sampled, and their share of the "
                  "expectation stays missing."})
    importance_sampling_cap: float = field(
        default=2.0, metadata={"help": "truncation of the importance weights from above (min(ratio, cap)); top-k / "
                               "top-p truncation alone gives ratios <= 1, the cap bounds the sampler copy's "
                               "disagreement with the student"})
    importance_sampling_level: Literal["per_sequence", "per_token"] = field(
        default="per_sequence",
        metadata={"help": "form of the sampler correction: per_sequence (the authors' code: one weight per rollout, "
                  "the mean of its truncated per-token ratios over the loss tokens, on every token) or per_token "
                  "(TRL's: each token's own truncated ratio)"})
    distillation_topk: int = field(
        default=0,
        metadata={"help": "0 (the paper's): the per-token divergence over the full vocabulary. K > 0: the forward KL "
                  "between teacher and student coarse-grained to K + 1 outcomes, the teacher's K most probable "
                  "tokens at each position and one tail bucket for the rest (sdft.losses.topk_forward_kl; equal to "
                  "the full forward KL at K = V). The teacher's logits are reduced to their top K right after its "
                  "forward. divergence=forward and estimator analytic or rao_blackwell only. Replaces TRL's field "
                  "of this name, which only its own topk_logits mode (student's top K, never used here) reads. "
                  "tinker-cookbook's SDFT recipe uses the teacher's top 20 (renormalized, without a tail bucket)."},
    )

    token_kl_clip: float | None = field(
        default=None,
        metadata={"help": "cap on each token's divergence in the loss (None: no cap). The authors' fork "
                  "(mkandrus/Self-Distillation, token_kl_clip) clamps it at c, so tokens above c carry no gradient "
                  "(token_kl_clip_mode=zero_grad); the OPSD author's fix is the same clip of the per-token forward "
                  "KL at 0.05. Motivation (the fork): template and style tokens can have 6-15x the KL of content "
                  "tokens. analytic and rao_blackwell estimators (sdft.losses.clip_token_divergence)"})
    token_kl_clip_mode: Literal["zero_grad", "rescale"] = field(
        default="zero_grad",
        metadata={"help": "zero_grad (the fork's clamp: a clipped token contributes the constant c, no gradient) "
                  "or rescale (ours: the same value, the token's gradient kept in direction and scaled by "
                  "c / D_t)"})
    log_health: bool = field(
        default=True,
        metadata={"help": "log the training-health metrics of every step into metrics.jsonl (health/*: rollout "
                  "length, truncation, EOS, diversity, format rate, student and teacher entropy, divergence mean "
                  "and max; sdft.health). Costs one no-grad entropy pass over the student's output head"})

    def __post_init__(self):
        from sdft.losses import divergence_alpha
        from sdft.prompts import get_template, to_trl_template

        self.distillation_mode = "full_logits"
        self.distillation_alpha = divergence_alpha(self.divergence)
        self.teacher_prompt_template = to_trl_template(get_template(self.teacher_template))
        if self.estimator not in ESTIMATORS:  # (the command line checks choices itself; direct construction here)
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {self.estimator!r}")
        if not isinstance(self.distillation_topk, int) or self.distillation_topk < 0:
            raise ValueError(f"distillation_topk must be an integer >= 0 (0: full vocabulary), got "
                             f"{self.distillation_topk!r}")
        if self.distillation_topk > 0 and self.distillation_alpha != 0.0:
            raise ValueError(f"distillation_topk > 0 is the forward KL over the teacher's top K only: set "
                             f"divergence=forward (got divergence={self.divergence!r})")
        if self.distillation_topk > 0 and self.estimator not in ("analytic", "rao_blackwell"):
            raise ValueError(f"distillation_topk > 0 serves the analytic and rao_blackwell estimators only, got "
                             f"estimator={self.estimator!r}")
        if self.estimator == "token" and self.distillation_alpha != 1.0:
            raise ValueError("the token-level estimator is defined for the reverse KL only (set divergence=reverse)")
        if not 0.0 < self.teacher_update_rate <= 1.0:
            raise ValueError(f"teacher_update_rate must lie in (0, 1], got {self.teacher_update_rate}")
        if self.token_kl_clip is not None and not self.token_kl_clip > 0:
            raise ValueError(f"token_kl_clip must be > 0 (or None: no clip), got {self.token_kl_clip!r}")
        if self.token_kl_clip is not None and self.estimator == "token":
            raise ValueError("token_kl_clip needs estimator analytic or rao_blackwell (the token estimator has no "
                             "per-token divergence term)")
        if self.num_loss_tokens_to_skip < 0:
            raise ValueError("num_loss_tokens_to_skip must be >= 0")
        if self.importance_sampling_level not in IMPORTANCE_SAMPLING_LEVELS:
            raise ValueError(f"importance_sampling_level must be one of {IMPORTANCE_SAMPLING_LEVELS}, "
                             f"got {self.importance_sampling_level!r}")
        if self.num_generations < 1:
            raise ValueError(f"num_generations must be >= 1, got {self.num_generations}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must lie in (0, 1] (1: off), got {self.top_p}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0 (0: off), got {self.top_k!r}")
        # G rollouts per prompt at the same prompts per optimizer step: G times the micro-batches (field help)
        self.prompt_accumulation_steps = self.gradient_accumulation_steps
        self.gradient_accumulation_steps *= self.num_generations
        super().__post_init__()

    def to_dict(self):
        """TRL's, with the gradient accumulation you wrote (the trainer's is that times num_generations)."""
        out = super().to_dict()
        out["gradient_accumulation_steps"] = self.prompt_accumulation_steps
        return out


@torch.no_grad()
def ema_update_(teacher_params: list[torch.Tensor], student_params: list[torch.Tensor], alpha: float,
                generator: torch.Generator | None = None) -> None:
    """phi <- alpha * theta + (1 - alpha) * phi for every pair.

    float32 teachers: one fused multi-tensor ``lerp``. bfloat16 teachers: each update is computed in float32 and
    rounded back to bfloat16 stochastically (``stochastic_round_bf16``, drawing from ``generator``). An EMA step
    ``alpha * (theta - phi)`` is usually far below half a bf16 ulp of ``phi``, so rounding to nearest -- a plain bf16
    ``lerp`` -- drops most updates and the teacher stays near its start whatever ``alpha`` says; rounded
    stochastically, each weight moves by the exact update in expectation. It needs no copy of the teacher: only one
    tensor's float32 intermediates, ``EMA_CHUNK`` elements at a time (about 0.3 GB however large the tensor: a 7B
    model's 545M-entry embedding, whole, would need some 9 GB of them).
    """
    pairs = list(zip(teacher_params, student_params))
    wide = [(t, s) for t, s in pairs if t.dtype != torch.bfloat16]
    if wide:
        torch._foreach_lerp_([t for t, _ in wide], [s for _, s in wide], alpha)
    for t, s in pairs:
        if t.dtype == torch.bfloat16:
            for t_part, s_part in zip(t.view(-1).split(EMA_CHUNK), s.reshape(-1).split(EMA_CHUNK)):
                t_part.copy_(stochastic_round_bf16(t_part.float().lerp_(s_part.float(), alpha), generator))


def stochastic_round_bf16(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """float32 -> bfloat16, rounding up with probability equal to the distance to the lower bf16 neighbour (in
    ulps), so ``E[round(x)] = x``: a uniform 16-bit integer is added to the bits that bf16 drops, which are then
    cleared (the conversion of the result is exact)."""
    bits = x.contiguous().view(torch.int32)
    noise = torch.randint(0, 1 << 16, bits.shape, dtype=torch.int32, device=x.device, generator=generator)
    return ((bits + noise) & -(1 << 16)).view(torch.float32).to(torch.bfloat16)


class FusedEMATeacherCallback(TrainerCallback):
    """Moves the teacher's parameters towards the student's after every ``sync_steps`` optimizer steps: those of two
    models (``of_models``), or the teacher adapter's towards the student's (``sdft.adapters.add_teacher_adapter``).

    ``sharded``: the parameters are DeepSpeed ZeRO-3 partitions (``sdft.training.weights_sharded``). Then they are
    gathered ``EMA_GATHER_BUCKET`` elements at a time -- the student's read only, the teacher's to be changed by
    the main process, which updates them and has them broadcast and partitioned again -- so a process holds at most
    that many whole elements of each model at once (TRL's ``SyncTeacherModelCallback`` gathers both models whole).
    Every process must take part."""

    def __init__(self, teacher_params: list[torch.Tensor], student_params: list[torch.Tensor], alpha: float,
                 sync_steps: int = 1, sharded: bool = False):
        if len(teacher_params) != len(student_params):
            raise ValueError("EMA teacher and student have different numbers of parameters")
        self.alpha, self.sync_steps, self.sharded = alpha, sync_steps, sharded
        self.teacher, self.student = list(teacher_params), list(student_params)

    @classmethod
    def of_models(cls, teacher_model, student_model, alpha: float, sync_steps: int = 1,
                  sharded: bool = False) -> FusedEMATeacherCallback:
        """Every parameter of ``teacher_model`` towards the one of the same name in ``student_model``."""
        t_named = dict(teacher_model.named_parameters())
        s_named = dict(student_model.named_parameters())
        if t_named.keys() != s_named.keys():
            raise ValueError("EMA teacher and student have different parameter names")
        return cls([t_named[k] for k in s_named], [s_named[k] for k in s_named], alpha, sync_steps, sharded)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.sync_steps == 0:
            # bf16 teachers round stochastically; the draws depend on (seed, step) only, so a resumed run repeats them
            device = self.teacher[0].device
            generator = torch.Generator(device=device).manual_seed(args.seed * 1_000_003 + state.global_step)
            if not self.sharded:
                ema_update_([p.data for p in self.teacher], [p.data for p in self.student], self.alpha, generator)
                return
            import deepspeed

            main = torch.distributed.get_rank() == 0
            for lo, hi in _buckets([getattr(p, "ds_numel", p.numel()) for p in self.teacher], EMA_GATHER_BUCKET):
                teacher, student = self.teacher[lo:hi], self.student[lo:hi]
                with deepspeed.zero.GatheredParameters(student, modifier_rank=None), \
                        deepspeed.zero.GatheredParameters(teacher, modifier_rank=0):
                    if main:
                        ema_update_([p.data for p in teacher], [p.data for p in student], self.alpha, generator)


def _buckets(sizes: list[int], limit: int) -> list[tuple[int, int]]:
    """Consecutive index ranges ``[lo, hi)`` of ``sizes`` whose sums stay within ``limit`` (one item larger than
    ``limit`` is a range of its own)."""
    out, lo, total = [], 0, 0
    for i, n in enumerate(sizes):
        if i > lo and total + n > limit:
            out.append((lo, i))
            lo, total = i, 0
        total += n
    if lo < len(sizes):
        out.append((lo, len(sizes)))
    return out


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


class SelfDistillationTrainer(CompleteCheckpoints, FastPaths, SDFTTrainer):
    """TRL's SDFT trainer with the paper's objective (see the module docstring)."""

    args: SelfDistillationConfig

    def _get_train_sampler(self, dataset=None):
        """TRL's sampler (``SDFTTrainer._get_train_sampler``, same arguments), seeded per epoch so that a resumed run
        sees the prompts an uninterrupted one sees (``EpochSeededRepeatSampler``)."""
        return EpochSeededRepeatSampler(
            data_source=self.train_dataset if dataset is None else dataset, mini_repeat_count=self.num_generations,
            batch_size=self.args.generation_batch_size // self.num_generations,
            repeat_count=self.num_iterations * self.args.steps_per_generation, shuffle=self.shuffle_dataset,
            seed=self.args.seed)

    # ---------------------------------------------------------------- teacher
    teacher_adapter: str | None = None  # the EMA teacher's adapter (LoRA students, teacher_model_kind=ema)

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
        ))

    def _setup_teacher_adapter(self) -> None:
        """``ema`` with a LoRA student: the ``teacher`` adapter, a copy of the student's over the same base weights,
        moved by the fused EMA (module docstring)."""
        model = self.accelerator.unwrap_model(self.model)
        teacher, student = add_teacher_adapter(model, TEACHER_ADAPTER)
        self.teacher_model, self.teacher_adapter = self.model, TEACHER_ADAPTER
        if not self.args.fused_ema and self.accelerator.is_main_process:
            print("[sdft] fused_ema=false has no effect with adapters: the EMA teacher's adapter is always updated by "
                  "the fused update of sdft.trainer.ema_update_", flush=True)
        self.add_callback(FusedEMATeacherCallback(teacher, student, self.args.teacher_update_rate,
                                                  self.args.teacher_sync_steps))

    def _get_teacher_context_for_self_distillation(self):
        """TRL's hook: the teacher's weights for its forward -- the teacher adapter when there is one; else TRL's
        (the adapter disabled for ``base`` with a LoRA student, nothing to do otherwise)."""
        if self.teacher_adapter is not None:
            return use_adapter(self.accelerator.unwrap_model(self.model), self.teacher_adapter)
        return super()._get_teacher_context_for_self_distillation()

    def _has_separate_teacher(self) -> bool:
        return self.teacher_model is not None and self.teacher_model is not self.model

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        """transformers' save (checkpoints and ``save_model``), of the student's adapter only when there is a
        teacher adapter: PEFT would write every adapter, the teacher's in a subfolder, and transformers' resume loads
        the subfolders instead of the student's (the teacher's weights are ``TEACHER_WEIGHTS_FILE``)."""
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
        """The separate teacher's (ema / base) weights, or the teacher adapter's, written before the checkpoint is
        marked complete.

        Every process takes part in ``accelerator.get_state_dict`` (under ZeRO-3 / FSDP it gathers the teacher's
        shards; otherwise it is the unwrapped teacher's state dict); the main process writes the file."""
        if self.teacher_adapter is not None:
            if self.args.should_save:
                from safetensors.torch import save_file

                state = adapter_state(self.accelerator.unwrap_model(self.model), self.teacher_adapter)
                save_file(state, str(folder / TEACHER_WEIGHTS_FILE))
            return
        if not self._has_separate_teacher():
            return
        full = self.accelerator.get_state_dict(self.teacher_model)
        if self.args.should_save:
            from safetensors.torch import save_file

            state = {k: v.detach().contiguous().cpu() for k, v in full.items()}
            save_file(_untie(state), str(folder / TEACHER_WEIGHTS_FILE))

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        """The student (transformers) and the teacher (``_load_teacher``). Under DeepSpeed transformers restores the
        student itself and never calls this: the teacher is loaded in ``_load_optimizer_and_scheduler`` there."""
        self._teacher_file(resume_from_checkpoint)
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        self._load_teacher(resume_from_checkpoint)

    def _load_optimizer_and_scheduler(self, checkpoint):
        """transformers' (called on every resume, after the student is restored), then under DeepSpeed the
        teacher."""
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None and self.is_deepspeed_enabled:
            self._load_teacher(checkpoint)

    def _teacher_file(self, checkpoint) -> Path | None:
        """The checkpoint's teacher weights, when this run has a teacher of its own; a checkpoint without them is an
        error."""
        if not (self._has_separate_teacher() or self.teacher_adapter is not None):
            return None
        path = Path(checkpoint) / TEACHER_WEIGHTS_FILE
        if not path.exists():
            raise FileNotFoundError(f"{checkpoint} has no {TEACHER_WEIGHTS_FILE}: resuming it would train against "
                                    "a teacher that is not the checkpoint's")
        return path

    def _load_teacher(self, checkpoint) -> None:
        """The separate teacher's (ema / base) weights, or the teacher adapter's, from ``checkpoint``. A ZeRO-3
        teacher is gathered, loaded on the main process and partitioned again (every process takes part)."""
        from safetensors.torch import load_file

        path = self._teacher_file(checkpoint)
        if path is None:
            return
        if self.teacher_adapter is not None:
            load_adapter_state(self.accelerator.unwrap_model(self.model), self.teacher_adapter, load_file(str(path)))
            return
        teacher = self.accelerator.unwrap_model(self.teacher_model)
        sharded = weights_sharded()
        with gathered(teacher, sharded, modifier_rank=0):
            if not sharded or self.accelerator.process_index == 0:
                device = str(next(teacher.parameters()).device)
                teacher.load_state_dict(load_file(str(path), device=device), strict=False)

    # ---------------------------------------------------------------- rollouts (vLLM importance sampling)
    def _generate_vllm(self, prompt_ids):
        wants_logps = self.args.vllm_importance_sampling
        if wants_logps:
            self.vllm_generation.logprobs = 0  # the sampled token's log-prob, after temperature, top-k and top-p (TRL asks vLLM for processed_logprobs)
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
        if self.args.log_health:
            self._log_rollout_health(batch)
        return batch

    # ---------------------------------------------------------------- training health (sdft.health)
    rollout_format_check = None  # the task's Task.format_check, set by sdft.method: logs health/format_rate

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
        """Per rollout: the student's and the teacher's mean entropy and the divergence's mean and max over its
        loss tokens (each appended once per rollout: the logged value is a mean over rollouts; ``_max`` keys a max)."""
        mode = "train" if self.model.training else "eval"
        chunk = self.args.loss_chunk_size or None
        if isinstance(student, StudentHead):
            s_ent = head_entropy(student.hidden.detach(), student.head.weight, student.head.bias, self.temperature,
                                 chunk)
        else:
            s_ent = token_entropy(student.detach(), chunk)
        t_ent = token_entropy(teacher_logits, chunk) if torch.is_tensor(teacher_logits) else None
        for b in range(div.size(0)):
            summary = divergence_summary(div[b], loss_mask[b])
            if summary is None:
                continue
            self._metrics[mode]["health/divergence_mean"].append(summary["divergence_mean"])
            self._metrics[mode]["health/divergence_max"].append(summary["divergence_max"])
            self._metrics[mode]["health/student_entropy"].append(masked_mean(s_ent[b], loss_mask[b]))
            if t_ent is not None:
                self._metrics[mode]["health/teacher_entropy"].append(masked_mean(t_ent[b], loss_mask[b]))
            if clipped is not None:
                self._metrics[mode]["health/clipped_share"].append(masked_mean(clipped[b].float(), loss_mask[b]))

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """TRL's, except that the ``_max`` metrics of a logging window are reduced by max (TRL averages all)."""
        mode = "train" if self.model.training else "eval"
        maxima = {k: max(v) for k, v in self._metrics[mode].items() if v and k.endswith("_max")}
        for k in maxima:
            self._metrics[mode][k].clear()
        if mode == "eval":
            maxima = {f"eval_{k}": v for k, v in maxima.items()}
        super().log({**logs, **maxima}, start_time)

    # ---------------------------------------------------------------- loss
    def _compute_teacher_student_logits(self, model, teacher_model, inputs):
        """TRL's hook: the teacher's logits of the completion positions (constants, computed first) and the
        student's."""
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        logits_to_keep = completion_ids.size(1)
        teacher_logits = self._teacher_logits(teacher_model, inputs, logits_to_keep)
        student_logits = self._forward_logits(
            model, torch.cat([inputs["prompt_ids"], completion_ids], dim=1),
            torch.cat([inputs["prompt_mask"], completion_mask], dim=1), logits_to_keep,
        )
        return DistillationLogits(completion_ids=completion_ids,
                                  loss_mask=loss_mask_for(completion_mask, self.num_loss_tokens_to_skip),
                                  student_logits=student_logits, teacher_logits=teacher_logits)

    def _compute_self_distillation_loss(self, model, inputs, distillation_logits):
        """TRL's hook, given both logits."""
        loss, div = self._distillation_loss(distillation_logits.student_logits, distillation_logits.teacher_logits,
                                            inputs)
        self._log_divergence(model, [(inputs["completion_mask"], div)])
        return loss

    def _distillation_loss(self, student: torch.Tensor | StudentHead, teacher_logits, inputs):
        """The loss of a batch and its detached per-token divergence ``[B, T]`` (the module docstring's path).

        ``student``: the student's logits of the completion positions, or its hidden states and output head.
        ``teacher_logits``: the teacher's logits, or with ``distillation_topk > 0`` their top-K reduction
        (``sdft.losses.TeacherTopK``; full logits would be reduced here).
        """
        args, ids = self.args, inputs["completion_ids"]
        topk = args.distillation_topk
        # With lean_logits (which the fused head requires) the logged divergence is D_t of these terms, whatever
        # the estimator; without it, a second pass below.
        need_div = args.estimator != "token" or args.lean_logits
        if isinstance(student, StudentHead):
            div, s_tok, t_tok = head_token_terms(
                student.hidden, student.head.weight, student.head.bias, teacher_logits, ids, args.distillation_alpha,
                chunk_size=args.loss_chunk_size, need_div=need_div, temperature=self.temperature, topk=topk,
            )
            sampled_logps = s_tok
        else:
            div, s_tok, t_tok = token_terms(student, teacher_logits, ids, args.distillation_alpha,
                                            args.loss_chunk_size or None, need_div, topk)
            # TRL's log-probabilities of the sampled tokens, the function of its old_per_token_logps (so that an
            # unchanged policy has a ratio of exactly 1); computed only when a ratio is taken
            sampled_logps = selective_log_softmax(student, ids) if self._reweighted(inputs) else None
        is_weights = None if sampled_logps is None else self._importance_weights(inputs, sampled_logps.detach())
        loss = loss_from_terms(div, s_tok, t_tok, inputs["completion_mask"], args.estimator,
                               self.num_loss_tokens_to_skip, is_weights, "sequence_mean", args.token_kl_clip,
                               args.token_kl_clip_mode)
        if not args.lean_logits:  # TRL's way: a second full-vocabulary pass for the logged value
            with torch.no_grad():
                div = per_token_divergence(student.detach(), teacher_logits, args.distillation_alpha, topk)
        if args.log_health and div is not None:
            mask = loss_mask_for(inputs["completion_mask"], self.num_loss_tokens_to_skip)
            clipped = None if args.token_kl_clip is None else div.detach() > args.token_kl_clip
            self._log_token_health(student, teacher_logits, div.detach(), mask, clipped)
        return loss, div.detach()

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


def _untie(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses shared storage (tied embeddings): store independent copies."""
    seen, out = {}, {}
    for k, v in state.items():
        ptr = v.data_ptr()
        out[k] = v.clone() if ptr in seen else v
        seen[ptr] = k
    return out
