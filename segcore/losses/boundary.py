r"""Boundary-aware auxiliary supervision.

Masks blur at object borders. Three pieces concentrate learning there:

* :func:`edge_map`: the border pixels of a label map (a pixel whose
  ``(2 width + 1)^d`` neighbourhood holds another label; both sides of a
  border are marked);
* :func:`boundary_weighted_ce`: per-pixel cross-entropy weighted by
  ``1 + edge_weight * edge``;
* :func:`edge_loss`: class-balanced binary cross-entropy for an auxiliary edge
  head (:class:`segcore.models.edge_head.EdgeHead`), with the rare positive
  (edge) pixels re-weighted by ``#negatives / #positives`` as in HED.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from segcore.errors import ConfigError

__all__ = ["boundary_weighted_ce", "edge_loss", "edge_map"]

_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}


def edge_map(labels: torch.Tensor, width: int = 1) -> torch.Tensor:
    r"""Pixels whose neighbourhood holds another label.

    The neighbourhood is the cube of side ``2 width + 1`` centred on the pixel
    (8-connectivity in 2-D, 26 in 3-D for ``width=1``), cut at the image
    border: the image border itself is not an edge. Both sides of a label
    change are marked, so a straight border is ``2 width`` pixels thick.

    Parameters
    ----------
    labels : (N, \*S) Tensor of int
        Label map with 1, 2 or 3 spatial axes.
    width : int, default 1
        Neighbourhood radius (Chebyshev), ``>= 1``.

    Returns
    -------
    (N, \*S) Tensor of float32
        1.0 at edge pixels, 0.0 elsewhere.

    Examples
    --------
    >>> labels = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 1]]])
    >>> edge_map(labels)
    tensor([[[0., 1., 1., 0.],
             [0., 1., 1., 0.]]])
    """
    if not isinstance(labels, torch.Tensor) or labels.ndim - 1 not in _MAX_POOL:
        got = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ConfigError(f"labels: expected a tensor (N, *S) with 1 to 3 spatial axes, received {got}")
    if labels.is_floating_point() or labels.is_complex():
        raise ConfigError(f"labels: expected an integer (or bool) tensor, received {labels.dtype}")
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ConfigError(f"edge_map width: expected an integer >= 1, received {width!r}")
    pool = _MAX_POOL[labels.ndim - 1]
    x = labels.unsqueeze(1).to(torch.float64)  # exact for ids below 2**53
    k = 2 * width + 1
    hi = pool(x, k, stride=1, padding=width)
    lo = -pool(-x, k, stride=1, padding=width)
    return (hi != lo).squeeze(1).to(torch.float32)


def _valid_ce(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: Optional[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel CE ``(N, *S)`` (0 at ignored pixels) and the valid mask."""
    expected = (logits.shape[0],) + tuple(logits.shape[2:])
    if logits.ndim < 3 or not logits.is_floating_point() or logits.shape[1] < 2:
        raise ConfigError(
            f"logits: expected a float tensor (N, K>=2, *S), received {logits.dtype} "
            f"of shape {tuple(logits.shape)}"
        )
    if tuple(target.shape) != expected or target.is_floating_point():
        raise ConfigError(
            f"target: expected an integer tensor of shape {expected}, received "
            f"{target.dtype} of shape {tuple(target.shape)}"
        )
    valid = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    safe = torch.where(valid, target, torch.zeros_like(target)).long()
    ce = F.cross_entropy(logits, safe, reduction="none")
    return torch.where(valid, ce, torch.zeros_like(ce)), valid


def boundary_weighted_ce(
    logits: torch.Tensor,
    target: torch.Tensor,
    edge: torch.Tensor,
    *,
    edge_weight: float = 5.0,
    ignore_index: Optional[int] = None,
) -> torch.Tensor:
    r"""Cross-entropy with pixel weights ``1 + edge_weight * edge``.

    ``L = sum_i (1 + edge_weight * e_i) CE_i / n_valid``: the normaliser is
    the number of valid pixels, not the sum of weights, so with ``edge = 0``
    this is the plain mean cross-entropy, and an edge pixel adds exactly
    ``edge_weight * e_i * CE_i / n_valid`` to it.

    Parameters
    ----------
    logits : (N, K, \*S) Tensor of float
        Raw class scores.
    target : (N, \*S) Tensor of int
        Class ids in ``[0, K)`` or ``ignore_index``.
    edge : (N, \*S) Tensor
        Edge map in [0, 1]: the true one (:func:`edge_map`) or a predicted
        edge probability. It is detached: the weights never receive gradient
        (else training would learn to predict no edges).
    edge_weight : float, default 5.0
        Extra weight ``>= 0`` of an edge pixel.
    ignore_index : int, optional
        Target value excluded from the loss and the count.

    Returns
    -------
    () Tensor of float
        The loss; 0 when no pixel is valid.

    Examples
    --------
    >>> logits = torch.zeros(1, 2, 1, 2)
    >>> target = torch.tensor([[[0, 1]]])
    >>> boundary_weighted_ce(logits, target, torch.zeros(1, 1, 2))  # plain CE: log 2
    tensor(0.6931)
    >>> boundary_weighted_ce(logits, target, torch.tensor([[[1.0, 0.0]]]), edge_weight=2.0)
    tensor(1.3863)
    """
    if isinstance(edge_weight, bool) or not isinstance(edge_weight, (int, float)) or not (
        math.isfinite(edge_weight) and edge_weight >= 0
    ):
        raise ConfigError(
            f"boundary_weighted_ce edge_weight: expected a finite number >= 0, received {edge_weight!r}"
        )
    ce, valid = _valid_ce(logits, target, ignore_index)
    if not isinstance(edge, torch.Tensor) or edge.shape != ce.shape:
        got = tuple(edge.shape) if isinstance(edge, torch.Tensor) else type(edge).__name__
        raise ConfigError(f"edge: expected a tensor of shape {tuple(ce.shape)}, received {got}")
    weight = 1.0 + edge_weight * edge.detach().to(ce.dtype)
    return (weight * ce).sum() / valid.sum().clamp(min=1).to(ce.dtype)


def edge_loss(
    edge_logits: torch.Tensor,
    edge_target: torch.Tensor,
    *,
    pos_weight: Optional[float] = None,
) -> torch.Tensor:
    r"""Binary cross-entropy of edge logits with the positive (edge) class re-weighted.

    ``L = mean_i [ -w y_i log sigma(z_i) - (1 - y_i) log(1 - sigma(z_i)) ]``
    with ``w = pos_weight``, by default ``#negatives / #positives`` over the
    batch (HED's class balancing; 1 when there is no positive), so that the
    thin edges weigh as much in total as the background.

    Parameters
    ----------
    edge_logits : (N, 1, \*S) Tensor of float
        Raw edge scores, e.g. from :class:`segcore.models.edge_head.EdgeHead`.
    edge_target : (N, \*S) or (N, 1, \*S) Tensor
        Edge map in {0, 1} (or [0, 1]), e.g. from :func:`edge_map`.
    pos_weight : float, optional
        Fixed weight ``> 0`` of positives instead of the batch ratio.

    Returns
    -------
    () Tensor of float
        The loss.

    Examples
    --------
    >>> z = torch.zeros(1, 1, 4)
    >>> edge_loss(z, torch.tensor([[0.0, 0.0, 0.0, 1.0]]))  # w = 3: (3 + 3) log 2 / 4
    tensor(1.0397)
    >>> edge_loss(z, torch.zeros(1, 4))  # no edge: plain BCE
    tensor(0.6931)
    """
    if edge_logits.ndim < 3 or edge_logits.shape[1] != 1 or not edge_logits.is_floating_point():
        raise ConfigError(
            f"edge_logits: expected a float tensor (N, 1, *S), received {edge_logits.dtype} "
            f"of shape {tuple(edge_logits.shape)}"
        )
    if edge_target.shape == edge_logits.shape[:1] + edge_logits.shape[2:]:
        edge_target = edge_target.unsqueeze(1)
    if edge_target.shape != edge_logits.shape:
        raise ConfigError(
            f"edge_target: expected shape {tuple(edge_logits.shape)} or without the channel "
            f"axis, received {tuple(edge_target.shape)}"
        )
    y = edge_target.detach().to(edge_logits.dtype)
    if pos_weight is None:
        n_pos = y.sum()
        n_neg = y.numel() - n_pos
        w = torch.where(n_pos > 0, n_neg / n_pos.clamp(min=1e-12), torch.ones_like(n_pos))
    elif isinstance(pos_weight, bool) or not isinstance(pos_weight, (int, float)) or not (
        math.isfinite(pos_weight) and pos_weight > 0
    ):
        raise ConfigError(f"edge_loss pos_weight: expected a finite number > 0, received {pos_weight!r}")
    else:
        w = torch.tensor(float(pos_weight), dtype=y.dtype, device=y.device)
    return F.binary_cross_entropy_with_logits(edge_logits, y, pos_weight=w)
