r"""The self-distillation objective, as pure functions of logits.

Notation (Appendix A.1). The student :math:`\pi_\theta(\cdot|y_{<t},x)` and the teacher
:math:`\pi(\cdot|y_{<t},x,c)` are compared at each position :math:`t` of the student's own sampled
completion :math:`y=(y_1..y_T)`, over the full vocabulary :math:`V`. The teacher is a constant
(no gradient flows into it). Logits arrive as ``[B, T, V]`` tensors aligned with ``completion_ids``:
``student_logits[:, t]`` is the distribution that produced ``completion_ids[:, t]``.

Per-token divergences :math:`D_t` (``per_token_divergence``):
  * reverse  :math:`\mathrm{KL}(\pi_\theta\|\pi) = \sum_v \pi_\theta(v)\,[\log\pi_\theta(v)-\log\pi(v)]` -- the paper's Eq. 1.
  * forward  :math:`\mathrm{KL}(\pi\|\pi_\theta) = \sum_v \pi(v)\,[\log\pi(v)-\log\pi_\theta(v)]` -- what the
    authors' public code used for every number in the paper (GKD-style), and our default.
  * a float :math:`\beta\in(0,1)` -- the generalized Jensen-Shannon divergence of GKD with mixture
    :math:`m=(1-\beta)\pi_\theta+\beta\pi`: :math:`\beta\,\mathrm{KL}(\pi\|m)+(1-\beta)\,\mathrm{KL}(\pi_\theta\|m)`.
    ``0.0`` and ``1.0`` mean forward and reverse, exactly as TRL's ``distillation_alpha``.

Gradient estimators (``self_distillation_loss``; each returns a surrogate whose autograd gradient is the estimator):
  * ``analytic`` (all main experiments): :math:`\sum_t \nabla_\theta D_t`. For the reverse KL this is
    :math:`\sum_t\sum_v \pi_\theta(v)\log\frac{\pi_\theta(v)}{\pi(v)}\nabla\log\pi_\theta(v)`
    (the :math:`\sum_v\pi_\theta\nabla\log\pi_\theta` term vanishes). Surrogate: :math:`\sum_t D_t`.
  * ``token``: :math:`\sum_t \log\frac{\pi_\theta(y_t)}{\pi(y_t)}\nabla\log\pi_\theta(y_t)` -- sampled token only,
    reverse KL only; biased for the sequence-level KL. Surrogate: :math:`\sum_t \mathrm{sg}[\log\frac{\pi_\theta(y_t)}{\pi(y_t)}]\log\pi_\theta(y_t)`.
  * ``rao_blackwell`` (Amini et al., 2025): the analytic term plus :math:`\sum_t D_t\sum_{i<t}\nabla\log\pi_\theta(y_i)`,
    i.e. the score of each sampled token weighted by the divergence still to come. Surrogate:
    :math:`\sum_t D_t + \sum_i \log\pi_\theta(y_i)\,\mathrm{sg}[\sum_{t>i} D_t]`. With the reverse KL its expectation
    over :math:`y\sim\pi_\theta` is exactly the gradient of the sequence-level
    :math:`\mathrm{KL}(\pi_\theta(\cdot|x)\|\pi(\cdot|x,c))`; with another divergence, of :math:`E_{y\sim\pi_\theta}\sum_t D_t`.

Top-K forward KL (``topk=K > 0``; the trainer's ``distillation_topk``). :math:`D_t` is the forward KL between the
two distributions coarse-grained to :math:`K+1` outcomes: the teacher's :math:`K` most probable tokens :math:`S_t`
at that position, each its own outcome, and one tail bucket for everything else,
:math:`D^K_t=\sum_{v\in S_t}\pi(v)\log\frac{\pi(v)}{\pi_\theta(v)}+\pi(\bar S_t)\log\frac{\pi(\bar S_t)}{\pi_\theta(\bar S_t)}`,
with :math:`\pi(\bar S_t)=1-\sum_{v\in S_t}\pi(v)`, both tails summed over the complement of :math:`S_t` (never
``1 - sum``, which cancels when the K tokens hold nearly all the mass; ``_tail_log_mass``). It is a lower bound of
the full forward KL (data processing), equal to it when :math:`K=V`, nondecreasing in :math:`K`, and zero iff the
student gives each of the :math:`K` tokens the teacher's probability.
The teacher enters only as ``TeacherTopK`` (``teacher_top_k``: its top-K log-probabilities and indices, its tail's
log-mass and the log-probability of each sampled token), selected once from its logits; the student's side still
needs its full-vocabulary log-normalizer and tail, chunk by chunk like everything else here. Forward KL only.
With ``rao_blackwell`` the estimator is that of :math:`\nabla E_{y\sim\pi_\theta}\sum_t D^K_t`, as for any
:math:`D_t`.

Averaging (``reduction``). ``"sequence_mean"`` (default) is TRL's: each sequence's summed surrogate divided by
its number of loss tokens, then the mean over sequences. ``"token_mean"`` divides the batch total by the batch's
loss tokens; ``"sum"`` returns the plain total (used by the tests against exact gradients).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

ESTIMATORS = ("analytic", "token", "rao_blackwell")
REDUCTIONS = ("sequence_mean", "token_mean", "sum")


def divergence_alpha(divergence: Any) -> float:
    """'forward' -> 0.0, 'reverse' -> 1.0, a number in [0, 1] (or its string) -> itself (TRL's ``distillation_alpha``)."""
    if divergence == "forward":
        return 0.0
    if divergence == "reverse":
        return 1.0
    try:
        value = float(divergence)
    except (TypeError, ValueError):
        raise ValueError(f"divergence must be 'forward', 'reverse' or a number in [0, 1], got {divergence!r}") from None
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"divergence as a number must lie in [0, 1], got {value}")
    return value


def _log_softmax(logits: torch.Tensor) -> torch.Tensor:
    # Half-precision logits are upcast: a 152k-way softmax in bf16 loses the small probabilities.
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return torch.log_softmax(logits, dim=-1)


def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) over the last axis from log-probabilities."""
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def divergence_from_log_probs(student_log_probs: torch.Tensor, teacher_log_probs: torch.Tensor, divergence: Any = "forward") -> torch.Tensor:
    """Per-position divergence ``[...]`` between two log-probability tensors ``[..., V]``."""
    alpha = divergence_alpha(divergence)
    s, t = student_log_probs, teacher_log_probs
    if alpha == 0.0:
        return _kl(t, s)
    if alpha == 1.0:
        return _kl(s, t)
    log_mix = torch.logsumexp(torch.stack([s + torch.log1p(torch.tensor(-alpha, dtype=s.dtype)),
                                           t + torch.log(torch.tensor(alpha, dtype=s.dtype))]), dim=0)
    return alpha * _kl(t, log_mix) + (1.0 - alpha) * _kl(s, log_mix)


@dataclass(frozen=True)
class TeacherTopK:
    """The teacher's distribution at each position reduced to what the top-K forward KL needs (``teacher_top_k``).

    The leading dimensions ``[...]`` are positions (``[B, T]`` for a batch) and indexing them (``teacher[b, t0:t1]``)
    indexes every field, so the chunked functions below take it wherever they take the teacher's logits. A constant:
    no gradient flows into it. ``[B, T, K]`` indices and values instead of ``[B, T, V]`` logits.
    """

    logprobs: torch.Tensor  # [..., K] log pi(v) of its K most probable tokens v (normalized over the vocabulary)
    ids: torch.Tensor  # [..., K] those tokens
    tail_logprob: torch.Tensor  # [...] log pi(the other V - K tokens) = log(1 - sum_k pi(v_k)); -inf when K = V
    token_logprobs: torch.Tensor  # [...] log pi(y_t) of the sampled tokens (over the whole vocabulary)
    vocab_size: int

    @property
    def k(self) -> int:
        return self.ids.size(-1)

    @property
    def has_tail(self) -> bool:
        return self.k < self.vocab_size

    def __getitem__(self, index) -> TeacherTopK:
        return TeacherTopK(self.logprobs[index], self.ids[index], self.tail_logprob[index], self.token_logprobs[index],
                           self.vocab_size)

    def detach(self) -> TeacherTopK:
        """Detached, and cloned out of inference mode if made there (autograd may save the indices for backward)."""
        def const(x):
            x = x.detach()
            return x.clone() if x.is_inference() else x
        return TeacherTopK(const(self.logprobs), const(self.ids), const(self.tail_logprob),
                           const(self.token_logprobs), self.vocab_size)


def _tail_log_mass(log_probs: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """log of the probability mass outside ``ids`` ``[..., K]``, from normalized log-probabilities ``[..., V]``.

    The complement's probabilities summed directly (never ``1 - sum`` of the K, which cancels to 0 when they hold
    nearly all the mass): exact down to sums of ``sqrt(tiny)`` (~1e-19 in float32); below that, where its terms may
    underflow, a logsumexp over the complement (about twice the cost on CPU, so only on those rows).
    """
    probs = log_probs.exp()
    probs = probs.scatter(-1, ids, 0.0) if probs.requires_grad else probs.scatter_(-1, ids, 0.0)
    tiny = torch.finfo(probs.dtype).tiny ** 0.5
    total = probs.sum(-1)
    tail = total.clamp(min=tiny).log()  # clamped: no 1/0 in the backward of the rows replaced below
    small = total < tiny
    if small.any():
        exact = torch.logsumexp(log_probs[small].scatter(-1, ids[small], float("-inf")), dim=-1)
        tail = tail.index_put((small,), exact)
    return tail


@torch.no_grad()
def teacher_top_k(teacher_logits: torch.Tensor, k: int, completion_ids: torch.Tensor | None,
                  chunk_size: int | None = 64) -> TeacherTopK:
    """The teacher's ``[B, T, V]`` logits reduced to its top ``k`` tokens at each position (``k > V`` means ``V``),
    its tail's log-mass and the log-probabilities of the sampled ``completion_ids`` ``[B, T]`` (NaN without them).

    Made ``chunk_size`` positions at a time: besides the logits it was given, one chunk's log-softmax exists at a
    time; the result holds ``[B, T, k]`` values and indices. Half-precision logits give float32 log-probabilities.
    Called outside inference mode on logits made inside it, the result is an ordinary tensor (usable by autograd).
    """
    B, T, V = teacher_logits.shape
    return _top_k_by_chunks(lambda b, sl: teacher_logits[b, sl], B, T, V, teacher_logits.dtype, teacher_logits.device,
                            k, completion_ids, chunk_size)


@torch.no_grad()
def head_top_k(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, k: int,
               completion_ids: torch.Tensor | None, chunk_size: int | None = 64,
               temperature: float = 1.0) -> TeacherTopK:
    """``teacher_top_k`` of the logits ``(hidden @ weight.T + bias) / temperature`` (``hidden`` ``[B, T, H]``),
    made ``chunk_size`` positions at a time: the ``[B, T, V]`` logits never exist whole."""
    B, T, _ = hidden.shape
    V = weight.size(0)
    dtype = torch.result_type(hidden[:0], weight[:0])
    return _top_k_by_chunks(lambda b, sl: _head(hidden[b, sl], weight, bias, temperature), B, T, V, dtype,
                            hidden.device, k, completion_ids, chunk_size)


def _top_k_by_chunks(logits_of, B: int, T: int, V: int, logits_dtype: torch.dtype, device, k: int,
                     completion_ids: torch.Tensor | None, chunk_size: int | None) -> TeacherTopK:
    if int(k) < 1:
        raise ValueError(f"top-K needs k >= 1, got {k}")
    k = min(int(k), V)
    chunk = T if not chunk_size or chunk_size <= 0 else int(chunk_size)
    dtype = torch.float32 if logits_dtype in (torch.float16, torch.bfloat16) else logits_dtype
    logprobs = torch.empty((B, T, k), dtype=dtype, device=device)
    ids = torch.empty((B, T, k), dtype=torch.long, device=device)
    tail = torch.full((B, T), float("-inf"), dtype=dtype, device=device)
    token = torch.full((B, T), float("nan"), dtype=dtype, device=device)
    for b in range(B):
        for t0 in range(0, T, chunk):
            sl = slice(t0, t0 + chunk)
            lp = _log_softmax(logits_of(b, sl))
            top, idx = lp.topk(k, dim=-1)
            logprobs[b, sl], ids[b, sl] = top, idx
            if completion_ids is not None:
                token[b, sl] = lp.gather(-1, completion_ids[b, sl].unsqueeze(-1)).squeeze(-1)
            if k < V:
                tail[b, sl] = _tail_log_mass(lp, idx)
    return TeacherTopK(logprobs, ids, tail, token, V)


def topk_forward_kl(student_log_probs: torch.Tensor, teacher: TeacherTopK) -> torch.Tensor:
    """``[...]`` forward KL over the teacher's top K tokens and one tail bucket (the module docstring's
    :math:`D^K_t`), from the student's full-vocabulary log-probabilities ``[..., V]``."""
    student_top = student_log_probs.gather(-1, teacher.ids)
    div = _kl(teacher.logprobs, student_top)
    if teacher.has_tail:
        student_tail = _tail_log_mass(student_log_probs, teacher.ids)
        p_tail = teacher.tail_logprob.exp()
        div = div + torch.where(p_tail > 0, p_tail * (teacher.tail_logprob - student_tail), 0.0)
    return div


def _constant_teacher(teacher, topk: int, completion_ids: torch.Tensor | None):
    """The teacher as the loss uses it: its detached logits, or their top-K reduction (given, or made here)."""
    if isinstance(teacher, TeacherTopK):
        return teacher.detach()
    if topk and topk > 0:
        return teacher_top_k(teacher, topk, completion_ids)
    return teacher.detach()


def _check_topk(teacher, topk: int, divergence: Any) -> None:
    if topk < 0:
        raise ValueError(f"topk must be >= 0 (0: the full vocabulary), got {topk}")
    if (isinstance(teacher, TeacherTopK) or topk > 0) and divergence_alpha(divergence) != 0.0:
        raise ValueError("the top-K divergence is the forward KL only (divergence='forward')")


def per_token_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor | TeacherTopK,
                         divergence: Any = "forward", topk: int = 0) -> torch.Tensor:
    """``[B, T]`` divergence at every position; gradient flows into the student only. Over the full vocabulary, or,
    given ``topk > 0`` or a ``TeacherTopK``, the top-K forward KL (``completion_ids`` are not needed for it)."""
    _check_topk(teacher_logits, topk, divergence)
    if isinstance(teacher_logits, TeacherTopK) or topk > 0:
        return topk_forward_kl(_log_softmax(student_logits), _constant_teacher(teacher_logits, topk, None))
    return divergence_from_log_probs(_log_softmax(student_logits), _log_softmax(teacher_logits.detach()), divergence)


def loss_mask_for(completion_mask: torch.Tensor, skip_first: int = 0) -> torch.Tensor:
    """The completion mask with the first ``skip_first`` completion positions removed (Section 5's artifact fix)."""
    mask = completion_mask if completion_mask.is_floating_point() else completion_mask.to(torch.float32)
    if skip_first > 0:
        positions = torch.arange(mask.size(-1), device=mask.device)
        mask = mask * (positions >= skip_first).to(mask.dtype)
    return mask


def _reduce(per_sequence_sum: torch.Tensor, loss_mask: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "sum":
        return per_sequence_sum.sum()
    if reduction == "sequence_mean":
        return (per_sequence_sum / loss_mask.sum(-1).clamp(min=1.0)).mean()
    if reduction == "token_mean":
        return per_sequence_sum.sum() / loss_mask.sum().clamp(min=1.0)
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _token_terms(student_logits: torch.Tensor, teacher_logits: torch.Tensor, completion_ids: torch.Tensor,
                 divergence: Any, need_div: bool = True):
    """``(D_t, log pi_theta(y_t), log pi(y_t))`` at every position: the only full-vocabulary work of the loss.
    ``teacher_logits`` may be a ``TeacherTopK`` (then ``D_t`` is the top-K forward KL)."""
    student_lp = _log_softmax(student_logits)
    ids = completion_ids.unsqueeze(-1)
    s_tok = student_lp.gather(-1, ids).squeeze(-1)
    if isinstance(teacher_logits, TeacherTopK):
        if divergence_alpha(divergence) != 0.0:
            raise ValueError("the top-K divergence is the forward KL only (divergence='forward')")
        t_tok = teacher_logits.token_logprobs
        div = topk_forward_kl(student_lp, teacher_logits) if need_div else torch.zeros_like(s_tok)
        return div, s_tok, t_tok
    teacher_lp = _log_softmax(teacher_logits.detach())
    t_tok = teacher_lp.gather(-1, ids).squeeze(-1)
    div = divergence_from_log_probs(student_lp, teacher_lp, divergence) if need_div else torch.zeros_like(s_tok)
    return div, s_tok, t_tok


class _ChunkedTokenTerms(torch.autograd.Function):
    """``_token_terms`` computed ``chunk_size`` positions at a time, recomputed chunk by chunk in backward.

    The forward keeps no full-vocabulary intermediate (log-softmaxes, exponentials, products): only the two logit
    tensors it was given. The backward re-runs ``_token_terms`` on one chunk under autograd and writes that chunk
    of the gradient, so the values and the gradient are those of the unchunked computation (the same operations,
    row by row). At most one chunk's intermediates are alive at any time.
    """

    @staticmethod
    def forward(ctx, student_logits, teacher_logits, completion_ids, divergence, need_div, chunk_size):
        B, T, _ = student_logits.shape
        out_dtype = torch.float32 if student_logits.dtype in (torch.float16, torch.bfloat16) else student_logits.dtype
        div = student_logits.new_zeros((B, T), dtype=out_dtype)
        s_tok = torch.empty_like(div)
        t_tok = torch.empty_like(div)
        for b in range(B):
            for t0 in range(0, T, chunk_size):
                sl = slice(t0, t0 + chunk_size)
                d, s, t = _token_terms(student_logits[b, sl], teacher_logits[b, sl], completion_ids[b, sl],
                                       divergence, need_div)
                div[b, sl], s_tok[b, sl], t_tok[b, sl] = d, s, t
        ctx.save_for_backward(student_logits, completion_ids)
        ctx.teacher_logits = teacher_logits  # a constant; kept off save_for_backward (may be an inference tensor)
        ctx.divergence, ctx.need_div, ctx.chunk_size = divergence, need_div, chunk_size
        ctx.mark_non_differentiable(t_tok)
        ctx.set_materialize_grads(False)  # an unused output (e.g. log pi_theta(y_t) for `analytic`) costs nothing
        return div, s_tok, t_tok

    @staticmethod
    def backward(ctx, grad_div, grad_s_tok, _grad_t_tok):
        student_logits, completion_ids = ctx.saved_tensors
        teacher_logits = ctx.teacher_logits
        B, T, _ = student_logits.shape
        if not ctx.need_div:
            grad_div = None
        if grad_div is None and grad_s_tok is None:
            return None, None, None, None, None, None
        grad = torch.empty(student_logits.shape, dtype=student_logits.dtype, device=student_logits.device)
        for b in range(B):
            for t0 in range(0, T, ctx.chunk_size):
                sl = slice(t0, t0 + ctx.chunk_size)
                grad[b, sl] = _chunk_logit_grad(student_logits[b, sl], teacher_logits[b, sl], completion_ids[b, sl],
                                                ctx.divergence, ctx.need_div,
                                                None if grad_s_tok is None else grad_s_tok[b, sl],
                                                None if grad_div is None else grad_div[b, sl])
        ctx.teacher_logits = None
        return grad, None, None, None, None, None


def _chunk_logit_grad(logits, teacher_logits, completion_ids, divergence, need_div, grad_s_tok, grad_div):
    """The gradient reaching one chunk's student logits from the upstream gradients of its ``_token_terms``."""
    with torch.enable_grad():
        logits = logits.detach().requires_grad_(True)
        d, s, _ = _token_terms(logits, teacher_logits, completion_ids, divergence, need_div)
        pairs = [(s, grad_s_tok), (d, grad_div)]
        outputs, grads = [o for o, g in pairs if g is not None], [g for _, g in pairs if g is not None]
        (g,) = torch.autograd.grad(outputs, [logits], grads)
    return g


class _ChunkedHeadTokenTerms(torch.autograd.Function):
    """``_token_terms`` of ``logits = (hidden @ weight.T + bias) / temperature``, chunk by chunk.

    The student's ``[B, T, V]`` logits and their gradient are never materialized: each chunk's logits are made
    from the ``[B, T, H]`` hidden states in forward and again in backward, where the chunk's logit gradient
    becomes the hidden-state gradient (``g @ W``) and is accumulated into the weight's (``g.T @ h``).
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, teacher_logits, completion_ids, divergence, need_div, chunk_size,
                temperature):
        B, T, _ = hidden.shape
        half = weight.dtype in (torch.float16, torch.bfloat16)
        out_dtype = torch.float32 if half else weight.dtype
        div = hidden.new_zeros((B, T), dtype=out_dtype)
        s_tok, t_tok = torch.empty_like(div), torch.empty_like(div)
        for b in range(B):
            for t0 in range(0, T, chunk_size):
                sl = slice(t0, t0 + chunk_size)
                logits = _head(hidden[b, sl], weight, bias, temperature)
                d, s, t = _token_terms(logits, teacher_logits[b, sl], completion_ids[b, sl], divergence, need_div)
                div[b, sl], s_tok[b, sl], t_tok[b, sl] = d, s, t
        ctx.save_for_backward(hidden, weight, bias, completion_ids)
        ctx.teacher_logits = teacher_logits
        ctx.args = (divergence, need_div, chunk_size, temperature)
        ctx.mark_non_differentiable(t_tok)
        ctx.set_materialize_grads(False)
        return div, s_tok, t_tok

    @staticmethod
    def backward(ctx, grad_div, grad_s_tok, _grad_t_tok):
        hidden, weight, bias, completion_ids = ctx.saved_tensors
        divergence, need_div, chunk_size, temperature = ctx.args
        teacher_logits = ctx.teacher_logits
        if not need_div:
            grad_div = None
        nones = (None,) * 7
        if grad_div is None and grad_s_tok is None:
            return (None, None, None) + nones[:6]
        B, T, _ = hidden.shape
        grad_h = torch.zeros_like(hidden) if ctx.needs_input_grad[0] else None
        acc = torch.float32 if weight.dtype in (torch.float16, torch.bfloat16) else weight.dtype
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if ctx.needs_input_grad[1] else None
        grad_b = torch.zeros_like(bias) if bias is not None and ctx.needs_input_grad[2] else None
        for b in range(B):
            for t0 in range(0, T, chunk_size):
                sl = slice(t0, t0 + chunk_size)
                h = hidden[b, sl]
                g = _chunk_logit_grad(_head(h, weight, bias, temperature), teacher_logits[b, sl], completion_ids[b, sl],
                                      divergence, need_div, None if grad_s_tok is None else grad_s_tok[b, sl],
                                      None if grad_div is None else grad_div[b, sl])
                if temperature != 1.0:
                    g = g / temperature
                g = g.to(weight.dtype)
                if grad_h is not None:
                    grad_h[b, sl] = g @ weight
                if grad_w is not None:
                    grad_w.addmm_(g.t().to(acc), h.to(acc))
                if grad_b is not None:
                    grad_b += g.sum(0)
        ctx.teacher_logits = None
        if grad_w is not None:
            grad_w = grad_w.to(weight.dtype)
        return (grad_h, grad_w, grad_b) + nones[:6]


def _head(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, temperature: float) -> torch.Tensor:
    logits = F.linear(hidden, weight, bias)
    return logits if temperature == 1.0 else logits / temperature


def head_token_log_probs(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                         completion_ids: torch.Tensor, temperature: float = 1.0,
                         chunk_size: int | None = None) -> torch.Tensor:
    """``log softmax((hidden @ weight.T + bias) / temperature)`` at ``completion_ids``, ``[B, T]``, without a
    graph and ``chunk_size`` positions at a time (the whole logits never exist): the sampled tokens' log-probabilities
    at another temperature than the loss's, for the importance weights."""
    B, T = completion_ids.shape
    step = T if not chunk_size else max(1, int(chunk_size))
    out = torch.empty(B, T, dtype=torch.float32, device=hidden.device)
    with torch.no_grad():
        for start in range(0, T, step):
            sl = slice(start, start + step)
            logp = _log_softmax(_head(hidden[:, sl], weight, bias, temperature))
            out[:, sl] = logp.gather(-1, completion_ids[:, sl].unsqueeze(-1)).squeeze(-1)
    return out


def head_token_terms(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                     teacher_logits: torch.Tensor | TeacherTopK, completion_ids: torch.Tensor,
                     divergence: Any = "forward", chunk_size: int = 64, need_div: bool = True,
                     temperature: float = 1.0, topk: int = 0):
    """``token_terms`` of the student logits ``(hidden @ weight.T + bias) / temperature`` without ever holding
    them (nor their gradient) for the whole sequence: ``chunk_size`` positions at a time, recomputed in backward.
    Gradients flow into ``hidden``, ``weight`` and ``bias``. ``topk`` / a ``TeacherTopK`` as in ``token_terms``.
    """
    _check_topk(teacher_logits, topk, divergence)
    alpha = divergence_alpha(divergence)
    teacher = _constant_teacher(teacher_logits, topk, completion_ids)
    return _ChunkedHeadTokenTerms.apply(hidden, weight, bias, teacher, completion_ids, alpha,
                                        need_div, max(1, int(chunk_size)), float(temperature))


def token_terms(student_logits: torch.Tensor, teacher_logits: torch.Tensor | TeacherTopK,
                completion_ids: torch.Tensor, divergence: Any = "forward", chunk_size: int | None = None,
                need_div: bool = True, topk: int = 0):
    """``(D_t, log pi_theta(y_t), log pi(y_t))``, each ``[B, T]``; ``chunk_size`` positions at a time if given.

    Gradient flows into ``student_logits`` through the first two; the teacher's are constants. With ``topk > 0``
    (the teacher's top-K indices selected once from ``teacher_logits``) or a ``TeacherTopK`` teacher, ``D_t`` is the
    top-K forward KL (module docstring) and ``log pi(y_t)`` the teacher's full-vocabulary one.
    """
    _check_topk(teacher_logits, topk, divergence)
    teacher = _constant_teacher(teacher_logits, topk, completion_ids)
    if chunk_size is None or chunk_size <= 0 or chunk_size >= student_logits.size(1):
        return _token_terms(student_logits, teacher, completion_ids, divergence, need_div)
    alpha = divergence_alpha(divergence)
    return _ChunkedTokenTerms.apply(student_logits, teacher, completion_ids, alpha, need_div, int(chunk_size))


def self_distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    divergence: Any = "reverse",
    estimator: str = "analytic",
    skip_first: int = 0,
    is_weights: torch.Tensor | None = None,
    reduction: str = "sequence_mean",
    chunk_size: int | None = None,
    return_divergence: bool = False,
    topk: int = 0,
    clip: float | None = None,
    clip_mode: str = "zero_grad",
):
    """Scalar surrogate whose gradient w.r.t. ``student_logits`` is the chosen estimator (module docstring).

    Args:
        student_logits, teacher_logits: ``[B, T, V]`` logits over the completion positions.
        completion_ids: ``[B, T]`` the student's sampled tokens.
        completion_mask: ``[B, T]`` 1 on real completion tokens, 0 on padding.
        divergence: ``"forward"`` | ``"reverse"`` | float in [0, 1] (generalized JSD).
        estimator: ``"analytic"`` | ``"token"`` (reverse KL only) | ``"rao_blackwell"``.
        skip_first: the first ``skip_first`` completion tokens carry no divergence term.
        is_weights: optional ``[B, T]`` importance weights (detached) multiplying each token's divergence term.
        reduction: ``"sequence_mean"`` (TRL's), ``"token_mean"`` or ``"sum"``.
        chunk_size: if set, the full-vocabulary terms are computed that many positions at a time and recomputed
            in backward (``token_terms``): same values and gradients, a fraction of the peak memory.
        return_divergence: also return the detached per-token divergence ``[B, T]`` (for logging, so that
            it need not be computed a second time).
        topk: ``K > 0``: the top-K forward KL (module docstring), the teacher's top-K selected once from
            ``teacher_logits`` (which may also be given as a ``TeacherTopK``); ``analytic`` and ``rao_blackwell``.
        clip, clip_mode: cap each token's divergence at ``clip`` (``clip_token_divergence``; the returned
            divergence is the unclipped one).
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    _check_topk(teacher_logits, topk, divergence)
    if estimator == "token" and (topk > 0 or isinstance(teacher_logits, TeacherTopK)):
        raise ValueError("the token-level estimator has no top-K form (it is reverse KL only); use analytic or "
                         "rao_blackwell")
    alpha = divergence_alpha(divergence)
    if estimator == "token" and alpha != 1.0:
        raise ValueError("the token-level estimator is defined for the reverse KL only (divergence='reverse')")
    need_div = estimator != "token" or return_divergence
    div, s_tok, t_tok = token_terms(student_logits, teacher_logits, completion_ids, alpha, chunk_size, need_div, topk)
    loss = loss_from_terms(div, s_tok, t_tok, completion_mask, estimator, skip_first, is_weights, reduction, clip,
                           clip_mode)
    return (loss, div.detach()) if return_divergence else loss


CLIP_MODES = ("zero_grad", "rescale")


def clip_token_divergence(div: torch.Tensor, clip: float | None, mode: str = "zero_grad") -> torch.Tensor:
    r"""The per-token divergence ``[B, T]`` with every value above ``clip`` capped at ``clip`` (None: unchanged).

    ``zero_grad`` -- the authors' fork (mkandrus/Self-Distillation, ``token_kl_clip``:
    ``per_token_loss.clamp(max=c)`` before the reduction; the OPSD author's fix is a clip of the per-token forward
    KL at 0.05, of the same form): :math:`\min(D_t, c)`, so a clipped token contributes the constant :math:`c` and no
    gradient at all. ``rescale`` -- ours: :math:`D_t \cdot \min(1, c / \mathrm{sg}[D_t])`, the same value, but a
    clipped token keeps the direction of its gradient, scaled by :math:`c / D_t` (its gradient's norm is that of a
    token whose divergence the clip allows). Tokens at or below ``clip`` are untouched in both.
    """
    if clip is None:
        return div
    if mode == "zero_grad":
        return div.clamp(max=clip)
    if mode == "rescale":
        return div * (clip / div.detach().clamp(min=clip))
    raise ValueError(f"clip mode must be one of {CLIP_MODES}, got {mode!r}")


def loss_from_terms(div: torch.Tensor, s_tok: torch.Tensor, t_tok: torch.Tensor, completion_mask: torch.Tensor,
                    estimator: str = "analytic", skip_first: int = 0, is_weights: torch.Tensor | None = None,
                    reduction: str = "sequence_mean", clip: float | None = None,
                    clip_mode: str = "zero_grad") -> torch.Tensor:
    """The estimator's surrogate from the per-token terms of ``token_terms`` / ``head_token_terms``; ``clip`` caps
    each token's divergence (``clip_token_divergence``; analytic and rao_blackwell: the token estimator has no
    divergence term)."""
    if clip is not None and estimator == "token":
        raise ValueError("a per-token divergence clip needs the analytic or rao_blackwell estimator")
    div = clip_token_divergence(div, clip, clip_mode)
    mask = loss_mask_for(completion_mask, skip_first).to(s_tok.dtype)
    valid = completion_mask.to(s_tok.dtype)
    weights = mask if is_weights is None else mask * is_weights.detach().to(s_tok.dtype)
    if estimator == "token":
        per_token = (s_tok - t_tok).detach() * s_tok
        return _reduce((per_token * weights).sum(-1), mask, reduction)
    per_sequence = (div * weights).sum(-1)
    if estimator == "rao_blackwell":
        d = (div * weights).detach()
        future = d.flip(-1).cumsum(-1).flip(-1) - d  # sum over t' > t of the divergence still to come
        per_sequence = per_sequence + (s_tok * future * valid).sum(-1)
    return _reduce(per_sequence, mask, reduction)


def truncated_importance_weights(train_logps: torch.Tensor, sampler_logps: torch.Tensor, cap: float = 2.0) -> torch.Tensor:
    """Per-token weights pi_train(y_t) / pi_sampler(y_t), truncated at ``cap`` and detached (Algorithm 1, line 17).

    Corrects for the sampler (vLLM) and the trainer disagreeing on the same weights (kernels, precision).
    """
    log_ratio = (train_logps.detach() - sampler_logps.detach()).clamp(-20.0, 20.0)
    return log_ratio.exp().clamp(max=cap)


def sequence_importance_weights(token_weights: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """One weight per sequence, the mean of its (truncated) per-token weights over its loss tokens, on every token
    of the sequence (``[B, T]``): the authors' form of the correction. A sequence without loss tokens gets 1."""
    mask = loss_mask.to(token_weights.dtype)
    n = mask.sum(-1, keepdim=True)
    mean = torch.where(n > 0, (token_weights * mask).sum(-1, keepdim=True) / n.clamp(min=1.0),
                       torch.ones_like(n))
    return mean.expand_as(token_weights)


def dft_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100, reduction: str = "token_mean") -> torch.Tensor:
    r"""Dynamic Fine-Tuning (Wu et al., 2025): the SFT token loss scaled by the token's detached probability.

    :math:`L = \sum_t -\mathrm{sg}[p_\theta(y_t)]\,\log p_\theta(y_t)` over target tokens (labels != ignore_index),
    with ``logits[:, t]`` predicting ``labels[:, t]`` (already shifted). ``token_mean`` divides by the number of
    target tokens, as SFT's cross-entropy does.
    """
    mask = labels != ignore_index
    safe = labels.masked_fill(~mask, 0)
    logp = _log_softmax(logits).gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    per_token = -(logp.detach().exp() * logp) * mask
    if reduction == "sum":
        return per_token.sum()
    return per_token.sum() / mask.sum().clamp(min=1)
