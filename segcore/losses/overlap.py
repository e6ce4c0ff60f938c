r"""Soft (differentiable) IoU and Dice.

For probabilities ``p`` in [0, 1] and labels ``y`` in {0, 1} over the domain,
with ``S_p = sum(p)``, ``S_y = sum(y)``, ``S_py = sum(p * y)``:

* soft Jaccard ``J = S_py / U`` with ``U = S_p + S_y - S_py``;
* Dice loss ``L = 1 - 2 S_py / (S_p + S_y)``.

Both gradients are non-local (pixel ``k`` depends on sums over the image)::

    dJ/dp_k = [y_k (S_p + S_y) - S_py] / U^2
    dL/dp_k = -[2 y_k (S_p + S_y) - 2 S_py] / (S_p + S_y)^2

so foreground pixels (``y_k = 1``) are pushed up and background pixels down.
:func:`soft_iou_grad` and :func:`dice_loss_grad` implement these closed forms;
the tests check them against autograd.

Discrepancy with the source text: the text this product grew from writes the
IoU numerator as ``y_k S_y + (y_k - 1) S_py + y_k (1 - y_k) S_p``. The last
term is always 0 for binary labels, so at a foreground pixel it gives
``S_y / U^2`` instead of the true ``U / U^2 = 1 / U``; the correct last term
is ``y_k (S_p - S_py)``, which yields the form above. The forms above are the
actual derivatives (checked against autograd) and hold for any ``y`` in
[0, 1], not only binary labels.

Empty case: when ``U == 0`` (both ``p`` and ``y`` are zero everywhere, i.e.
prediction and truth agree that there is nothing) ``J = 1`` and the Dice loss
is 0, both with zero gradient. This keeps a tile without foreground from
producing NaN or a spurious penalty.
"""

from __future__ import annotations

import torch

from segcore.errors import ConfigError

__all__ = ["dice_loss", "dice_loss_grad", "soft_iou", "soft_iou_grad"]


def _sums(
    p: torch.Tensor, y: torch.Tensor, class_dim: int | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(S_p, S_y, S_py)``: scalars, or one value per class along ``class_dim``."""
    if not isinstance(p, torch.Tensor) or not p.is_floating_point():
        got = p.dtype if isinstance(p, torch.Tensor) else type(p).__name__
        raise ConfigError(f"p: expected a floating-point tensor, received {got}")
    if not isinstance(y, torch.Tensor) or y.shape != p.shape:
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ConfigError(
            f"y: expected a tensor of shape {tuple(p.shape)} like p, received {got}"
        )
    y = y.to(p.dtype)
    if class_dim is None:
        return p.sum(), y.sum(), (p * y).sum()
    if not -p.ndim <= class_dim < p.ndim:
        raise ConfigError(
            f"class_dim: expected None or an axis in [{-p.ndim}, {p.ndim}), received {class_dim}"
        )
    axis = class_dim % p.ndim
    dims = [d for d in range(p.ndim) if d != axis]
    p_c, y_c = p.movedim(axis, 0), y.movedim(axis, 0)
    if not dims:
        return p_c, y_c, p_c * y_c
    return p_c.flatten(1).sum(1), y_c.flatten(1).sum(1), (p_c * y_c).flatten(1).sum(1)


def _ratio(num: torch.Tensor, den: torch.Tensor, empty: float) -> torch.Tensor:
    """``num / den``, ``empty`` (with zero gradient) where ``den == 0``."""
    is_empty = den == 0
    safe = torch.where(is_empty, torch.ones_like(den), den)
    return torch.where(is_empty, torch.full_like(den, empty), num / safe)


def soft_iou(
    p: torch.Tensor,
    y: torch.Tensor,
    *,
    class_dim: int | None = None,
    eps: float = 0.0,
) -> torch.Tensor:
    """Soft Jaccard index ``J = S_py / (S_p + S_y - S_py)`` (a score, not a loss).

    Parameters
    ----------
    p : (...) Tensor of float
        Probabilities in [0, 1].
    y : (...) Tensor
        Targets in {0, 1} (or [0, 1]), same shape as ``p``.
    class_dim : int, optional
        ``None``: reduce over all elements. Else J is computed per class over
        all other axes, then averaged over classes (empty classes count as 1).
    eps : float, default 0.0
        Smoothing: ``(S_py + eps) / (U + eps)``.

    Returns
    -------
    () Tensor
        ``J`` in [0, 1]; 1.0 with zero gradient when ``U == 0`` (empty case).

    Notes
    -----
    ``dJ/dp_k = [y_k (S_p + S_y) - S_py] / U^2`` (:func:`soft_iou_grad`). The
    source text's ``y_k (1 - y_k) S_p`` term is wrong (it gives ``S_y / U^2``
    instead of ``1 / U`` at foreground pixels); see the module docstring.

    Examples
    --------
    >>> p = torch.tensor([0.5, 1.0, 0.0])
    >>> y = torch.tensor([1.0, 1.0, 0.0])
    >>> soft_iou(p, y)
    tensor(0.7500)
    >>> soft_iou(torch.zeros(4), torch.zeros(4))
    tensor(1.)
    >>> soft_iou(torch.stack([p, 1 - p]), torch.stack([y, 1 - y]), class_dim=0)
    tensor(0.7083)
    """
    s_p, s_y, s_py = _sums(p, y, class_dim)
    j = _ratio(s_py + eps, s_p + s_y - s_py + eps, empty=1.0)
    return j if class_dim is None else j.mean()


def dice_loss(
    p: torch.Tensor, y: torch.Tensor, *, class_dim: int | None = None
) -> torch.Tensor:
    """Soft Dice loss ``1 - 2 S_py / (S_p + S_y)``.

    Parameters
    ----------
    p : (...) Tensor of float
        Probabilities in [0, 1].
    y : (...) Tensor
        Targets in {0, 1}, same shape as ``p``.
    class_dim : int, optional
        ``None``: reduce over all elements. Else the loss is computed per class
        over all other axes, then averaged over classes (empty classes count
        as 0).

    Returns
    -------
    () Tensor
        Loss in [0, 1]; 0.0 with zero gradient when ``S_p + S_y == 0``.

    Notes
    -----
    ``dL/dp_k = -[2 y_k (S_p + S_y) - 2 S_py] / (S_p + S_y)^2``
    (:func:`dice_loss_grad`): the denominator penalises an over-large
    predicted region quadratically.

    Examples
    --------
    >>> dice_loss(torch.tensor([0.5, 1.0, 0.0]), torch.tensor([1.0, 1.0, 0.0]))
    tensor(0.1429)
    >>> dice_loss(torch.zeros(3), torch.zeros(3))
    tensor(0.)
    """
    s_p, s_y, s_py = _sums(p, y, class_dim)
    loss = 1.0 - _ratio(2.0 * s_py, s_p + s_y, empty=1.0)
    return loss if class_dim is None else loss.mean()


def soft_iou_grad(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Closed-form ``dJ/dp`` of :func:`soft_iou` (no class axis, ``eps = 0``).

    ``dJ/dp_k = [y_k (S_p + S_y) - S_py] / (S_p + S_y - S_py)^2``; zero in
    the empty case.

    Parameters
    ----------
    p, y : (...) Tensor
        As for :func:`soft_iou`.

    Returns
    -------
    (...) Tensor
        Same shape and dtype as ``p``.

    Examples
    --------
    >>> soft_iou_grad(torch.tensor([0.5, 1.0, 0.0]), torch.tensor([1.0, 1.0, 0.0]))
    tensor([ 0.5000,  0.5000, -0.3750])
    """
    s_p, s_y, s_py = _sums(p, y, None)
    u = s_p + s_y - s_py
    num = y.to(p.dtype) * (s_p + s_y) - s_py
    return _ratio(num, (u * u).expand_as(num), empty=0.0)


def dice_loss_grad(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Closed-form ``dL/dp`` of :func:`dice_loss` (no class axis).

    ``dL/dp_k = -[2 y_k (S_p + S_y) - 2 S_py] / (S_p + S_y)^2``; zero in the
    empty case.

    Examples
    --------
    >>> dice_loss_grad(torch.tensor([0.5, 1.0, 0.0]), torch.tensor([1.0, 1.0, 0.0]))
    tensor([-0.3265, -0.3265,  0.2449])
    """
    s_p, s_y, s_py = _sums(p, y, None)
    den = s_p + s_y
    num = -(2.0 * y.to(p.dtype) * den - 2.0 * s_py)
    return _ratio(num, (den * den).expand_as(num), empty=0.0)
