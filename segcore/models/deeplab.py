"""A small DeepLab-style network: strided conv backbone, ASPP, learned up-sampling.

Only local operations are used (convolutions, BatchNorm, ReLU, a transposed
convolution), so tiled inference equals whole-image inference with a halo of
half the receptive field. DeepLab's image-level pooling branch is left out on
purpose: a global average over the tile would make every pixel depend on the
whole window and break that equality.

Layout (per axis, ``S = stride = 2**n``)::

    stem   conv3x3 -> BN -> ReLU                                 (stride 1)
    n x    conv3x3/2 -> BN -> ReLU -> conv3x3 -> BN -> ReLU      (stride 2 each)
    ASPP   "parallel": 1x1 branch + one 3x3 branch per dilation, concatenated,
                       then a 1x1 projection (DeepLab's ASPP proper)
           "cascade":  one 3x3 atrous layer per dilation, one after another
    up     ConvTranspose(kernel S, stride S) -> BN -> ReLU -> 1x1 classifier

The receptive field is analytic: the backbone's centred receptive
field ``R_base`` (including the up-sampling, whose output pixel ``x`` reads
feature ``x // S`` only) is found by interval arithmetic, and the ASPP grows it
with :func:`segcore.receptive_field.aspp` in the model's ``aspp_mode``:
``R = R_base + 2 * S * max(d)`` (parallel) or ``R_base + 2 * S * sum(d)``
(cascade). :func:`segcore.receptive_field.measure` returns the same value.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from segcore.errors import ConfigError
from segcore.receptive_field import AsppMode, aspp

__all__ = ["DeepLabASPP", "backbone_receptive_field"]


def _cbr(c_in: int, c_out: int, kernel: int = 3, *, stride: int = 1, dilation: int = 1) -> list[nn.Module]:
    pad = dilation * (kernel // 2)
    return [
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=pad, dilation=dilation, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


def _levels(stride: object) -> int:
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1 or stride & (stride - 1):
        raise ConfigError(f"DeepLabASPP stride: expected a power of two >= 1, received {stride!r}")
    return stride.bit_length() - 1


def backbone_receptive_field(stride: int) -> int:
    """Centred receptive field of the backbone + up-sampling of :class:`DeepLabASPP`.

    Interval arithmetic per axis: a 3x3 convolution with stride ``s`` and
    padding 1 maps output interval ``[lo, hi]`` to input ``[s*lo - 1, s*hi + 1]``;
    the transposed convolution (kernel = stride = ``S``) maps output pixel
    ``x`` to feature ``x // S``. The result is ``1 + 2 * max(a, b)`` over the
    ``S`` output phases, where ``[x - a, x + b]`` is the region of ``x``
    (the definition of :mod:`segcore.receptive_field`).

    Parameters
    ----------
    stride : int
        Total stride ``S``, a power of two.

    Returns
    -------
    int

    Examples
    --------
    >>> backbone_receptive_field(1)
    3
    >>> backbone_receptive_field(8)
    59
    """
    levels = _levels(stride)
    # layers from input to output: (kernel reach, stride)
    layers = [(1, 1)] + [(1, 2), (1, 1)] * levels
    reach = 0
    for x in range(stride):
        lo = hi = x // stride
        for r, s in reversed(layers):
            lo, hi = s * lo - r, s * hi + r
        reach = max(reach, x - lo, hi - x)
    return 1 + 2 * reach


class _ParallelASPP(nn.Module):
    def __init__(self, channels: int, dilations: Sequence[int]) -> None:
        super().__init__()
        self.branches = nn.ModuleList([nn.Sequential(*_cbr(channels, channels, 1))])
        for d in dilations:
            self.branches.append(nn.Sequential(*_cbr(channels, channels, 3, dilation=d)))
        self.project = nn.Sequential(*_cbr(channels * len(self.branches), channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([b(x) for b in self.branches], dim=1))


class DeepLabASPP(nn.Module):
    """DeepLab-style segmenter, ``(N, C, H, W) -> (N, K, H, W)`` logits.

    Parameters
    ----------
    in_channels : int
        Input channels ``C``.
    num_classes : int
        Output classes ``K``.
    base_channels : int, default 16
        Width of the stem; it doubles at every stride-2 stage (capped at 8x).
    stride : int, default 8
        Total stride of the backbone, a power of two; ``H`` and ``W`` must be
        multiples of it.
    dilations : sequence of int, default (2, 4, 6)
        Dilations of the 3x3 atrous layers (at feature resolution).
    aspp_mode : {"parallel", "cascade"}, default "parallel"
        ``"parallel"``: DeepLab's ASPP (branches concatenated, largest dilation
        sets the receptive field); ``"cascade"``: atrous layers one after
        another (dilations add up).

    Attributes
    ----------
    stride : int
    receptive_field : int
        Analytic centred receptive field (module docstring); equals
        :func:`segcore.receptive_field.measure` of the model.

    Examples
    --------
    >>> net = DeepLabASPP(3, 5, base_channels=4, stride=8, dilations=(2, 4, 6))
    >>> net.stride, net.receptive_field
    (8, 155)
    >>> DeepLabASPP(3, 5, aspp_mode="cascade").receptive_field
    251
    >>> net(torch.zeros(1, 3, 32, 48)).shape
    torch.Size([1, 5, 32, 48])
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        base_channels: int = 16,
        stride: int = 8,
        dilations: Sequence[int] = (2, 4, 6),
        aspp_mode: str = "parallel",
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("num_classes", num_classes),
                            ("base_channels", base_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"DeepLabASPP {name}: expected an integer >= 1, received {value!r}")
        levels = _levels(stride)
        dils = tuple(dilations)
        if not dils or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dils):
            raise ConfigError(
                f"DeepLabASPP dilations: expected one or more integers >= 1, received {dilations!r}"
            )
        mode = AsppMode.parse(aspp_mode)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.stride = stride
        self.dilations = dils
        self.aspp_mode = mode.value
        layers = _cbr(in_channels, base_channels)
        width = base_channels
        for level in range(levels):
            out = base_channels * 2 ** min(level + 1, 3)
            layers += _cbr(width, out, stride=2) + _cbr(out, out)
            width = out
        self.backbone = nn.Sequential(*layers)
        if mode is AsppMode.PARALLEL:
            self.aspp: nn.Module = _ParallelASPP(width, dils)
        else:
            self.aspp = nn.Sequential(*[m for d in dils for m in _cbr(width, width, dilation=d)])
        self.up = nn.Sequential(
            nn.ConvTranspose2d(width, base_channels, stride, stride=stride, bias=False),
            nn.BatchNorm2d(base_channels),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Conv2d(base_channels, num_classes, 1)
        self.receptive_field = aspp(backbone_receptive_field(stride), stride, 3, dils, mode=mode.value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, K, H, W)`` for ``(N, C, H, W)`` with ``H, W`` multiples of the stride."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ConfigError(
                f"DeepLabASPP input: expected shape (N, {self.in_channels}, H, W), "
                f"received {tuple(x.shape)}"
            )
        if x.shape[2] % self.stride or x.shape[3] % self.stride:
            raise ConfigError(
                f"DeepLabASPP input: expected H and W to be multiples of the stride {self.stride}, "
                f"received H={x.shape[2]}, W={x.shape[3]}; pad with "
                f"segcore.geometry.pad_to_multiple first"
            )
        return self.head(self.up(self.aspp(self.backbone(x))))
