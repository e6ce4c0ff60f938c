"""Plain 2-D and 3-D U-Nets whose tiled inference equals whole-image inference.

Only per-pixel or local operations are used: convolutions, BatchNorm (in eval
mode an affine map per channel), ReLU, 2x2 (2x2x2) max pooling and 2x2 (2x2x2)
transposed convolutions. No GroupNorm, InstanceNorm, LayerNorm, attention or
global pooling: any of those would make a pixel's output depend on the whole
tile and break the equality of tiled and untiled inference.

:class:`UNet2d` and :class:`UNet3d` share one N-D implementation
(``_UNetNd``); they differ only in the layer types, so their parameter names
(``encoder.*``, ``bottleneck.*``, ``up.*``, ``decoder.*``, ``head.*``,
``instance.*``) are the same and the receptive field per axis is the same.
"""

from __future__ import annotations

from typing import Dict, Optional, Union

import torch
from torch import nn

from segcore.errors import ConfigError
from segcore.models.instance_head import InstanceHead
from segcore.receptive_field import unet as unet_receptive_field

__all__ = ["UNet2d", "UNet3d"]

_LAYERS = {
    2: (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.ConvTranspose2d),
    3: (nn.Conv3d, nn.BatchNorm3d, nn.MaxPool3d, nn.ConvTranspose3d),
}
_AXES = {2: "H, W", 3: "D, H, W"}


def _positive(owner: str, name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(
            f"{owner} {name}: expected an integer >= {minimum}, received {value!r}"
        )
    return value


def _conv_block(ndim: int, c_in: int, c_out: int, convs: int, kernel: int) -> nn.Sequential:
    conv, norm = _LAYERS[ndim][:2]
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [
            conv(c_in if i == 0 else c_out, c_out, kernel, padding=kernel // 2, bias=False),
            norm(c_out),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers)


class _UNetNd(nn.Module):
    """Shared body of :class:`UNet2d` and :class:`UNet3d` (``ndim`` set by the subclass)."""

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
        owner = type(self).__name__
        _positive(owner, "in_channels", in_channels)
        _positive(owner, "num_classes", num_classes)
        _positive(owner, "base_channels", base_channels)
        _positive(owner, "depth", depth, 0)
        _positive(owner, "convs_per_level", convs_per_level)
        _positive(owner, "kernel_size", kernel_size)
        if not isinstance(instance_head, bool):
            raise ConfigError(
                f"{owner} instance_head: expected a bool, received {instance_head!r}"
            )
        if kernel_size % 2 == 0:
            raise ConfigError(
                f"{owner} kernel_size: expected an odd integer, received {kernel_size}"
            )
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.depth = depth
        self.convs_per_level = convs_per_level
        self.kernel_size = kernel_size
        self.stride = 2**depth
        nd = self.ndim
        conv, _, pool, up = _LAYERS[nd]
        widths = [base_channels * 2**level for level in range(depth + 1)]
        self.encoder = nn.ModuleList()
        c_in = in_channels
        for width in widths[:-1]:
            self.encoder.append(_conv_block(nd, c_in, width, convs_per_level, kernel_size))
            c_in = width
        self.pool = pool(2)
        self.bottleneck = _conv_block(nd, c_in, widths[-1], convs_per_level, kernel_size)
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for level in reversed(range(depth)):
            self.up.append(up(widths[level + 1], widths[level], 2, stride=2))
            self.decoder.append(
                _conv_block(nd, 2 * widths[level], widths[level], convs_per_level, kernel_size)
            )
        self.head = conv(widths[0], num_classes, 1)
        self.instance: Optional[InstanceHead] = (
            InstanceHead(widths[0], ndim=nd, hidden=widths[0]) if instance_head else None
        )

    @property
    def instance_head(self) -> bool:
        """Whether ``forward`` returns the instance dict (see the class docstring)."""
        return self.instance is not None

    @property
    def receptive_field(self) -> int:
        """Centred receptive field per axis, see :func:`segcore.receptive_field.unet`."""
        return unet_receptive_field(self.depth, self.convs_per_level, self.kernel_size)

    @torch.jit.unused
    def _check_input(self, x: torch.Tensor) -> None:
        owner, axes = type(self).__name__, _AXES[self.ndim]
        if x.ndim != self.ndim + 2 or x.shape[1] != self.in_channels:
            raise ConfigError(
                f"{owner} input: expected shape (N, {self.in_channels}, {axes}), "
                f"received {tuple(x.shape)}"
            )
        sizes = tuple(int(s) for s in x.shape[2:])
        if any(s % self.stride for s in sizes):
            received = ", ".join(f"{a}={s}" for a, s in zip(axes.split(", "), sizes))
            raise ConfigError(
                f"{owner} input: expected {' and '.join(axes.split(', '))} to be multiples "
                f"of the stride {self.stride}, received {received}; pad with "
                f"segcore.geometry.pad_to_multiple first"
            )

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, Dict[str, torch.Tensor]]:
        """Logits ``(N, K, *S)`` for an input ``(N, C, *S)`` of float32.

        With ``instance_head=True`` a dict ``{"semantic", "center", "offset"}``
        (in that order) instead, see the class docstring.
        """
        # the check reads sizes as ints: skipped while TorchScript or torch.export trace
        if not torch.jit.is_scripting() and not torch.compiler.is_compiling():
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


class UNet2d(_UNetNd):
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


class UNet3d(_UNetNd):
    """U-Net for dense 3D segmentation, ``(N, C, D, H, W) -> (N, K, D, H, W)`` logits.

    The 3-D twin of :class:`UNet2d`: the same design (Conv3d, BatchNorm3d,
    ReLU, 2x2x2 max pooling, 2x2x2 transposed convolutions, only local
    operations, so tiled inference equals whole-volume inference), the same
    parameters and the same parameter names. The receptive field is the same
    per axis as the 2-D network's (every layer acts on each axis alike).

    Parameters
    ----------
    in_channels : int
        Input channels ``C`` (e.g. 1 for a single MR/CT series).
    num_classes : int
        Output classes ``K``.
    base_channels : int, default 16
        Width of the first level; it doubles at every level.
    depth : int, default 3
        Number of 2x2x2 poolings; the stride is ``2**depth`` along every axis.
    convs_per_level : int, default 2
        Conv-BatchNorm-ReLU units per block.
    kernel_size : int, default 3
        Odd (cubic) convolution kernel size.
    instance_head : bool, default False
        Add an :class:`~segcore.models.instance_head.InstanceHead` with
        ``ndim=3`` (1x1x1 convolutions) on the last decoder features.
        ``forward`` then returns ``{"semantic": (N, K, D, H, W) logits,
        "center": (N, 1, D, H, W) raw heatmap, "offset": (N, 3, D, H, W)
        offsets (dz, dy, dx) in voxels}``.

    Attributes
    ----------
    stride : int
        ``2**depth``: ``D``, ``H`` and ``W`` must be multiples of it.
    ndim : int
        Number of spatial axes, 3.

    Raises
    ------
    ConfigError
        On invalid arguments, or in ``forward`` on a wrongly shaped input.

    Examples
    --------
    >>> model = UNet3d(1, 3, base_channels=2, depth=2).eval()
    >>> model(torch.zeros(1, 1, 8, 12, 16)).shape
    torch.Size([1, 3, 8, 12, 16])
    >>> model.stride, model.receptive_field
    (4, 47)
    >>> out = UNet3d(1, 3, base_channels=2, depth=1, instance_head=True)(torch.zeros(1, 1, 4, 4, 6))
    >>> {k: tuple(v.shape) for k, v in out.items()}
    {'semantic': (1, 3, 4, 4, 6), 'center': (1, 1, 4, 4, 6), 'offset': (1, 3, 4, 4, 6)}
    """

    ndim: int = 3
