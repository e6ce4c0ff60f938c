"""A 3-D network wrapped to see its windows in its own axis order (MONAI ``Orientationd``).

Kept apart from :mod:`pipeline.model_sources.monai_transforms`, which reads a bundle's
transform configs without torch: only building the network imports it (a driver that
only inspects a model does not pay torch's import, about 2 s here).
"""

from __future__ import annotations

from typing import Any

import torch

from pipeline.model_sources.monai_transforms import axis_map


class OrientedNetwork(torch.nn.Module):
    """A 3-D network that expects its windows in ``axcodes`` orientation, fed segpipe's
    canonical ``(B, C, z, y, x)`` = (S, A, R) windows; its outputs come back canonical.

    Flipping a window is exact: every window is flipped as the whole volume would be.
    """

    def __init__(self, net: torch.nn.Module, axcodes: str) -> None:
        super().__init__()
        self.net = net
        axes, flips = axis_map(axcodes)
        self.to_model = [0, 1, *(2 + j for j in axes)]
        self.to_canonical = [0, 1, *(2 + axes.index(j) for j in range(3))]
        self.flips = [2 + i for i, f in enumerate(flips) if f]

    def _back(self, y: torch.Tensor) -> torch.Tensor:
        if self.flips:
            y = y.flip(self.flips)
        return y.permute(self.to_canonical)

    def forward(self, x: torch.Tensor) -> Any:
        x = x.permute(self.to_model)
        if self.flips:
            x = x.flip(self.flips)
        out = self.net(x.contiguous())
        if isinstance(out, dict):
            return {k: self._back(v) for k, v in out.items()}
        return self._back(out)
