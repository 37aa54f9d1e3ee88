"""The configuration of ``sdft.trainer.SelfDistillationTrainer`` (TRL's convention: a config module beside its trainer).

``SelfDistillationConfig`` is TRL's ``SDFTConfig`` with the paper's values where TRL's defaults differ, the paper's
knobs that TRL lacks, and the speed switches (``SpeedSwitches``: the one list of them; the fast paths they turn on are
the functions of ``sdft.speedups``). Every field has a help paragraph (``metadata={"help": ...}``), which
``python -m sdft.train --help-config`` prints. ``__post_init__`` checks the values and is the one place that converts
between prompts and rollouts per optimizer step (``num_generations``).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import Literal

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from trl.experimental.sdft import SDFTConfig

from sdft.losses import ESTIMATORS

ROLLOUT_DTYPES = (None, "bfloat16", "float16", "float32")
TEACHER_DTYPES = (None, "bfloat16", "float16")  # autocast's low-precision types
IMPORTANCE_SAMPLING_LEVELS = ("per_sequence", "per_token")


@dataclass
class SpeedSwitches:
    """The trainer's speed switches (fields of ``SelfDistillationConfig``; their fast paths: ``sdft.speedups``). All but
    ``rollout_dtype`` and ``teacher_dtype`` keep the numbers up to float rounding; those two are the CPU counterparts
    of the paper's bf16 runs and change them by low-precision rounding."""

    fused_ema: bool = field(
        default=True, metadata={"help": "the EMA teacher update as one fused foreach operation over all parameters "
                                "instead of TRL's loop of two kernels per tensor; for a bf16 teacher, computed in "
                                "float32 and rounded stochastically (sdft.ema.ema_update_), where TRL's loop "
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
                  "decode faster where the CPU has bf16 instructions (AVX512-BF16 or AMX; without them torch's bf16 "
                  "products are several times slower than float32: use 'float32' there), refreshed after every optimizer step, with the sampled tokens' log-probabilities "
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
                  "forward is bf16; on a CPU without bf16 instructions, slower than None). None: the training dtype"},
    )

    def __post_init__(self):
        for name, allowed in (("rollout_dtype", ROLLOUT_DTYPES), ("teacher_dtype", TEACHER_DTYPES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        super().__post_init__()


@dataclass
class SelfDistillationConfig(SpeedSwitches, SDFTConfig):
    """TRL's ``SDFTConfig`` with the paper's defaults where TRL's differ, the knobs of the paper that TRL lacks, and
    the speed switches (``SpeedSwitches``: the one list of them, with what each does).

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
    loss_temperature: float | None = field(
        default=None,
        metadata={"help": "the temperature at which the loss compares the student's and the teacher's next-token "
                  "distributions (both logits divided by it). null (default): the sampling temperature, TRL's "
                  "convention, under which `temperature` changes two things at once: which rollouts are sampled "
                  "and how sharp the distillation target is. Set it to separate them: `temperature=0.7 "
                  "loss_temperature=1.0` samples colder rollouts and distils the untempered distributions. The "
                  "importance weights always compare the student and the sampler at the sampling temperature "
                  "(the distribution the rollouts came from)."})
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
        if self.loss_temperature is not None and not self.loss_temperature > 0:
            raise ValueError(f"loss_temperature must be > 0 (or null: the sampling temperature), "
                             f"got {self.loss_temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must lie in (0, 1] (1: off), got {self.top_p}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0 (0: off), got {self.top_k!r}")
        # G rollouts per prompt (num_generations): the one place that converts between prompts and rollouts.
        # TRL's trainer counts rollouts: an optimizer step is gradient_accumulation_steps micro-batches of
        # per_device_train_batch_size rollouts, among which its sampler repeats each prompt G times, so G > 1 would
        # see G times fewer prompts per step and take G times more steps per epoch. The paper's G adds rollouts of
        # the same prompts (Appendix A.1), so the trainer gets G times the accumulation written -- before TRL's
        # __post_init__, which derives steps_per_generation and generation_batch_size from it. The written value
        # stays as prompt_accumulation_steps: what to_dict (config.yaml, recipes) reports and what a config derived
        # from this one takes (sdft.config.derive_args). Nothing else multiplies or divides by G.
        self.prompt_accumulation_steps = self.gradient_accumulation_steps
        self.gradient_accumulation_steps *= self.num_generations
        super().__post_init__()  # SpeedSwitches' checks, then TRL's

    @property
    def distillation_temperature(self) -> float:
        """The temperature of the loss's distributions: ``loss_temperature``, or the sampling ``temperature``."""
        return self.temperature if self.loss_temperature is None else self.loss_temperature

    def to_dict(self):
        """TRL's, with the gradient accumulation you wrote (the trainer's is that times num_generations: the comment
        at the end of ``__post_init__``)."""
        out = super().to_dict()
        out["gradient_accumulation_steps"] = self.prompt_accumulation_steps
        return out

