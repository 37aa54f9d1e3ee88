"""The EMA teacher's update: phi <- alpha * theta + (1 - alpha) * phi over all parameters at once.

``ema_update_`` is one fused ``torch._foreach_lerp_`` for float32 teachers and a chunked float32 update rounded back
stochastically for bfloat16 ones (where rounding to nearest loses most small updates); ``FusedEMATeacherCallback``
applies it after every ``teacher_sync_steps`` optimizer steps, to two models' parameters or to the teacher adapter's
(``sdft.adapters.add_teacher_adapter``), under DeepSpeed ZeRO-3 a bucket of gathered parameters at a time. The
trainer installs it in place of TRL's ``SyncTeacherModelCallback`` (``fused_ema``).
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from transformers import TrainerCallback

EMA_CHUNK = 1 << 24  # elements per float32 intermediate of the bf16 EMA update
EMA_GATHER_BUCKET = 1 << 26  # ZeRO-3: elements of each model gathered at once for the EMA update (128 MiB in bf16)


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

    ``sharded``: the parameters are DeepSpeed ZeRO-3 partitions (``sdft.distributed.weights_sharded``). Then they are
    gathered ``EMA_GATHER_BUCKET`` elements at a time -- the student's read only, the teacher's to be changed by
    the main process, which updates them and has them broadcast and partitioned again -- so a process holds at most
    that many whole elements of each model at once (TRL's ``SyncTeacherModelCallback`` gathers both models whole).
    Every process must take part. ``timer``: the trainer's ``sdft.timing.PhaseTimer``, which then reports each
    step's ``ema`` phase."""

    def __init__(self, teacher_params: list[torch.Tensor], student_params: list[torch.Tensor], alpha: float,
                 sync_steps: int = 1, sharded: bool = False, timer=None):
        if len(teacher_params) != len(student_params):
            raise ValueError("EMA teacher and student have different numbers of parameters")
        self.alpha, self.sync_steps, self.sharded = alpha, sync_steps, sharded
        self.teacher, self.student = list(teacher_params), list(student_params)
        self.timer = timer
        if timer is not None:
            timer.declare("ema")

    @classmethod
    def of_models(cls, teacher_model, student_model, alpha: float, sync_steps: int = 1,
                  sharded: bool = False, timer=None) -> FusedEMATeacherCallback:
        """Every parameter of ``teacher_model`` towards the one of the same name in ``student_model``."""
        t_named = dict(teacher_model.named_parameters())
        s_named = dict(student_model.named_parameters())
        if t_named.keys() != s_named.keys():
            raise ValueError("EMA teacher and student have different parameter names")
        return cls([t_named[k] for k in s_named], [s_named[k] for k in s_named], alpha, sync_steps, sharded, timer)

    def on_step_end(self, args, state, control, **kwargs):
        with self.timer.phase("ema") if self.timer is not None else nullcontext():
            self._update(args, state)

    def _update(self, args, state) -> None:
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
