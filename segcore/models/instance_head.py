"""Bottom-up instance head: centre heatmap and centre offsets (Panoptic-DeepLab).

Both branches are 1x1 convolutions with a ReLU between them, so the head is
per-pixel: it adds nothing to the receptive field of the network it sits on
and keeps tiled inference equal to whole-image inference.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

from segcore.errors import ConfigError

__all__ = ["InstanceHead"]

_CONVS = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


def _branch(conv: type[nn.Module], c_in: int, hidden: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(conv(c_in, hidden, 1), nn.ReLU(inplace=True), conv(hidden, c_out, 1))


class InstanceHead(nn.Module):
    """Centre heatmap ``(N, 1, *S)`` and offsets ``(N, ndim, *S)`` from features ``(N, C, *S)``.

    * ``center``: a **raw** (linear, no sigmoid) heatmap regressed with MSE
      onto Gaussian targets in ``[0, 1]`` (peak 1 at each instance centre), as
      in Panoptic-DeepLab; :func:`segcore.instances.group_instances` thresholds
      it directly.
    * ``offset``: per pixel, the vector from the pixel to the centre of its
      instance, in pixel units, one channel per spatial axis in axis order
      (``dy, dx`` in 2-D, ``dz, dy, dx`` in 3-D).

    Each branch is ``1x1 conv -> ReLU -> 1x1 conv``: translation-equivariant,
    no global operation, receptive field 1.

    Parameters
    ----------
    in_channels : int
        Feature channels ``C``.
    ndim : {1, 2, 3}, default 2
        Spatial axes.
    hidden : int, default 32
        Width of each branch's hidden layer.

    Examples
    --------
    >>> head = InstanceHead(8, ndim=3, hidden=4)
    >>> center, offset = head(torch.zeros(2, 8, 4, 5, 6))
    >>> tuple(center.shape), tuple(offset.shape)
    ((2, 1, 4, 5, 6), (2, 3, 4, 5, 6))
    """

    def __init__(self, in_channels: int, ndim: int = 2, hidden: int = 32) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("hidden", hidden)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(
                    f"InstanceHead {name}: expected an integer >= 1, received {value!r}"
                )
        if isinstance(ndim, bool) or ndim not in _CONVS:
            raise ConfigError(f"InstanceHead ndim: expected 1, 2 or 3, received {ndim!r}")
        self.in_channels = in_channels
        self.ndim = ndim
        conv = _CONVS[ndim]
        self.center = _branch(conv, in_channels, hidden, 1)
        self.offset = _branch(conv, in_channels, hidden, ndim)

    def forward(self, features: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(center (N, 1, *S), offset (N, ndim, *S))`` for features ``(N, C, *S)``."""
        return self.center(features), self.offset(features)
