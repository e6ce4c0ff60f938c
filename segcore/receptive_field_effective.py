"""Effective receptive field: how much context a model's output really depends on.

The analytic halo (:func:`segcore.receptive_field.halo_for`) makes tiled output
equal whole-scene output exactly, but a deep network's output depends mostly on a
small neighbourhood: the influence of far-away input decays quickly. This module
measures that decay with a context-truncation (impulse) probe and returns the
smallest halo beyond which more context changes the output by less than a
tolerance.

The probe
---------
A core of ``stride`` pixels per axis (every phase modulo the stride) sits at the
centre of a seeded standard-normal input. For halos ``h = 0, s, 2s, ...`` (``s`` the
stride) the model runs on the core grown by ``h`` per side, exactly the window a
tile with halo ``h`` reads in the middle of a scene (the window's border is the
network's own zero padding, as at a tile's edge), and the core's output ``y_h`` is
kept. The dependence on the ring between ``h`` and ``h + s`` is::

    d(h) = max |y_h - y_{h+s}| / max |y_{h+s}|

(over the core's pixels and the output channels). The effective halo is the
first ``h`` with ``d(h) <= tolerance``, and never more than the analytic halo (at
which the output is exact). Only windows up to the answer plus one step are run,
so the probe costs a few small forward passes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from segcore.errors import ConfigError
from segcore.receptive_field import _check_int, _first_tensor

__all__ = ["EffectiveHalo", "effective_halo"]


@dataclass(frozen=True)
class EffectiveHalo:
    """Result of :func:`effective_halo`.

    Parameters
    ----------
    halo : int
        Effective halo in pixels, a multiple of the stride, ``<= max_halo``.
    dependence : tuple of float
        ``d(h)`` for ``h = 0, s, 2s, ...`` up to the answer (the last entry is
        ``<= tolerance`` unless the analytic halo was reached first).
    tolerance : float
        The tolerance the halo was chosen with.
    """

    halo: int
    dependence: tuple[float, ...]
    tolerance: float


def _core_output(module: nn.Module, x: torch.Tensor, outer: int, h: int, core: int) -> torch.Tensor:
    """Output over the central ``core`` pixels of ``x`` cropped to the core + ``h``."""
    ndim = x.ndim - 2
    start = outer - h
    window = x[(slice(None), slice(None), *(slice(start, start + core + 2 * h),) * ndim)]
    out = _first_tensor(module(window))
    if tuple(out.shape[2:]) != tuple(window.shape[2:]):
        raise ConfigError(
            f"module: expected a dense output of spatial shape {tuple(window.shape[2:])}, "
            f"received {tuple(out.shape)}"
        )
    return out[(slice(None), slice(None), *(slice(h, h + core),) * ndim)].float()


def effective_halo(
    module: nn.Module,
    in_channels: int,
    ndim: int,
    *,
    stride: int,
    max_halo: int,
    tolerance: float = 0.01,
    seed: int = 0,
) -> EffectiveHalo:
    """Smallest halo (multiple of ``stride``) beyond which context changes the output
    by at most ``tolerance`` (relative), measured with a context-truncation probe.

    Deterministic: a seeded input, the module in eval mode (its training mode is
    restored afterwards), no gradients.

    Parameters
    ----------
    module : nn.Module
        Dense model ``(N, C, *S) -> (N, K, *S)`` accepting sides that are multiples
        of ``stride``; a dict or tuple output uses its first tensor.
    in_channels : int
        Input channels ``C``.
    ndim : int
        Spatial axes (2 or 3).
    stride : int
        The model's total stride; halos and the probed core are multiples of it.
    max_halo : int
        The analytic halo (exact output); the answer never exceeds it.
    tolerance : float, default 0.01
        Largest relative change ``d(h)`` (module docstring) accepted.
    seed : int, default 0
        Seed of the probe input.

    Returns
    -------
    EffectiveHalo

    Raises
    ------
    ConfigError
        On invalid arguments or a non-dense model.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> torch.manual_seed(0) is not None
    True
    >>> stack = nn.Sequential(*[nn.Conv2d(1, 1, 3, padding=1) for _ in range(8)])
    >>> found = effective_halo(stack, 1, 2, stride=1, max_halo=8, tolerance=0.01)
    >>> 0 < found.halo <= 8, found.dependence[-1] <= 0.01 or found.halo == 8
    (True, True)
    """
    _check_int("in_channels", in_channels, 1)
    _check_int("ndim", ndim, 1)
    _check_int("stride", stride, 1)
    _check_int("max_halo", max_halo, 0)
    if max_halo % stride:
        raise ConfigError(f"max_halo: expected a multiple of stride={stride}, received {max_halo}")
    if not 0 < tolerance < 1:
        raise ConfigError(f"tolerance: expected a number in (0, 1), received {tolerance!r}")
    param = next(iter(module.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    generator = torch.Generator().manual_seed(seed)
    side = stride + 2 * max_halo
    x = torch.randn((1, in_channels) + (side,) * ndim, generator=generator)
    x = x.to(device=device, dtype=dtype)
    was_training = module.training
    dependence: list[float] = []
    try:
        module.eval()
        with torch.inference_mode():
            h = 0
            current = _core_output(module, x, max_halo, 0, stride)
            while h < max_halo:
                wider = _core_output(module, x, max_halo, h + stride, stride)
                scale = float(wider.abs().max())
                change = float((current - wider).abs().max())
                dependence.append(change / scale if scale > 0 else 0.0)
                if dependence[-1] <= tolerance:
                    break
                h, current = h + stride, wider
    finally:
        module.train(was_training)
    return EffectiveHalo(halo=h, dependence=tuple(dependence), tolerance=tolerance)
