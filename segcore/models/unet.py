"""A plain 2D U-Net whose tiled inference equals whole-image inference.

Only per-pixel or local operations are used: convolutions, BatchNorm (in eval
mode an affine map per channel), ReLU, 2x2 max pooling and 2x2 transposed
convolutions. No GroupNorm, InstanceNorm, LayerNorm, attention or global
pooling: any of those would make a pixel's output depend on the whole tile and
break the equality of tiled and untiled inference.
"""

from __future__ import annotations

from typing import Dict, Optional, Union

import torch
from torch import nn

from segcore.errors import ConfigError
from segcore.models.instance_head import InstanceHead
from segcore.receptive_field import unet as unet_receptive_field

__all__ = ["UNet2d"]


def _positive(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(
            f"UNet2d {name}: expected an integer >= {minimum}, received {value!r}"
        )
    return value


def _conv_block(c_in: int, c_out: int, convs: int, kernel: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [
            nn.Conv2d(c_in if i == 0 else c_out, c_out, kernel, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers)


class UNet2d(nn.Module):
    """U-Net for dense 2D segmentation, ``(N, C, H, W) -> (N, K, H, W)`` logits.

    Parameters
    ----------
    in_channels : int
        Input channels ``C`` (bands).
    num_classes : int
        Output classes ``K``.
    base_channels : int, default 16
        Width of the first level; it doubles at every level.
    depth : int, default 3
        Number of 2x2 poolings; the stride is ``2**depth``.
    convs_per_level : int, default 2
        Conv-BatchNorm-ReLU units per block.
    kernel_size : int, default 3
        Odd convolution kernel size.
    instance_head : bool, default False
        Add an :class:`~segcore.models.instance_head.InstanceHead` (1x1
        convolutions, so the receptive field does not change) on the last
        decoder features. ``forward`` then returns a dict
        ``{"semantic": (N, K, H, W) logits, "center": (N, 1, H, W) raw
        heatmap, "offset": (N, 2, H, W) offsets in pixels}`` instead of the
        logits tensor.

    Attributes
    ----------
    stride : int
        ``2**depth``: ``H`` and ``W`` must be multiples of it.
    ndim : int
        Number of spatial axes, 2.

    Raises
    ------
    ConfigError
        On invalid arguments, or in ``forward`` on a wrongly shaped input.

    Examples
    --------
    >>> model = UNet2d(3, 4, base_channels=4, depth=2).eval()
    >>> model(torch.zeros(1, 3, 16, 16)).shape
    torch.Size([1, 4, 16, 16])
    >>> model.stride, model.receptive_field
    (4, 47)
    >>> out = UNet2d(3, 4, base_channels=4, depth=2, instance_head=True)(torch.zeros(1, 3, 16, 16))
    >>> {k: tuple(v.shape) for k, v in out.items()}
    {'semantic': (1, 4, 16, 16), 'center': (1, 1, 16, 16), 'offset': (1, 2, 16, 16)}
    """

    ndim: int = 2
    # Python-only helpers that TorchScript must not compile (torch.jit.script works).
    __jit_unused_properties__ = ["receptive_field", "instance_head"]

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        base_channels: int = 16,
        depth: int = 3,
        convs_per_level: int = 2,
        kernel_size: int = 3,
        instance_head: bool = False,
    ) -> None:
        super().__init__()
        _positive("in_channels", in_channels)
        _positive("num_classes", num_classes)
        _positive("base_channels", base_channels)
        _positive("depth", depth, 0)
        _positive("convs_per_level", convs_per_level)
        _positive("kernel_size", kernel_size)
        if not isinstance(instance_head, bool):
            raise ConfigError(
                f"UNet2d instance_head: expected a bool, received {instance_head!r}"
            )
        if kernel_size % 2 == 0:
            raise ConfigError(
                f"UNet2d kernel_size: expected an odd integer, received {kernel_size}"
            )
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.depth = depth
        self.convs_per_level = convs_per_level
        self.kernel_size = kernel_size
        self.stride = 2**depth
        widths = [base_channels * 2**level for level in range(depth + 1)]
        self.encoder = nn.ModuleList()
        c_in = in_channels
        for width in widths[:-1]:
            self.encoder.append(_conv_block(c_in, width, convs_per_level, kernel_size))
            c_in = width
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = _conv_block(c_in, widths[-1], convs_per_level, kernel_size)
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for level in reversed(range(depth)):
            self.up.append(nn.ConvTranspose2d(widths[level + 1], widths[level], 2, stride=2))
            self.decoder.append(
                _conv_block(2 * widths[level], widths[level], convs_per_level, kernel_size)
            )
        self.head = nn.Conv2d(widths[0], num_classes, 1)
        self.instance: Optional[InstanceHead] = (
            InstanceHead(widths[0], ndim=2, hidden=widths[0]) if instance_head else None
        )

    @property
    def instance_head(self) -> bool:
        """Whether ``forward`` returns the instance dict (see the class docstring)."""
        return self.instance is not None

    @property
    def receptive_field(self) -> int:
        """Centred receptive field, see :func:`segcore.receptive_field.unet`."""
        return unet_receptive_field(self.depth, self.convs_per_level, self.kernel_size)

    @torch.jit.unused
    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ConfigError(
                f"UNet2d input: expected shape (N, {self.in_channels}, H, W), "
                f"received {tuple(x.shape)}"
            )
        h, w = x.shape[-2:]
        if h % self.stride or w % self.stride:
            raise ConfigError(
                f"UNet2d input: expected H and W to be multiples of the stride "
                f"{self.stride}, received H={h}, W={w}; pad with "
                f"segcore.geometry.pad_to_multiple first"
            )

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, Dict[str, torch.Tensor]]:
        """Logits ``(N, K, H, W)`` for an input ``(N, C, H, W)`` of float32.

        With ``instance_head=True`` a dict ``{"semantic", "center", "offset"}``
        (in that order) instead, see the class docstring.
        """
        if not torch.jit.is_scripting():
            self._check_input(x)
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for up, block in zip(self.up, self.decoder):
            x = block(torch.cat([up(x), skips.pop()], dim=1))
        logits = self.head(x)
        if self.instance is None:
            return logits
        center, offset = self.instance(x)
        return {"semantic": logits, "center": center, "offset": offset}
