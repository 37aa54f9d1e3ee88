"""The self-distillation objective against independent computations (autograd, enumeration, TRL)."""

import itertools

import pytest
import torch
from torch.distributions import Categorical, kl_divergence

from sdft.losses import per_token_divergence, self_distillation_loss


def _random_batch(B=3, T=5, V=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(B, T, V, generator=g, dtype=torch.float64) * 2
    t = torch.randn(B, T, V, generator=g, dtype=torch.float64) * 2
    ids = torch.randint(0, V, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[0, 3:] = 0  # a padded sequence
    mask[2, 4:] = 0
    return s, t, ids, mask


@pytest.mark.parametrize("divergence", ["reverse", "forward"])
def test_analytic_gradient_equals_autograd_of_summed_kl(divergence):
    s, t, ids, mask = _random_batch()
    s1 = s.clone().requires_grad_(True)
    self_distillation_loss(s1, t, ids, mask, divergence=divergence, estimator="analytic", reduction="sum").backward()

    s2 = s.clone().requires_grad_(True)
    p_s, p_t = Categorical(logits=s2), Categorical(logits=t)
    kl = kl_divergence(p_s, p_t) if divergence == "reverse" else kl_divergence(p_t, p_s)
    (kl * mask).sum().backward()
    torch.testing.assert_close(s1.grad, s2.grad, atol=1e-6, rtol=0)


def test_sequence_mean_reduction_matches_trl_averaging():
    s, t, ids, mask = _random_batch()
    loss = self_distillation_loss(s, t, ids, mask, divergence="reverse")
    kl = kl_divergence(Categorical(logits=s), Categorical(logits=t))
    expected = ((kl * mask).sum(-1) / mask.sum(-1)).mean()
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize("divergence,alpha", [("forward", 0.0), ("reverse", 1.0), (0.5, 0.5), (0.1, 0.1)])
def test_divergence_values_agree_with_trl(divergence, alpha):
    from trl.experimental.sdft.loss_utils import compute_full_logit_self_distillation_loss

    g = torch.Generator().manual_seed(1)
    s = torch.randn(2, 6, 50, generator=g, dtype=torch.float32)
    t = torch.randn(2, 6, 50, generator=g, dtype=torch.float32)
    ours = per_token_divergence(s, t, divergence)
    theirs = compute_full_logit_self_distillation_loss(s, t, distillation_alpha=alpha)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)


def test_reverse_and_forward_differ():
    s, t, ids, mask = _random_batch()
    assert not torch.allclose(per_token_divergence(s, t, "reverse"), per_token_divergence(s, t, "forward"))


@pytest.mark.parametrize("estimator", ["analytic", "rao_blackwell", "token"])
def test_skip_first_removes_exactly_the_first_k_tokens(estimator):
    s, t, ids, mask = _random_batch(T=6)
    k = 2
    kw = dict(divergence="reverse", estimator=estimator, reduction="sum")
    skipped = self_distillation_loss(s, t, ids, mask, skip_first=k, **kw)
    if estimator != "rao_blackwell":
        # the loss equals the per-token terms summed from position k on
        full_terms = torch.stack([self_distillation_loss(s[:, j:j + 1], t[:, j:j + 1], ids[:, j:j + 1], mask[:, j:j + 1], **kw)
                                  for j in range(s.size(1))])
        torch.testing.assert_close(skipped, full_terms[k:].sum())
        assert not torch.allclose(skipped, full_terms.sum())
    # the divergence terms of the first k positions carry no gradient into their own logits (analytic/token);
    # for rao_blackwell only the score term (weighted by later divergences) remains there
    s1 = s.clone().requires_grad_(True)
    self_distillation_loss(s1, t, ids, mask, skip_first=k, **kw).backward()
    if estimator == "rao_blackwell":
        s2 = s.clone().requires_grad_(True)
        self_distillation_loss(s2, t, ids, mask, skip_first=0, **kw).backward()
        assert not torch.allclose(s1.grad[:, :k], s2.grad[:, :k])
    else:
        assert torch.count_nonzero(s1.grad[:, :k]) == 0
        assert torch.count_nonzero(s1.grad[:, k:]) > 0


def test_masked_positions_carry_no_gradient():
    s, t, ids, mask = _random_batch()
    s1 = s.clone().requires_grad_(True)
    self_distillation_loss(s1, t, ids, mask, divergence="forward").backward()
    assert torch.count_nonzero(s1.grad[mask == 0]) == 0


# --- Exact enumeration on a tiny autoregressive policy ---------------------------------------------------
V, T = 3, 3
PREFIXES = [p for n in range(T) for p in itertools.product(range(V), repeat=n)]
ROW = {p: i for i, p in enumerate(PREFIXES)}


def _tables(seed=0):
    g = torch.Generator().manual_seed(seed)
    student = (torch.randn(len(PREFIXES), V, generator=g, dtype=torch.float64) * 1.5).requires_grad_(True)
    teacher = torch.randn(len(PREFIXES), V, generator=g, dtype=torch.float64) * 1.5  # the demonstration-conditioned teacher
    return student, teacher


def _seq_logits(table, y):
    return torch.stack([table[ROW[tuple(y[:t])]] for t in range(T)])  # [T, V]


def _seq_logprob(table, y):
    return sum(torch.log_softmax(table[ROW[tuple(y[:t])]], -1)[y[t]] for t in range(T))


def _exact_sequence_kl_grad(student, teacher):
    kl = 0.0
    for y in itertools.product(range(V), repeat=T):
        lp, lq = _seq_logprob(student, y), _seq_logprob(teacher, y)
        kl = kl + lp.exp() * (lp - lq)
    (grad,) = torch.autograd.grad(kl, student)
    return grad


def _expected_estimator(student, teacher, estimator):
    total = 0.0
    for y in itertools.product(range(V), repeat=T):
        prob = _seq_logprob(student, y).exp().detach()
        ids = torch.tensor([y])
        surrogate = self_distillation_loss(
            _seq_logits(student, y)[None], _seq_logits(teacher, y)[None], ids, torch.ones(1, T, dtype=torch.float64),
            divergence="reverse", estimator=estimator, reduction="sum",
        )
        total = total + prob * surrogate
    (grad,) = torch.autograd.grad(total, student)
    return grad


@pytest.mark.parametrize("seed", [0, 1])
def test_rao_blackwell_is_unbiased_for_sequence_kl_by_enumeration(seed):
    student, teacher = _tables(seed)
    exact = _exact_sequence_kl_grad(student, teacher)
    rb = _expected_estimator(student, teacher, "rao_blackwell")
    torch.testing.assert_close(rb, exact, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("estimator", ["token", "analytic"])
def test_token_and_analytic_estimators_are_biased_by_enumeration(estimator):
    student, teacher = _tables(0)
    exact = _exact_sequence_kl_grad(student, teacher)
    biased = _expected_estimator(student, teacher, estimator)
    # both ignore how y_t shapes later positions: the bias shows on the rows of short prefixes
    assert (biased - exact).norm() > 1e-2 * exact.norm()
    # ... and vanishes on the last position's rows, where no future exists
    last = [ROW[p] for p in PREFIXES if len(p) == T - 1]
    if estimator == "analytic":
        torch.testing.assert_close(biased[last], exact[last], atol=1e-10, rtol=1e-10)


def test_token_estimator_requires_reverse_kl():
    s, t, ids, mask = _random_batch()
    with pytest.raises(ValueError, match="reverse"):
        self_distillation_loss(s, t, ids, mask, divergence="forward", estimator="token")
