r"""Focal loss (Lin et al., 2017) for dense multi-class and binary logits.

For the probability ``p_t`` the model gives the true class of a pixel,

.. math:: FL = -\alpha_t (1 - p_t)^\gamma \log p_t .

The factor ``(1 - p_t)^gamma`` shrinks the loss of well-classified pixels so
that training concentrates on hard ones. With ``gamma = 0`` and no ``alpha``
it is exactly the cross-entropy (binary cross-entropy for one channel).

``log p_t`` comes from ``log_softmax`` / ``logsigmoid`` and ``1 - p_t`` from
``-expm1(log p_t)``, so neither underflows for confident pixels.

Empty case: with ``reduction="mean"`` the loss is averaged over valid pixels
(``target != ignore_index``); when no pixel is valid it is 0 (with zero
gradient), never NaN.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

from segcore.errors import ConfigError

__all__ = ["focal_loss"]

_REDUCTIONS = ("mean", "sum", "none")
Alpha = Union[float, Sequence[float], torch.Tensor, None]


def _check_inputs(logits: torch.Tensor, target: torch.Tensor) -> None:
    if not isinstance(logits, torch.Tensor) or logits.ndim < 2 or not logits.is_floating_point():
        got = (
            f"{logits.dtype} of shape {tuple(logits.shape)}"
            if isinstance(logits, torch.Tensor)
            else type(logits).__name__
        )
        raise ConfigError(f"logits: expected a float tensor (N, K, *spatial), received {got}")
    expected = (logits.shape[0],) + tuple(logits.shape[2:])
    if (
        not isinstance(target, torch.Tensor)
        or tuple(target.shape) != expected
        or target.is_floating_point()
    ):
        got = (
            f"{target.dtype} of shape {tuple(target.shape)}"
            if isinstance(target, torch.Tensor)
            else type(target).__name__
        )
        raise ConfigError(f"target: expected an integer tensor of shape {expected}, received {got}")


def _alpha_t(alpha: Alpha, target: torch.Tensor, k: int, like: torch.Tensor) -> torch.Tensor:
    """Per-pixel ``alpha_t`` (same shape as ``target``), or a scalar 1."""
    if alpha is None:
        return torch.ones((), dtype=like.dtype, device=like.device)
    if k == 1:
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
            raise ConfigError(
                f"focal_loss alpha: expected a float in [0, 1] for binary logits, received {alpha!r}"
            )
        a = torch.tensor(float(alpha), dtype=like.dtype, device=like.device)
        return torch.where(target == 1, a, 1 - a)
    weights = torch.as_tensor(alpha, dtype=like.dtype, device=like.device)
    if weights.shape != (k,) or not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
        raise ConfigError(
            f"focal_loss alpha: expected {k} finite weights >= 0 (one per class), received {alpha!r}"
        )
    return weights[target]


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    gamma: float = 2.0,
    alpha: Alpha = None,
    ignore_index: Optional[int] = None,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Focal loss ``-alpha_t (1 - p_t)^gamma log p_t`` for dense logits.

    Parameters
    ----------
    logits : (N, K, \*S) Tensor of float
        Raw scores. ``K >= 2``: softmax over classes. ``K == 1``: binary,
        ``p = sigmoid(logits)`` is the probability of class 1.
    target : (N, \*S) Tensor of int
        Class ids in ``[0, K)`` (``{0, 1}`` when ``K == 1``), or ``ignore_index``.
    gamma : float, default 2.0
        Focusing parameter ``>= 0``; 0 gives (binary) cross-entropy.
    alpha : float or (K,) sequence of float, optional
        Class balancing. Binary: weight ``alpha`` for class 1 and
        ``1 - alpha`` for class 0 (Lin et al. use 0.25). Multi-class: one
        weight per class. ``None``: all weights 1.
    ignore_index : int, optional
        Target value whose pixels contribute nothing (and are not counted).
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"``: average over valid pixels (0 if none is valid);
        ``"sum"``: sum over valid pixels; ``"none"``: the ``(N, *S)`` map,
        0 at ignored pixels.

    Returns
    -------
    () or (N, \*S) Tensor of float
        The loss.

    Examples
    --------
    >>> logits = torch.tensor([[[2.0, 0.0], [0.0, 0.0]]])  # (N=1, K=2, W=2)
    >>> target = torch.tensor([[0, 1]])
    >>> focal_loss(logits, target, gamma=0.0)  # cross-entropy
    tensor(0.4100)
    >>> focal_loss(logits, target)  # the easy first pixel counts for little
    tensor(0.0875)
    >>> focal_loss(logits, torch.full((1, 2), 255), ignore_index=255)
    tensor(0.)
    >>> focal_loss(torch.zeros(1, 1, 3), torch.tensor([[0, 1, 1]]), gamma=0.0)  # binary: BCE
    tensor(0.6931)
    """
    _check_inputs(logits, target)
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not (
        math.isfinite(gamma) and gamma >= 0
    ):
        raise ConfigError(f"focal_loss gamma: expected a finite number >= 0, received {gamma!r}")
    if reduction not in _REDUCTIONS:
        raise ConfigError(f"focal_loss reduction: expected one of {_REDUCTIONS}, received {reduction!r}")
    k = logits.shape[1]
    valid = (
        torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    )
    hi = 2 if k == 1 else k
    bad = valid & ((target < 0) | (target >= hi))
    if bool(bad.any()):
        values = sorted(set(target[bad].unique().tolist()))[:5]
        raise ConfigError(
            f"target: expected class ids in [0, {hi}) or ignore_index={ignore_index}, received {values}"
        )
    safe = torch.where(valid, target, torch.zeros_like(target)).long()
    if k == 1:
        z = logits[:, 0]
        log_pt = F.logsigmoid(torch.where(safe == 1, z, -z))
    else:
        log_pt = torch.log_softmax(logits, dim=1).gather(1, safe.unsqueeze(1)).squeeze(1)
    loss = -log_pt
    if gamma > 0:
        one_minus_pt = (-torch.expm1(log_pt)).clamp(min=torch.finfo(log_pt.dtype).tiny)
        loss = loss * one_minus_pt**gamma
    loss = loss * _alpha_t(alpha, safe, k, logits)
    loss = torch.where(valid, loss, torch.zeros_like(loss))
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / valid.sum().clamp(min=1).to(loss.dtype)
