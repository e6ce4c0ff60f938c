"""Receptive fields: closed forms, an analytic chain rule and an empirical probe.

The pipeline sizes the tile halo from the receptive field: a halo of
at least half the receptive field makes tiled inference equal untiled inference
for a convolutional model whose window origins are multiples of its stride.

Definition used throughout
--------------------------
For an output pixel ``x`` let ``[x - a, x + b]`` be the input region that can
influence it (per axis). For plain stacks of stride-1 convolutions ``a == b``
and the receptive field is the usual extent ``a + b + 1``. Networks with
pooling and up-sampling (a U-Net) see a region that depends on ``x`` modulo the
total stride and is not centred on ``x``. We then report the **centred**
receptive field, maximised over output positions::

    R = 1 + 2 * max over x, axes of max(a, b)

the width of the smallest centred window that contains the region of every
output pixel. It equals the usual extent for symmetric stride-1 stacks, is a
few pixels larger than the plain extent ``max(a + b + 1)`` for a U-Net (103
versus 100 for ``unet(3, 2)``), and it is the value that makes
``halo_for(R, 1) = ceil((R - 1) / 2)`` enough on both sides of a tile.
:func:`unet` computes it exactly and :func:`measure` measures it.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from segcore.errors import ConfigError
from segcore.hints import parse_choice

if TYPE_CHECKING:  # torch loads with the probe: the closed forms need only arithmetic
    import torch
    from torch import nn

__all__ = [
    "AsppMode",
    "Layer",
    "aspp",
    "chain",
    "dilated_stack",
    "halo_for",
    "measure",
    "unet",
]


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(
            f"{name}: expected an integer >= {minimum}, received {value!r}"
        )
    return value


@dataclass(frozen=True)
class Layer:
    """One layer of a sequential stack, for :func:`chain`.

    Parameters
    ----------
    kernel : int
        Kernel size ``k >= 1`` (pooling windows count as kernels).
    stride : int, default 1
        Stride ``>= 1``.
    dilation : int, default 1
        Dilation ``d >= 1``; the effective kernel is ``k + (k - 1)(d - 1)``.

    Examples
    --------
    >>> Layer(3, dilation=2).effective_kernel
    5
    """

    kernel: int
    stride: int = 1
    dilation: int = 1

    def __post_init__(self) -> None:
        _check_int("Layer.kernel", self.kernel, 1)
        _check_int("Layer.stride", self.stride, 1)
        _check_int("Layer.dilation", self.dilation, 1)

    @property
    def effective_kernel(self) -> int:
        """Kernel size after dilation, ``k + (k - 1)(d - 1)``."""
        return self.kernel + (self.kernel - 1) * (self.dilation - 1)


def chain(layers: Sequence[Layer]) -> int:
    """Receptive field of a sequential stack of layers.

    Uses the standard recurrence ``r += (k_eff - 1) * jump; jump *= stride``
    starting from ``r = 1, jump = 1``.

    Parameters
    ----------
    layers : sequence of Layer
        Layers in the order the input passes through them.

    Returns
    -------
    int
        Receptive field in input pixels.

    Examples
    --------
    >>> chain([Layer(3), Layer(2, stride=2), Layer(3)])
    8
    >>> chain([Layer(3, dilation=2)] * 3) == dilated_stack(3, 2, 3)
    True
    """
    r, jump = 1, 1
    for layer in layers:
        if not isinstance(layer, Layer):
            raise ConfigError(
                f"layers: expected a sequence of Layer, received an item {layer!r}"
            )
        r += (layer.effective_kernel - 1) * jump
        jump *= layer.stride
    return r


def dilated_stack(kernel: int, dilation: int, layers: int) -> int:
    """Receptive field of ``layers`` stride-1 convolutions.

    ``R_l = 1 + l * d * (k - 1)``.

    Parameters
    ----------
    kernel : int
        Kernel size ``k >= 1``.
    dilation : int
        Dilation ``d >= 1``.
    layers : int
        Number of layers ``l >= 0``.

    Returns
    -------
    int

    Examples
    --------
    >>> dilated_stack(3, 1, 2)
    5
    >>> dilated_stack(3, 2, 3)
    13
    """
    _check_int("kernel", kernel, 1)
    _check_int("dilation", dilation, 1)
    _check_int("layers", layers, 0)
    return 1 + layers * dilation * (kernel - 1)


class AsppMode(str, Enum):
    """How the atrous layers of :func:`aspp` are combined."""

    CASCADE = "cascade"
    """Dilated layers one after another: dilations add up."""
    PARALLEL = "parallel"
    """DeepLab's ASPP proper: parallel branches; the largest dilation wins."""

    @classmethod
    def parse(cls, value: str | AsppMode) -> AsppMode:
        """Member named by ``value``; ConfigError with a "did you mean" hint."""
        return parse_choice(cls, value, name="mode")



def aspp(
    r_base: int,
    stride: int,
    kernel: int,
    dilations: Sequence[int],
    mode: str = "cascade",
) -> int:
    """Receptive field of a backbone followed by atrous (dilated) layers.

    ``"cascade"``: ``R = r_base + (k - 1) * S * sum(d)`` (layers applied one
    after another). ``"parallel"``: ``R = r_base + (k - 1) * S * max(d)``
    (DeepLab ASPP: branches run side by side and are concatenated).

    Parameters
    ----------
    r_base : int
        Receptive field of the backbone, ``>= 1``.
    stride : int
        Total stride ``S`` of the backbone, ``>= 1``.
    kernel : int
        Kernel size ``k`` of the atrous layers.
    dilations : sequence of int
        Dilations ``d_i >= 1``, at least one.
    mode : {"cascade", "parallel"}, default "cascade"

    Returns
    -------
    int

    Raises
    ------
    ConfigError
        On an unknown ``mode`` (with a hint) or invalid numbers.

    Examples
    --------
    >>> aspp(51, 8, 3, [2, 4, 6])
    243
    >>> aspp(51, 8, 3, [2, 4, 6], mode="parallel")
    147
    """
    parsed = AsppMode.parse(mode)
    _check_int("r_base", r_base, 1)
    _check_int("stride", stride, 1)
    _check_int("kernel", kernel, 1)
    dils = [_check_int("dilations", d, 1) for d in dilations]
    if not dils:
        raise ConfigError("dilations: expected at least one dilation, received none")
    total = sum(dils) if parsed is AsppMode.CASCADE else max(dils)
    return r_base + (kernel - 1) * stride * total


# --- U-Net -------------------------------------------------------------------

_Interval = tuple[int, int]


def _encoder_region(level: int, span: _Interval, reach: int) -> _Interval:
    """Input interval that feeds encoder features ``span`` at ``level``."""
    lo, hi = span
    for current in range(level, -1, -1):
        lo, hi = lo - reach, hi + reach  # the conv block of this level
        if current > 0:
            lo, hi = 2 * lo, 2 * hi + 1  # undo MaxPool2d(2)
    return lo, hi


def _decoder_region(level: int, depth: int, span: _Interval, reach: int) -> _Interval:
    """Input interval that feeds decoder features ``span`` at ``level``."""
    if level == depth:  # bottleneck = encoder block at the deepest level
        return _encoder_region(depth, span, reach)
    lo, hi = span[0] - reach, span[1] + reach  # decoder conv block
    skip = _encoder_region(level, (lo, hi), reach)
    # ConvTranspose2d(kernel 2, stride 2): output i reads input i // 2 only.
    deep = _decoder_region(level + 1, depth, (lo // 2, hi // 2), reach)
    return min(skip[0], deep[0]), max(skip[1], deep[1])


def unet_offsets(depth: int, convs_per_level: int, kernel: int = 3) -> list[_Interval]:
    """Per-phase reach ``(a, b)`` of :class:`~segcore.models.UNet2d`, per axis.

    For output positions ``x = 0 .. 2**depth - 1`` (one per phase modulo the
    stride) returns ``(a, b)`` such that inputs ``[x - a, x + b]`` influence
    ``x``.

    Examples
    --------
    >>> unet_offsets(1, 1)
    [(5, 4), (4, 5)]
    """
    _check_int("depth", depth, 0)
    _check_int("convs_per_level", convs_per_level, 1)
    _check_int("kernel", kernel, 1)
    if kernel % 2 == 0:
        raise ConfigError(f"kernel: expected an odd kernel size, received {kernel}")
    reach = convs_per_level * (kernel // 2)
    out = []
    for x in range(2**depth):
        lo, hi = _decoder_region(0, depth, (x, x), reach)
        out.append((x - lo, hi - x))
    return out


def unet(depth: int, convs_per_level: int, kernel: int = 3) -> int:
    """Analytic (centred) receptive field of :class:`~segcore.models.UNet2d`.

    Follows every path of the network in one axis with interval arithmetic:
    each conv block at level ``l`` widens the region by
    ``convs_per_level * (kernel // 2)`` level-``l`` pixels, ``MaxPool2d(2)``
    maps index ``j`` back to ``[2j, 2j + 1]`` and the transposed convolution
    (kernel 2, stride 2) maps index ``i`` to ``i // 2``, adding nothing but
    alignment. The deepest path (through the bottleneck) dominates; the skip
    paths are contained in it. Because the region depends on the output
    position modulo ``2**depth``, the value is the centred receptive field
    maximised over output positions (see the module docstring); the
    empirical :func:`measure` with ``positions=2**depth`` returns the same.

    Parameters
    ----------
    depth : int
        Number of pooling steps (the stride is ``2**depth``).
    convs_per_level : int
        Convolutions per block.
    kernel : int, default 3
        Odd convolution kernel size.

    Returns
    -------
    int

    Examples
    --------
    >>> unet(3, 2), unet(4, 2)
    (103, 215)
    >>> unet(0, 2) == dilated_stack(3, 1, 2)
    True
    """
    offsets = unet_offsets(depth, convs_per_level, kernel)
    return 1 + 2 * max(max(a, b) for a, b in offsets)


def halo_for(receptive_field: int, align: int) -> int:
    """Smallest multiple of ``align`` that is ``>= ceil((R - 1) / 2)``.

    Parameters
    ----------
    receptive_field : int
        Centred receptive field ``R >= 1``.
    align : int
        Model stride the halo must be a multiple of, ``>= 1``.

    Returns
    -------
    int

    Examples
    --------
    >>> halo_for(103, 8)
    56
    >>> halo_for(5, 1), halo_for(1, 16)
    (2, 0)
    """
    _check_int("receptive_field", receptive_field, 1)
    _check_int("align", align, 1)
    radius = receptive_field // 2  # == ceil((R - 1) / 2)
    return -(-radius // align) * align


# --- empirical probe -----------------------------------------------------------

_MAX_ELEMENTS = 2**22


def _first_tensor(out: object) -> torch.Tensor:
    import torch

    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict) and out:
        return _first_tensor(out["out"] if "out" in out else next(iter(out.values())))
    if isinstance(out, (tuple, list)) and out:
        return _first_tensor(out[0])
    raise ConfigError(
        f"module: expected a forward that returns a tensor, received {type(out).__name__}"
    )


def _probe(module: nn.Module, x: torch.Tensor, positions: int) -> int | None:
    """Centred RF from ``positions`` diagonal probes; ``None`` if it hits the border.

    The samples of the batch ``x`` are independent random inputs (eval mode
    keeps them independent); their non-zero gradients are united so that a
    ReLU that happens to be off for one input does not hide a path.
    """
    import torch

    x = x.requires_grad_(True)
    out = _first_tensor(module(x))
    spatial = tuple(x.shape[2:])
    if tuple(out.shape[:1] + out.shape[2:]) != (x.shape[0],) + spatial:
        raise ConfigError(
            f"module: expected a dense output of shape (N, K, *{spatial}), "
            f"received {tuple(out.shape)}"
        )
    centre = spatial[0] // 2
    reach = 0
    for step in range(positions):
        seed = torch.zeros_like(out)
        seed[(slice(None), slice(None)) + (centre + step,) * len(spatial)] = 1.0
        (grad,) = torch.autograd.grad(out, x, seed, retain_graph=step < positions - 1)
        hit = grad.ne(0).flatten(0, 1).any(dim=0)
        for axis in range(hit.ndim):
            other = tuple(a for a in range(hit.ndim) if a != axis)
            rows = torch.nonzero(hit.any(dim=other) if other else hit).flatten()
            if rows.numel() == 0:
                continue
            lo, hi = int(rows[0]), int(rows[-1])
            # Strictly inside, by more than the widest gap between hit rows:
            # a dilated region clipped by the border need not touch it.
            gap = int(rows.diff().max()) if rows.numel() > 1 else 1
            if lo < gap or hi > spatial[axis] - 1 - gap:
                return None
            reach = max(reach, centre + step - lo, hi - centre - step)
    return 1 + 2 * reach


def _float64_copy(module: nn.Module) -> nn.Module | None:
    try:
        return copy.deepcopy(module).double()
    except Exception:  # noqa: BLE001 - some scripted modules refuse; fall back
        return None


def measure(
    module: nn.Module,
    in_channels: int,
    ndim: int = 2,
    *,
    size: int | None = None,
    positions: int | None = None,
    samples: int = 4,
) -> int:
    """Measure the centred receptive field with a gradient probe.

    The module runs in eval mode (on a float64 copy when it can be copied,
    else on itself in float32, restoring its training mode afterwards) on a
    batch of ``samples`` standard-normal random inputs (much smaller inputs
    let the biases dominate and can switch whole ReLU channels off). For each
    probed output pixel the classes are summed and back-propagated; the input
    pixels with a non-zero gradient in any sample give the region
    ``[x - a, x + b]``, and the result is ``1 + 2 * max(a, b)`` over probes
    and axes (the module docstring explains this definition).
    Probes sit on the diagonal from the centre, one per phase modulo the
    stride, so strided networks are measured at every output phase.

    Parameters
    ----------
    module : nn.Module
        Dense model ``(N, C, *spatial) -> (N, K, *spatial)``; a tuple or dict
        output uses its first tensor (``"out"`` for dicts).
    in_channels : int
        Channels ``C`` of the probe input.
    ndim : int, default 2
        Number of spatial axes.
    size : int, optional
        Side of the probe input. By default powers of two from 16 are tried
        until the region lies strictly inside the input, away from the border
        by more than the widest gap between its hit rows (dilated layers leave
        gaps, so a clipped region need not touch the border).
    positions : int, optional
        Output pixels probed; default: the module's integer ``stride``
        attribute if it has one, else 1 (the centre pixel only).
    samples : int, default 4
        Independent random inputs whose regions are united, so that ReLUs
        switched off by one input do not shrink the measurement.

    Returns
    -------
    int

    Raises
    ------
    ConfigError
        If the region touches the border of a given ``size``, or exceeds the
        largest input tried (about 4 M pixels).

    Examples
    --------
    >>> from torch import nn
    >>> stack = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
    ...                       nn.Conv2d(4, 2, 3, padding=2, dilation=2))
    >>> measure(stack, in_channels=1)
    7
    """
    import torch

    _check_int("in_channels", in_channels, 1)
    _check_int("ndim", ndim, 1)
    if positions is None:
        stride = getattr(module, "stride", 1)
        positions = stride if isinstance(stride, int) and stride >= 1 else 1
    _check_int("positions", positions, 1)
    _check_int("samples", samples, 1)
    if size is not None and _check_int("size", size, 1) // 2 + positions >= size:
        raise ConfigError(
            f"size: expected more than {2 * positions} pixels for {positions} "
            f"probe positions, received {size!r}"
        )
    target = _float64_copy(module)
    owned = target is not None
    target = target if target is not None else module
    dtype = torch.float64 if owned else torch.float32
    was_training = module.training
    device = next(iter(target.parameters()), torch.empty(0)).device
    generator = torch.Generator().manual_seed(0)
    try:
        target.eval()
        sizes = [size] if size is not None else _default_sizes(ndim, positions)
        for side in sizes:
            shape = (samples, in_channels) + (side,) * ndim
            x = torch.randn(shape, generator=generator, dtype=torch.float64)
            with torch.enable_grad():
                found = _probe(target, x.to(device=device, dtype=dtype), positions)
            if found is not None:
                return found
    finally:
        module.train(was_training)
    if size is not None:
        raise ConfigError(
            f"size: expected an input larger than the receptive field, received {size}"
        )
    raise ConfigError(
        f"module: receptive field larger than the largest probe input "
        f"({sizes[-1]} pixels per axis); pass a larger size="
    )


def _default_sizes(ndim: int, positions: int) -> list[int]:
    side = 16
    while side < 4 * positions:
        side *= 2
    sizes = []
    while side**ndim <= _MAX_ELEMENTS or not sizes:
        sizes.append(side)
        side *= 2
    return sizes

