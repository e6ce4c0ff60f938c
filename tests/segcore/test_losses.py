"""Soft IoU / Dice against SEED §1 closed forms, and the combined training loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from segcore.errors import ConfigError
from segcore.losses import (
    SegmentationLoss,
    dice_loss,
    dice_loss_grad,
    soft_iou,
    soft_iou_grad,
)

probabilities = arrays(np.float64, st.integers(1, 40), elements=st.floats(0.001, 0.999))


@st.composite
def p_and_y(draw: st.DrawFn, soft_labels: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    p = draw(probabilities)
    elements = st.floats(0.0, 1.0) if soft_labels else st.sampled_from([0.0, 1.0])
    y = draw(arrays(np.float64, p.shape, elements=elements))
    return torch.from_numpy(p), torch.from_numpy(y)


def _autograd(fn, p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[no-untyped-def]
    p = p.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(fn(p, y), p)
    return grad


@settings(max_examples=80, deadline=None)
@given(p_and_y())
def test_soft_iou_gradient_matches_closed_form(py: tuple[torch.Tensor, torch.Tensor]) -> None:
    p, y = py
    torch.testing.assert_close(_autograd(soft_iou, p, y), soft_iou_grad(p, y), atol=1e-6, rtol=0)


@settings(max_examples=80, deadline=None)
@given(p_and_y())
def test_dice_gradient_matches_closed_form(py: tuple[torch.Tensor, torch.Tensor]) -> None:
    p, y = py
    torch.testing.assert_close(_autograd(dice_loss, p, y), dice_loss_grad(p, y), atol=1e-6, rtol=0)


@settings(max_examples=40, deadline=None)
@given(p_and_y(soft_labels=True))
def test_closed_forms_hold_for_soft_labels(py: tuple[torch.Tensor, torch.Tensor]) -> None:
    p, y = py
    torch.testing.assert_close(_autograd(soft_iou, p, y), soft_iou_grad(p, y), atol=1e-6, rtol=0)
    torch.testing.assert_close(_autograd(dice_loss, p, y), dice_loss_grad(p, y), atol=1e-6, rtol=0)


def test_source_text_gradient_is_wrong_for_foreground() -> None:
    """SEED §1: the y_k(1-y_k)S_p term gives S_y/U^2 at foreground pixels, not 1/U."""
    p = torch.tensor([0.9, 0.2, 0.7], dtype=torch.float64)
    y = torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)
    s_p, s_y, s_py = p.sum(), y.sum(), (p * y).sum()
    u = s_p + s_y - s_py
    source = (y * s_y + (y - 1) * s_py + y * (1 - y) * s_p) / u**2
    true = _autograd(soft_iou, p, y)
    torch.testing.assert_close(true[y == 1], torch.full((2,), 1 / u.item(), dtype=torch.float64))
    assert not torch.allclose(source[y == 1], true[y == 1])
    torch.testing.assert_close(source[y == 0], true[y == 0])  # background agrees


def test_values_and_signs() -> None:
    p = torch.tensor([0.5, 1.0, 0.0])
    y = torch.tensor([1.0, 1.0, 0.0])
    assert soft_iou(p, y).item() == pytest.approx(1.5 / 2.0)
    assert dice_loss(p, y).item() == pytest.approx(1 - 3.0 / 3.5)
    assert soft_iou(y, y).item() == 1.0 and dice_loss(y, y).item() == 0.0
    g = soft_iou_grad(p, y)
    assert (g[y == 1] > 0).all() and (g[y == 0] < 0).all()  # fg pushed up, bg down


@pytest.mark.parametrize("fn", [soft_iou, dice_loss])
def test_empty_case_is_defined_with_zero_gradient(fn) -> None:  # type: ignore[no-untyped-def]
    p = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    y = torch.zeros(2, 3, dtype=torch.float64)
    value = fn(p, y)
    assert value.item() == (1.0 if fn is soft_iou else 0.0)
    (grad,) = torch.autograd.grad(value, p)
    assert torch.equal(grad, torch.zeros_like(p))
    assert torch.equal(soft_iou_grad(p.detach(), y), torch.zeros_like(y))
    assert torch.equal(dice_loss_grad(p.detach(), y), torch.zeros_like(y))


def test_class_dim_averages_per_class_values() -> None:
    gen = torch.Generator().manual_seed(0)
    p = torch.rand(2, 3, 4, 5, generator=gen, dtype=torch.float64)
    y = (torch.rand(2, 3, 4, 5, generator=gen) > 0.5).double()
    y[:, 2] = 0
    p[:, 2] = 0  # class 2 empty in both: counts as J = 1, loss 0
    per_iou = [soft_iou(p[:, c], y[:, c]) for c in range(3)]
    per_dice = [dice_loss(p[:, c], y[:, c]) for c in range(3)]
    assert per_iou[2].item() == 1.0 and per_dice[2].item() == 0.0
    torch.testing.assert_close(soft_iou(p, y, class_dim=1), torch.stack(per_iou).mean())
    torch.testing.assert_close(dice_loss(p, y, class_dim=-3), torch.stack(per_dice).mean())
    assert torch.isfinite(soft_iou(p, y, class_dim=1, eps=1.0))


@pytest.mark.parametrize(
    ("p", "y", "kwargs", "match"),
    [
        (torch.ones(3), torch.ones(4), {}, r"y: expected a tensor of shape \(3,\)"),
        (torch.ones(3, dtype=torch.int64), torch.ones(3), {}, "p: expected a floating-point"),
        (torch.ones(3), torch.ones(3), {"class_dim": 1}, "class_dim"),
    ],
)
def test_validation(p: torch.Tensor, y: torch.Tensor, kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        soft_iou(p, y, **kwargs)


# --- SegmentationLoss ------------------------------------------------------------


def test_segmentation_loss_matches_manual_computation() -> None:
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 4, 4, generator=gen, dtype=torch.float64)
    target = torch.randint(0, 3, (2, 4, 4), generator=gen)
    target[0, 0, :2] = 255
    valid = target != 255
    ce = F.cross_entropy(logits, target, ignore_index=255)
    p = torch.softmax(logits, 1).permute(1, 0, 2, 3)[:, valid]
    y = F.one_hot(target[valid], 3).T.double()
    dice = torch.stack([1 - 2 * (p[c] * y[c]).sum() / (p[c].sum() + y[c].sum()) for c in range(3)]).mean()
    loss = SegmentationLoss(ce_weight=0.5, dice_weight=2.0)
    torch.testing.assert_close(loss(logits, target), 0.5 * ce + 2.0 * dice)


def test_absent_class_gives_no_nan_and_is_left_out() -> None:
    logits = torch.zeros(1, 3, 2, 2, requires_grad=True)
    with torch.no_grad():
        logits[:, 0] = 2.0  # class 0 predicted everywhere; class 2 neither true nor predicted
    target = torch.tensor([[[0, 0], [1, 1]]])
    loss = SegmentationLoss(ce_weight=0.0)(logits, target)
    assert torch.isfinite(loss)
    (grad,) = torch.autograd.grad(loss, logits)
    assert torch.isfinite(grad).all()
    p = torch.softmax(logits.detach(), 1)[0].flatten(1)
    y = F.one_hot(target.flatten(), 3).T.float()
    manual = [1 - 2 * (p[c] * y[c]).sum() / (p[c].sum() + y[c].sum()) for c in (0, 1)]
    torch.testing.assert_close(loss, torch.stack(manual).mean())


def test_all_ignored_is_zero_not_nan() -> None:
    logits = torch.randn(1, 2, 3, 3, requires_grad=True)
    target = torch.full((1, 3, 3), 255)
    loss = SegmentationLoss()(logits, target)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_segmentation_loss_validation() -> None:
    with pytest.raises(ConfigError, match=r"target: expected class ids in \[0, 2\).*\[7\]"):
        SegmentationLoss()(torch.zeros(1, 2, 2, 2), torch.tensor([[[0, 7], [1, 255]]]))
    with pytest.raises(ConfigError, match="target: expected an integer tensor of shape"):
        SegmentationLoss()(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 3, dtype=torch.long))
    with pytest.raises(ConfigError, match="dice_weight"):
        SegmentationLoss(dice_weight=-1.0)


def test_few_optimisation_steps_reduce_the_loss() -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 2, 16, 16)
    target = (x[:, 0] > 0).long() + (x[:, 1] > 1).long()  # classes 0..2
    target[:, :2] = 255
    model = torch.nn.Conv2d(2, 3, 3, padding=1)
    loss_fn = SegmentationLoss()
    optimiser = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(15):
        optimiser.zero_grad()
        loss = loss_fn(model(x), target)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
