import math

import pytest
import torch

from trainer.losses import (
    multilabel_loss,
    pairwise_preference_loss,
    pointwise_soft_label_loss,
    single_label_loss,
)


def slow_pairwise(f_i, f_j, s_i, s_j, alpha, target=None):
    """Reference: the paper's KL form written out element by element in float64."""
    total = 0.0
    for k in range(len(f_i)):
        z = (f_i[k] - f_j[k]) - alpha * (s_i[k] - s_j[k])
        p = 1.0 / (1.0 + torch.exp(-z))
        y = 1.0 if target is None else float(target[k])
        ce = -(y * torch.log(p) + (1 - y) * torch.log(1 - p))
        total = total + ce
    return total / len(f_i)


def slow_pointwise(logits, s):
    total = 0.0
    for n in range(logits.shape[0]):
        for c in range(logits.shape[1]):
            p = 1.0 / (1.0 + torch.exp(-logits[n, c]))
            total = total - (s[n, c] * torch.log(p) + (1 - s[n, c]) * torch.log(1 - p))
    return total / logits.numel()


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_pairwise_matches_reference_value_and_gradient(alpha):
    g = torch.Generator().manual_seed(1)
    f_i = torch.randn(17, generator=g, dtype=torch.float64, requires_grad=True)
    f_j = torch.randn(17, generator=g, dtype=torch.float64, requires_grad=True)
    s_j = torch.rand(17, generator=g, dtype=torch.float64)
    s_i = (s_j + torch.rand(17, generator=g, dtype=torch.float64)).clamp(max=1.0)
    fast = pairwise_preference_loss(f_i, f_j, s_i, s_j, alpha)
    gi, gj = torch.autograd.grad(fast, [f_i, f_j])
    slow = slow_pairwise(f_i, f_j, s_i, s_j, alpha)
    ri, rj = torch.autograd.grad(slow, [f_i, f_j])
    assert torch.allclose(fast, slow, atol=1e-12)
    assert torch.allclose(gi, ri, atol=1e-12) and torch.allclose(gj, rj, atol=1e-12)


def test_pairwise_soft_target_matches_reference():
    g = torch.Generator().manual_seed(2)
    f_i, f_j = torch.randn(9, generator=g, dtype=torch.float64), torch.randn(9, generator=g, dtype=torch.float64)
    s = torch.rand(9, generator=g, dtype=torch.float64)
    y = torch.full((9,), 0.5, dtype=torch.float64)
    assert torch.allclose(pairwise_preference_loss(f_i, f_j, s, s, 0.7, target=y),
                          slow_pairwise(f_i, f_j, s, s, 0.7, target=y), atol=1e-12)


def test_pairwise_margin_raises_loss_of_a_barely_separated_pair():
    f_i, f_j = torch.tensor([0.3]), torch.tensor([0.0])
    s_i, s_j = torch.tensor([1.0]), torch.tensor([0.0])
    assert pairwise_preference_loss(f_i, f_j, s_i, s_j, 1.0) > pairwise_preference_loss(f_i, f_j, s_i, s_j, 0.0)


@pytest.mark.parametrize("big", [1e4, -1e4])
def test_pairwise_finite_at_extreme_logit_gaps(big):
    f_i = torch.tensor([big], requires_grad=True)
    f_j = torch.tensor([0.0], requires_grad=True)
    loss = pairwise_preference_loss(f_i, f_j, torch.tensor([0.9]), torch.tensor([0.1]), 0.5)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(f_i.grad).all()
    if big > 0:
        assert loss.item() == pytest.approx(0.0, abs=1e-6)
    else:  # a confidently wrong pair costs about |Δf|
        assert loss.item() == pytest.approx(1e4 + 0.4, rel=1e-6)
        assert f_i.grad.item() == pytest.approx(-1.0)


def test_pairwise_weights_and_alpha_validation():
    f = torch.tensor([1.0, -1.0])
    z = torch.zeros(2)
    weighted = pairwise_preference_loss(f, z, z, z, 0.0, weight=torch.tensor([1.0, 0.0]))
    assert weighted.item() == pytest.approx(math.log1p(math.exp(-1.0)))
    with pytest.raises(ValueError):
        pairwise_preference_loss(f, z, z, z, 1.5)


def test_pointwise_matches_reference_value_and_gradient():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    s = torch.rand(5, 4, generator=g, dtype=torch.float64)
    fast = pointwise_soft_label_loss(logits, s)
    (gf,) = torch.autograd.grad(fast, [logits])
    slow = slow_pointwise(logits, s)
    (gs,) = torch.autograd.grad(slow, [logits])
    assert torch.allclose(fast, slow, atol=1e-12) and torch.allclose(gf, gs, atol=1e-12)


def test_pointwise_mask_ignores_unscored_rows_and_is_finite():
    logits = torch.tensor([[1e4, -1e4], [0.0, 0.0]], requires_grad=True)
    s = torch.tensor([[1.0, 0.0], [0.3, 0.7]])
    masked = pointwise_soft_label_loss(logits, s, mask=torch.tensor([1.0, 0.0]))
    masked.backward()
    assert masked.item() == pytest.approx(0.0, abs=1e-6)
    assert torch.all(logits.grad[1] == 0)


def test_finetune_losses():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    assert single_label_loss(logits, torch.tensor([0])) < single_label_loss(logits, torch.tensor([2]))
    ml = multilabel_loss(torch.tensor([[5.0, -5.0]]), torch.tensor([[1.0, 0.0]]))
    assert ml.item() < 0.01
