"""The per-token divergence clip (token_kl_clip): against an explicit forward KL and autograd."""

import pytest
import torch

from sdft.losses import clip_token_divergence, self_distillation_loss

B, T, V = 3, 6, 9


def _inputs(seed=0):
    gen = torch.Generator().manual_seed(seed)
    student = torch.randn(B, T, V, generator=gen, dtype=torch.float64) * 2
    teacher = torch.randn(B, T, V, generator=gen, dtype=torch.float64) * 2
    ids = torch.randint(0, V, (B, T), generator=gen)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 4:] = 0  # a shorter rollout
    return student, teacher, ids, mask


def _forward_kl(student_logits, teacher_logits):
    """KL(teacher || student) per position, written out."""
    lt, ls = teacher_logits.log_softmax(-1), student_logits.log_softmax(-1)
    return (lt.exp() * (lt - ls)).sum(-1)


def _reference(student, teacher, mask, clip, mode):
    """The clipped loss from its definition: per sequence, the mean over its tokens of min(D_t, c) (zero_grad) or
    of D_t scaled to c (rescale), then the mean over sequences."""
    d = _forward_kl(student, teacher)
    over = d.detach() > clip
    if mode == "zero_grad":
        per_token = torch.where(over, torch.full_like(d, clip), d)
    else:
        per_token = torch.where(over, d * (clip / d.detach()), d)
    per_seq = (per_token * mask).sum(-1) / mask.sum(-1)
    return per_seq.mean(), over


def _loss_and_grad(student, teacher, ids, mask, **kw):
    s = student.clone().requires_grad_(True)
    loss = self_distillation_loss(s, teacher, ids, mask, divergence="forward", estimator="analytic", **kw)
    (grad,) = torch.autograd.grad(loss, s)
    return loss.detach(), grad


@pytest.mark.parametrize("chunk", [None, 2])
def test_clip_above_every_divergence_equals_the_unclipped_loss(chunk):
    student, teacher, ids, mask = _inputs()
    above = float(_forward_kl(student, teacher).max()) * 1.01
    plain = _loss_and_grad(student, teacher, ids, mask, chunk_size=chunk)
    for mode in ("zero_grad", "rescale"):
        clipped = _loss_and_grad(student, teacher, ids, mask, chunk_size=chunk, clip=above, clip_mode=mode)
        assert torch.equal(plain[0], clipped[0]) and torch.equal(plain[1], clipped[1]), mode


@pytest.mark.parametrize("mode", ["zero_grad", "rescale"])
def test_clipped_tokens_get_the_documented_gradient(mode):
    student, teacher, ids, mask = _inputs(1)
    d = _forward_kl(student, teacher)
    clip = float(d[mask.bool()].median())  # about half the tokens above it
    loss, grad = _loss_and_grad(student, teacher, ids, mask, clip=clip, clip_mode=mode)
    s = student.clone().requires_grad_(True)
    ref, over = _reference(s, teacher, mask, clip, mode)
    (ref_grad,) = torch.autograd.grad(ref, s)
    assert over[mask.bool()].any() and (~over[mask.bool()]).any()
    assert torch.allclose(loss, ref.detach(), atol=1e-10)
    assert torch.allclose(grad, ref_grad, atol=1e-10)
    clipped_positions = over & mask.bool()
    if mode == "zero_grad":  # the fork's clamp: no gradient at all through a clipped token
        assert torch.all(grad[clipped_positions] == 0)
    else:  # rescale: the token's own gradient, scaled by c / D_t (direction kept)
        s2 = student.clone().requires_grad_(True)
        own = (_forward_kl(s2, teacher) * mask).sum(-1) / mask.sum(-1)
        (own_grad,) = torch.autograd.grad(own.mean(), s2)
        scale = (clip / d)[clipped_positions].unsqueeze(-1)
        assert torch.allclose(grad[clipped_positions], own_grad[clipped_positions] * scale, atol=1e-10)
    assert torch.any(grad[~over & mask.bool()] != 0)  # the unclipped tokens still learn


def test_clip_value_and_errors():
    div = torch.tensor([0.01, 0.05, 0.2])
    for mode in ("zero_grad", "rescale"):
        assert torch.allclose(clip_token_divergence(div, 0.05, mode), torch.tensor([0.01, 0.05, 0.05]))
    assert clip_token_divergence(div, None) is div
    with pytest.raises(ValueError, match="clip mode"):
        clip_token_divergence(div, 0.1, "other")
    student, teacher, ids, mask = _inputs()
    with pytest.raises(ValueError, match="analytic or rao_blackwell"):
        self_distillation_loss(student, teacher, ids, mask, divergence="reverse", estimator="token", clip=0.1)


def test_config_checks_the_clip():
    from sdft.config import build_config

    cfg = build_config("smoke", "sdft", overrides={"token_kl_clip": 0.05, "token_kl_clip_mode": "rescale"})
    assert cfg.token_kl_clip == 0.05 and cfg.token_kl_clip_mode == "rescale"
    with pytest.raises(ValueError, match="token_kl_clip"):
        build_config("smoke", "sdft", overrides={"token_kl_clip": 0.0})
    with pytest.raises(ValueError):
        build_config("smoke", "sdft", overrides={"token_kl_clip_mode": "halve"})
