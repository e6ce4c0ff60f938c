"""Auxiliary edge head: per-pixel object-border logits.

``1x1 conv -> ReLU -> 1x1 conv`` like :class:`segcore.models.instance_head.InstanceHead`:
per-pixel, so it adds nothing to the receptive field and tiled inference stays
equal to whole-image inference. Train it with
:func:`segcore.losses.boundary.edge_loss` against
:func:`segcore.losses.boundary.edge_map` of the labels; its sigmoid can weight
the segmentation loss (:func:`segcore.losses.boundary.boundary_weighted_ce`).
"""

from __future__ import annotations

import torch
from torch import nn

from segcore.errors import ConfigError

__all__ = ["EdgeHead"]

_CONVS = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


class EdgeHead(nn.Module):
    """Raw edge logits ``(N, 1, *S)`` from features ``(N, C, *S)``.

    Parameters
    ----------
    in_channels : int
        Feature channels ``C``.
    ndim : {1, 2, 3}, default 2
        Spatial axes.
    hidden : int, default 16
        Width of the hidden layer.

    Examples
    --------
    >>> head = EdgeHead(8, ndim=3, hidden=4)
    >>> tuple(head(torch.zeros(2, 8, 4, 5, 6)).shape)
    (2, 1, 4, 5, 6)
    """

    def __init__(self, in_channels: int, ndim: int = 2, hidden: int = 16) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("hidden", hidden)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"EdgeHead {name}: expected an integer >= 1, received {value!r}")
        if isinstance(ndim, bool) or ndim not in _CONVS:
            raise ConfigError(f"EdgeHead ndim: expected 1, 2 or 3, received {ndim!r}")
        self.in_channels = in_channels
        self.ndim = ndim
        conv = _CONVS[ndim]
        self.edge = nn.Sequential(
            conv(in_channels, hidden, 1), nn.ReLU(inplace=True), conv(hidden, 1, 1)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Edge logits ``(N, 1, *S)`` (no sigmoid) for features ``(N, C, *S)``."""
        if features.ndim != self.ndim + 2 or features.shape[1] != self.in_channels:
            raise ConfigError(
                f"EdgeHead features: expected shape (N, {self.in_channels}, "
                f"{', '.join(['*'] * self.ndim)}), received {tuple(features.shape)}"
            )
        return self.edge(features)
