r"""Weak supervision from points: multiple-instance learning.

Each labelled point ``j`` (class ``y_j``) defines a bag ``N(j)``: the pixels
within ``radius`` of it. At least one of them belongs to ``y_j``.

* Noisy-OR bag log-likelihood ``log(1 - prod_x (1 - p(x)))``
  (:func:`noisy_or_log_likelihood`), computed as ``log1mexp(sum log1p(-p))``
  so that small probabilities do not round ``1 - prod`` to 0.
* Surrogate ``log(sum_x p(x))`` (:func:`log_sum_surrogate`). Since
  ``prod (1 - p) >= 1 - sum p`` (union bound), the surrogate is an upper bound
  of the noisy-OR log-likelihood. For ``n`` equal probabilities ``p``,
  ``1 - (1 - p)^n = n p (1 - (n - 1) p / 2 + O(p^2))``, so the gap is
  ``(n - 1) p / 2 + O(p^2)``: ``gap / (n p) -> (n - 1) / (2 n)`` as
  ``p -> 0``; the surrogate is the first-order approximation for small ``p``.
* :func:`point_mil_loss`: minus the mean bag term over all points.
* The signal is weak and gives blobs; :func:`smoothness_loss` (total
  variation of the class probabilities) is the spatial regulariser.
"""

from __future__ import annotations

import math
from typing import Sequence, Tuple

import torch

from segcore.errors import ConfigError

__all__ = [
    "log_sum_surrogate",
    "noisy_or_log_likelihood",
    "point_mil_loss",
    "smoothness_loss",
]

Point = Tuple[int, int, Sequence[float]]
_LN2 = math.log(2.0)


def _check_bags(p: torch.Tensor) -> None:
    if not isinstance(p, torch.Tensor) or p.ndim not in (1, 2) or not p.is_floating_point():
        got = (
            f"{p.dtype} of shape {tuple(p.shape)}" if isinstance(p, torch.Tensor) else type(p).__name__
        )
        raise ConfigError(f"p: expected a float tensor (n,) or (B, n), received {got}")


def _log1mexp(s: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(s))`` for ``s <= 0`` (Maechler 2012), NaN-free gradients."""
    near = s > -_LN2
    s_near = torch.where(near, s, torch.full_like(s, -1.0))
    s_far = torch.where(near, torch.full_like(s, -1.0), s)
    return torch.where(near, torch.log(-torch.expm1(s_near)), torch.log1p(-torch.exp(s_far)))


def noisy_or_log_likelihood(p: torch.Tensor) -> torch.Tensor:
    r"""Noisy-OR bag log-likelihood ``log(1 - prod_x (1 - p_x))`` over the last axis.

    Computed as ``log1mexp(sum log1p(-p))``; ``p`` is clamped to
    ``[0, 1 - eps]`` so a probability of exactly 1 gives a finite gradient.

    Parameters
    ----------
    p : (n,) or (B, n) Tensor of float
        Probabilities of the bag's class at its ``n`` pixels.

    Returns
    -------
    () or (B,) Tensor of float
        At most 0; ``-inf`` for a bag of zeros.

    Examples
    --------
    >>> noisy_or_log_likelihood(torch.tensor([0.5, 0.5])).exp()  # 1 - 0.25
    tensor(0.7500)
    >>> p = torch.full((4,), 1e-9)  # naive float32 1 - prod(1 - p) is 0
    >>> noisy_or_log_likelihood(p)  # about log(4e-9) = -19.337
    tensor(-19.3370)
    """
    _check_bags(p)
    one = 1.0 - torch.finfo(p.dtype).eps
    s = torch.log1p(-p.clamp(0.0, one)).sum(-1)
    return _log1mexp(s)


def log_sum_surrogate(p: torch.Tensor) -> torch.Tensor:
    r"""MIL surrogate ``log(sum_x p_x)`` over the last axis (an upper bound of the noisy-OR).

    Parameters
    ----------
    p : (n,) or (B, n) Tensor of float
        Probabilities of the bag's class at its ``n`` pixels.

    Returns
    -------
    () or (B,) Tensor of float
        ``>= noisy_or_log_likelihood(p)``; may exceed 0.

    Examples
    --------
    >>> log_sum_surrogate(torch.tensor([0.5, 0.5]))
    tensor(0.)
    """
    _check_bags(p)
    return torch.log(p.sum(-1))


def _bag(probs: torch.Tensor, point: Point, radius: float) -> torch.Tensor:
    """Probabilities ``(n,)`` of the point's class within ``radius`` of its centre."""
    try:
        b, c, centre = point
        centre = [float(v) for v in centre]
    except (TypeError, ValueError) as err:
        raise ConfigError(
            f"points: expected (batch, class, centre coords), received {point!r}"
        ) from err
    spatial = probs.shape[2:]
    if not (0 <= b < probs.shape[0] and 0 <= c < probs.shape[1]) or len(centre) != len(spatial) or any(
        not 0 <= v <= s - 1 for v, s in zip(centre, spatial)
    ):
        raise ConfigError(
            f"points: expected batch < {probs.shape[0]}, class < {probs.shape[1]} and a centre "
            f"inside the spatial shape {tuple(spatial)}, received {point!r}"
        )
    lo = [max(0, math.ceil(v - radius)) for v in centre]
    hi = [min(s, math.floor(v + radius) + 1) for v, s in zip(centre, spatial)]
    window = probs[(b, c) + tuple(slice(a, z) for a, z in zip(lo, hi))]
    axes = torch.meshgrid(
        *[torch.arange(a, z, dtype=torch.float64) - v for a, z, v in zip(lo, hi, centre)],
        indexing="ij",
    )
    inside = sum(a**2 for a in axes) <= radius**2 + 1e-9
    return window[inside.to(window.device)]


def point_mil_loss(
    probs: torch.Tensor,
    points: Sequence[Point],
    radius: float,
    *,
    surrogate: bool = True,
) -> torch.Tensor:
    r"""Minus the mean MIL bag term over labelled points.

    Parameters
    ----------
    probs : (N, K, \*S) Tensor of float
        Class probabilities (e.g. a softmax), 1 to 3 spatial axes.
    points : sequence of (batch, class, centre)
        One bag per point: ``centre`` is a sequence of ``len(S)`` coordinates
        (pixel units, axis order, inside the image), the bag is every pixel
        within Euclidean distance ``radius`` of it, cut at the image border.
    radius : float
        Bag radius ``>= 0`` (0: the point's pixel alone, when on the grid).
    surrogate : bool, default True
        ``True``: :func:`log_sum_surrogate`; ``False``: :func:`noisy_or_log_likelihood`.

    Returns
    -------
    () Tensor of float
        ``-mean_j term(bag_j)``; 0 (graph kept) without points.

    Examples
    --------
    >>> probs = torch.full((1, 2, 3, 3), 0.5)
    >>> point_mil_loss(probs, [(0, 1, (1, 1))], radius=0)  # -log 0.5
    tensor(0.6931)
    >>> point_mil_loss(probs, [(0, 1, (1, 1))], radius=1, surrogate=False)  # 5 pixels
    tensor(0.0317)
    """
    if not isinstance(probs, torch.Tensor) or not probs.is_floating_point() or not 3 <= probs.ndim <= 5:
        got = tuple(probs.shape) if isinstance(probs, torch.Tensor) else type(probs).__name__
        raise ConfigError(f"probs: expected a float tensor (N, K, *S) with 1 to 3 spatial axes, received {got}")
    if isinstance(radius, bool) or not isinstance(radius, (int, float)) or not (
        math.isfinite(radius) and radius >= 0
    ):
        raise ConfigError(f"point_mil_loss radius: expected a finite number >= 0, received {radius!r}")
    if len(points) == 0:
        return probs.sum() * 0.0
    term = log_sum_surrogate if surrogate else noisy_or_log_likelihood
    values = []
    for point in points:
        bag = _bag(probs, point, float(radius))
        if bag.numel() == 0:
            raise ConfigError(f"points: the bag of {point!r} with radius {radius} holds no pixel")
        values.append(term(bag))
    return -torch.stack(values).mean()


def smoothness_loss(probs: torch.Tensor) -> torch.Tensor:
    r"""Anisotropic total variation of class probabilities, per pixel.

    ``TV = sum_axes sum |p(x + e_axis) - p(x)| / (N * prod(S))``, summed over
    classes: 0 for a constant map; a straight border between two pure
    classes costs 2 per border pixel pair.

    Parameters
    ----------
    probs : (N, K, \*S) Tensor of float
        Class probabilities, 1 to 3 spatial axes.

    Returns
    -------
    () Tensor of float
        The loss, ``>= 0``.

    Examples
    --------
    >>> p1 = torch.tensor([[0.0, 1.0], [0.0, 1.0]])  # (H, W)
    >>> probs = torch.stack([1 - p1, p1])[None]       # (1, 2, 2, 2)
    >>> smoothness_loss(probs)  # 2 rows x 2 classes x |1 - 0| / 4 pixels
    tensor(1.)
    >>> smoothness_loss(torch.full((1, 3, 4, 4, 4), 1 / 3))
    tensor(0.)
    """
    if not isinstance(probs, torch.Tensor) or not probs.is_floating_point() or not 3 <= probs.ndim <= 5:
        got = tuple(probs.shape) if isinstance(probs, torch.Tensor) else type(probs).__name__
        raise ConfigError(f"probs: expected a float tensor (N, K, *S) with 1 to 3 spatial axes, received {got}")
    total = probs.sum() * 0.0
    for axis in range(2, probs.ndim):
        total = total + probs.diff(dim=axis).abs().sum()
    n_pixels = probs.shape[0] * math.prod(probs.shape[2:])
    return total / max(n_pixels, 1)
