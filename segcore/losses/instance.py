"""Instance-head loss: MSE on the centre heatmap plus L1 on offsets (Panoptic-DeepLab)."""

from __future__ import annotations

import math
from typing import Dict, Optional

import torch
from torch import nn

from segcore.errors import ConfigError

__all__ = ["InstanceLoss"]


def _weight(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
        math.isfinite(value) and value >= 0
    ):
        raise ConfigError(f"InstanceLoss {name}: expected a finite number >= 0, received {value!r}")
    return float(value)


class InstanceLoss(nn.Module):
    """``center_weight * L_center + offset_weight * L_offset`` for the instance head.

    * ``L_center``: mean squared error between the raw heatmap ``(N, 1, *S)``
      and the Gaussian target of :func:`segcore.instances.instance_targets`,
      averaged over the pixels where ``center_mask`` is true (all by default).
    * ``L_offset``: L1 distance between predicted and target offsets
      ``(N, ndim, *S)``, summed over the ``ndim`` components, weighted per
      pixel by ``weights`` ``(N, *S)`` (1 at instance pixels, 0 elsewhere) and
      divided by ``sum(weights)``; 0 when no pixel has weight.

    The defaults ``center_weight=200``, ``offset_weight=0.01`` are
    Panoptic-DeepLab's: they balance a heatmap in ``[0, 1]`` against offsets
    of tens of pixels. Smaller objects (small offsets) may want a larger
    ``offset_weight``.

    Parameters
    ----------
    center_weight : float, default 200.0
    offset_weight : float, default 0.01

    Examples
    --------
    >>> loss = InstanceLoss()
    >>> center, target = torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 0.1)
    >>> offset, off_target = torch.zeros(1, 2, 2, 2), torch.ones(1, 2, 2, 2)
    >>> weights = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    >>> loss(center, offset, target, off_target, weights)  # 200 * 0.01 + 0.01 * 2
    tensor(2.0200)
    """

    def __init__(self, center_weight: float = 200.0, offset_weight: float = 0.01) -> None:
        super().__init__()
        self.center_weight = _weight("center_weight", center_weight)
        self.offset_weight = _weight("offset_weight", offset_weight)

    @staticmethod
    def _check(center: torch.Tensor, offset: torch.Tensor, center_target: torch.Tensor,
               offset_target: torch.Tensor, weights: torch.Tensor) -> None:
        n, spatial = center.shape[0], tuple(center.shape[2:])
        expected = {
            "center": (n, 1) + spatial,
            "offset": (n, len(spatial)) + spatial,
            "center_target": (n, 1) + spatial,
            "offset_target": (n, len(spatial)) + spatial,
            "weights": (n,) + spatial,
        }
        given = dict(center=center, offset=offset, center_target=center_target,
                     offset_target=offset_target, weights=weights)
        for name, tensor in given.items():
            if tuple(tensor.shape) != expected[name]:
                raise ConfigError(
                    f"{name}: expected shape {expected[name]}, received {tuple(tensor.shape)}"
                )

    def terms(
        self,
        center: torch.Tensor,
        offset: torch.Tensor,
        center_target: torch.Tensor,
        offset_target: torch.Tensor,
        weights: torch.Tensor,
        center_mask: Optional[torch.Tensor] = None,
    ) -> Dict[str, torch.Tensor]:
        """Unweighted ``{"center": L_center, "offset": L_offset}`` (see the class docstring)."""
        if center.ndim < 3:
            raise ConfigError(f"center: expected shape (N, 1, *S), received {tuple(center.shape)}")
        self._check(center, offset, center_target, offset_target, weights)
        sq = (center - center_target.to(center.dtype)) ** 2
        if center_mask is None:
            l_center = sq.mean()
        else:
            m = center_mask.to(sq.dtype).reshape(sq.shape)
            l_center = (sq * m).sum() / m.sum().clamp(min=1)
        w = weights.to(offset.dtype)
        l1 = (offset - offset_target.to(offset.dtype)).abs().sum(dim=1)
        total, denom = (l1 * w).sum(), w.sum()
        l_offset = total / denom if bool(denom > 0) else total  # total == 0 then, keeps the graph
        return {"center": l_center, "offset": l_offset}

    def forward(
        self,
        center: torch.Tensor,
        offset: torch.Tensor,
        center_target: torch.Tensor,
        offset_target: torch.Tensor,
        weights: torch.Tensor,
        center_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Scalar loss; ``center_mask`` ``(N, *S)`` optionally limits the heatmap term."""
        t = self.terms(center, offset, center_target, offset_target, weights, center_mask)
        return self.center_weight * t["center"] + self.offset_weight * t["offset"]
