"""Training health of an on-policy run: what its rollouts, its student and its teacher look like, step by step,
and the rule that calls a run collapsed.

Why. On ``mini`` (SmolLM2-135M) SDFT either learns or collapses, depending on the seed, into one generic reply
("I'm ready to assist..."): the student learns the demonstration-conditioned teacher's reaction to its template
instead of the task (``experiments/results/stability_mini/README.md``). The loss does not show it. These numbers do,
and every one of them is a pure function of tensors or strings here, so that the tests can check it against an
independent computation; ``sdft.trainer`` logs them into ``metrics.jsonl`` under ``health/`` every step.

Per step (``rollout_health``, ``token_entropy``, ``divergence_summary``, ``token_health``):
  * ``health/length_mean``: mean rollout length in tokens; ``health/truncated_share``: the share cut at the length
    cap (no EOS); ``health/eos_share``: the share that ended with an EOS token;
  * ``health/distinct_share``: distinct completions / rollouts; ``health/distinct_prefix_share``: distinct first
    ``PREFIX_TOKENS`` tokens / rollouts; ``health/first_token_mode_share``: the share of rollouts whose first token
    is the batch's most common first token (1.0: they all open alike);
  * ``health/student_entropy`` and ``health/teacher_entropy``: mean entropy (nats) of the student's and the
    teacher's next-token distributions over the rollout's loss tokens;
  * ``health/divergence_mean`` and ``health/divergence_max``: the per-token divergence over the loss tokens
    (``_max`` keys are reduced by max over a logging window, the others by mean);
  * ``health/format_rate``: for a task with an answer format (``Task.format_check``), the share of rollouts in it;
  * ``health/clipped_share``: with ``token_kl_clip``, the share of loss tokens above the clip.

Greedy probes (``answer_collapse``): at each validation evaluation of the checkpoint selection
(``sdft.selection``), the share of validation items whose greedy answer is the most common one. The collapse seen on
``mini`` lives in greedy decoding, not in the temperature-1 rollouts (the shared spec's measurement: at most 1 of 4
rollouts a step opened with "I'm ready"), so the probe is the rule's second arm.

The collapse rule (``CollapseRule``), documented here and in the README:
  * rollouts: for ``window`` (4) consecutive logged steps, ``first_token_mode_share >= share`` (0.9: with 4
    rollouts a step, all open with the same token) and the student's mean entropy at most its first logged value
    divided by ``entropy_factor`` (4); or
  * greedy: a validation probe whose most common answer covers at least ``answer_share`` (0.5) of the items (the same
    threshold the tables use to mark a collapsed reported checkpoint).
Either prints one warning naming the step; with ``stop_on_collapse`` the run then stops (its best checkpoint so far
is still what the selection reports).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import torch
from transformers import TrainerCallback

from sdft import distributed
from sdft.losses import _head
from sdft.run_io import read_json_or_none, write_json_atomic

PREFIX_TOKENS = 8  # the prefix whose diversity is logged (distinct_prefix_share)
COLLAPSED_ANSWER_SHARE = 0.5  # a checkpoint giving one answer to >= this share of the items is marked collapsed


# ------------------------------------------------------------------------------------------------ rollouts
def rollout_health(completions: Sequence[Sequence[int]], eos_token_ids: Iterable[int], max_length: int | None,
                   prefix_tokens: int = PREFIX_TOKENS) -> dict[str, float]:
    """Length, termination and diversity of one batch of rollouts, each a list of token ids (EOS included when it
    ended with one, no padding). ``max_length``: the rollout cap (a rollout without EOS that reached it was cut)."""
    if not completions:
        raise ValueError("rollout_health needs at least one rollout")
    eos = set(eos_token_ids)
    n = len(completions)
    ended = [len(c) > 0 and c[-1] in eos for c in completions]
    cut = [not e and max_length is not None and len(c) >= max_length for c, e in zip(completions, ended)]
    firsts = [c[0] if c else None for c in completions]
    mode_count = Counter(firsts).most_common(1)[0][1]
    return {
        "length_mean": sum(len(c) for c in completions) / n,
        "truncated_share": sum(cut) / n,
        "eos_share": sum(ended) / n,
        "distinct_share": len({tuple(c) for c in completions}) / n,
        "distinct_prefix_share": len({tuple(c[:prefix_tokens]) for c in completions}) / n,
        "first_token_mode_share": mode_count / n,
    }


def format_rate(texts: Sequence[str], format_check: Callable[[str], bool]) -> float:
    """The share of ``texts`` in the task's answer format."""
    if not texts:
        raise ValueError("format_rate needs at least one text")
    return sum(bool(format_check(t)) for t in texts) / len(texts)


# ------------------------------------------------------------------------------------------------ distributions
@torch.no_grad()
def token_entropy(logits: torch.Tensor, chunk_size: int | None = 64) -> torch.Tensor:
    """Entropy (nats) of ``softmax(logits)`` at every position: ``[..., V] -> [...]``, ``chunk_size`` positions of
    the second-to-last axis at a time (the ``[..., V]`` probabilities never exist whole)."""
    if logits.dim() < 2 or not chunk_size or chunk_size >= logits.size(-2):
        return _entropy(logits)
    return torch.cat([_entropy(part) for part in logits.split(chunk_size, dim=-2)], dim=-1)


def _entropy(logits: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


@torch.no_grad()
def head_entropy(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, temperature: float = 1.0,
                 chunk_size: int | None = 64) -> torch.Tensor:
    """``token_entropy`` of the logits ``(hidden @ weight.T + bias) / temperature`` (``hidden`` ``[B, T, H]``),
    made ``chunk_size`` positions at a time by the loss's own head (``sdft.losses._head``)."""
    T = hidden.size(1)
    step = T if not chunk_size or chunk_size <= 0 else int(chunk_size)
    parts = [_entropy(_head(hidden[:, t0:t0 + step], weight, bias, temperature)) for t0 in range(0, T, step)]
    return torch.cat(parts, dim=1) if parts else hidden.new_zeros(hidden.shape[:2], dtype=torch.float32)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> float | None:
    """Mean of ``values`` where ``mask`` is nonzero; None where it is empty."""
    m = mask.to(torch.bool)
    return float(values[m].float().mean()) if m.any() else None


def divergence_summary(div: torch.Tensor, mask: torch.Tensor) -> dict[str, float] | None:
    """Mean and max of the per-token divergence ``[B, T]`` over the loss tokens ``mask``; None when there are none."""
    m = mask.to(torch.bool)
    if not m.any():
        return None
    values = div.detach()[m].float()
    return {"divergence_mean": float(values.mean()), "divergence_max": float(values.max())}


def token_health(student_entropy: torch.Tensor, teacher_entropy: torch.Tensor | None, div: torch.Tensor,
                 loss_mask: torch.Tensor, clipped: torch.Tensor | None) -> dict[str, list[float]]:
    """Per rollout with loss tokens (rows of the ``[B, T]`` arguments): the divergence's mean and max, the student's
    and the teacher's mean entropy and the share of clipped tokens over its loss tokens ``loss_mask`` (one value
    per rollout; the logged value is their mean, a ``_max`` key's their max). Keys without values are left out."""
    rows: dict[str, list[float]] = {"divergence_mean": [], "divergence_max": [], "student_entropy": [],
                                    "teacher_entropy": [], "clipped_share": []}
    for b in range(div.size(0)):
        summary = divergence_summary(div[b], loss_mask[b])
        if summary is None:
            continue
        rows["divergence_mean"].append(summary["divergence_mean"])
        rows["divergence_max"].append(summary["divergence_max"])
        rows["student_entropy"].append(masked_mean(student_entropy[b], loss_mask[b]))
        if teacher_entropy is not None:
            rows["teacher_entropy"].append(masked_mean(teacher_entropy[b], loss_mask[b]))
        if clipped is not None:
            rows["clipped_share"].append(masked_mean(clipped[b].float(), loss_mask[b]))
    return {key: values for key, values in rows.items() if values}


# ------------------------------------------------------------------------------------------------ greedy probes
def answer_collapse(answers: Sequence[str]) -> dict[str, object]:
    """How alike a model's greedy answers to different items are: the most common answer (whitespace-stripped),
    the share of items that get it, the share of distinct answers, and whether it counts as collapsed
    (``mode_share >= COLLAPSED_ANSWER_SHARE``; fewer than 2 answers never do)."""
    if not answers:
        return {"n": 0, "mode_answer": None, "mode_share": None, "distinct_share": None, "collapsed": False}
    counts = Counter(a.strip() for a in answers)
    mode, count = counts.most_common(1)[0]
    share = count / len(answers)
    return {"n": len(answers), "mode_answer": mode[:200], "mode_share": share,
            "distinct_share": len(counts) / len(answers),
            "collapsed": len(answers) >= 2 and share >= COLLAPSED_ANSWER_SHARE}


# ------------------------------------------------------------------------------------------------ the rule
@dataclass
class CollapseRule:
    """The collapse rule of the module docstring, fed one logged row at a time (``observe_step``) and one greedy
    probe at a time (``observe_probe``). Each returns the reason when the rule fires at that call, else None; it
    fires once per arm."""

    window: int = 4
    share: float = 0.9
    entropy_factor: float = 4.0
    answer_share: float = COLLAPSED_ANSWER_SHARE
    _first_entropy: float | None = None
    _streak: int = 0
    fired: list[str] = field(default_factory=list)

    def observe_step(self, step: int, row: dict) -> str | None:
        entropy = row.get("health/student_entropy")
        mode = row.get("health/first_token_mode_share")
        prefixes = row.get("health/distinct_prefix_share", float("nan"))
        if entropy is None or mode is None:
            return None
        if self._first_entropy is None:
            self._first_entropy = float(entropy)
        alike = mode >= self.share
        sharp = float(entropy) <= self._first_entropy / self.entropy_factor
        self._streak = self._streak + 1 if (alike and sharp) else 0
        if self._streak >= self.window and "rollouts" not in self.fired:
            self.fired.append("rollouts")
            return (f"step {step}: for {self._streak} logged steps the rollouts open alike (first-token mode share "
                    f"{mode:.2f}, distinct {PREFIX_TOKENS}-token prefixes {prefixes:.2f}) and the student's entropy "
                    f"fell from {self._first_entropy:.3f} to {float(entropy):.3f} nats")
        return None

    def observe_probe(self, step: int, probe: dict) -> str | None:
        share = probe.get("mode_share")
        if share is None or probe.get("n", 0) < 2 or share < self.answer_share or "greedy" in self.fired:
            return None
        self.fired.append("greedy")
        return (f"step {step}: {share:.0%} of the {probe['n']} validation items get the same greedy answer: "
                f"{str(probe.get('mode_answer'))[:80]!r}")


# ------------------------------------------------------------------------------------------------ the callback
class CollapseWatch(TrainerCallback):
    """Trainer callback applying :class:`CollapseRule` to every logged row (``on_log``) and to the greedy probes of
    the checkpoint selection (``observe_probe``, handed to ``sdft.selection.BestValidationCheckpoint``). A firing
    prints one warning naming the step and is appended to ``<run_dir>/health.json``; with ``stop`` the run stops
    after that step. Both arms observe on the main process only: with several processes the stop is agreed on at the
    end of the next step (a one-element all-reduce, ``sdft.distributed.any_process``), so that every process stops
    after the same step instead of the others waiting on the main one."""

    def __init__(self, run_dir, stop: bool = False, rule: CollapseRule | None = None, stage: str | None = None):
        from pathlib import Path

        self.path = Path(run_dir) / "health.json"
        self.stop, self.rule, self.stage = stop, rule or CollapseRule(), stage
        self.stop_pending = False  # fired with ``stop`` on this process, not yet acted on by every process

    def on_step_end(self, args, state, control, **kwargs):
        if self.stop and distributed.several_processes():
            if distributed.any_process(self.stop_pending, args.device):
                control.should_training_stop = True

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and state.is_world_process_zero:
            self._fired(self.rule.observe_step(state.global_step, logs), state.global_step, control)

    def observe_probe(self, step: int, answers: dict, control) -> None:
        self._fired(self.rule.observe_probe(step, answers), step, control)

    def _fired(self, reason: str | None, step: int, control) -> None:
        if reason is None:
            return
        import sys

        print(f"[health] warning: collapse: {reason}" + ("; stopping (stop_on_collapse)" if self.stop else ""),
              file=sys.stderr, flush=True)
        record = read_json_or_none(self.path) or {"collapse": []}
        record["collapse"].append({"step": step, "stage": self.stage, "reason": reason, "stopped": self.stop})
        write_json_atomic(self.path, record)
        if self.stop and control is not None:
            self.stop_pending = True
            if not distributed.several_processes():  # else on_step_end stops every process together
                control.should_training_stop = True
