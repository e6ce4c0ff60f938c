"""Far-end padding of model inputs to a multiple of the model stride.

Only the far end (high indices) of each spatial axis is padded, so pixel
coordinates are unchanged and cropping back is ``x[..., :h, :w]``. Together
with halo windows clipped at the scene edge and origins that are multiples of
the stride (see :mod:`segcore.geometry.grid`), a tile gets the same padding as
a whole-scene pass.
"""

from __future__ import annotations

import torch

from segcore.errors import ConfigError

__all__ = ["pad_to_multiple"]


def _far_end_index(length: int, pad: int, device: torch.device) -> torch.Tensor:
    """Gather index ``length + pad`` long: reflect if it fits, else replicate."""
    keep = torch.arange(length, device=device)
    if pad < length:  # reflect (edge not repeated): x[n-2], x[n-3], ...
        extra = length - 2 - torch.arange(pad, device=device)
    else:  # axis too short to reflect: repeat the last value
        extra = torch.full((pad,), length - 1, device=device)
    return torch.cat([keep, extra])


def pad_to_multiple(
    x: torch.Tensor, multiple: int, *, spatial_dims: int
) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Pad the last ``spatial_dims`` axes at their far end to a multiple.

    Each padded axis uses ``"reflect"`` mode (``x[n-2], x[n-3], ...``, the
    edge value not repeated) when it is long enough (``pad < n``), else
    ``"replicate"`` (the last value repeated). Works for any dtype and keeps
    autograd.

    Parameters
    ----------
    x : (..., *spatial) Tensor
        Input, e.g. ``(N, C, H, W)``.
    multiple : int
        Target multiple, ``>= 1`` (the model stride).
    spatial_dims : int
        How many trailing axes are spatial, ``1 <= spatial_dims <= x.ndim``.

    Returns
    -------
    padded : (..., *padded_spatial) Tensor
        ``x`` itself when nothing needs padding.
    original : tuple of int
        The spatial shape before padding, to crop the output back.

    Raises
    ------
    ConfigError
        On a bad ``multiple`` or ``spatial_dims``, or an empty spatial axis.

    Examples
    --------
    >>> x = torch.arange(5.0).reshape(1, 5)
    >>> y, original = pad_to_multiple(x, 4, spatial_dims=1)
    >>> y.tolist(), original
    ([[0.0, 1.0, 2.0, 3.0, 4.0, 3.0, 2.0, 1.0]], (5,))
    >>> pad_to_multiple(torch.ones(1, 1, 1, 3), 4, spatial_dims=2)[0].shape
    torch.Size([1, 1, 4, 4])
    """
    if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
        raise ConfigError(f"multiple: expected an integer >= 1, received {multiple!r}")
    if (
        isinstance(spatial_dims, bool)
        or not isinstance(spatial_dims, int)
        or not 1 <= spatial_dims <= x.ndim
    ):
        raise ConfigError(
            f"spatial_dims: expected an integer in [1, {x.ndim}] for an input of "
            f"shape {tuple(x.shape)}, received {spatial_dims!r}"
        )
    original = tuple(int(n) for n in x.shape[x.ndim - spatial_dims :])
    if any(n == 0 for n in original):
        raise ConfigError(
            f"x: expected non-empty spatial axes, received spatial shape {original}"
        )
    for offset, length in enumerate(original):
        pad = -length % multiple
        if pad:
            dim = x.ndim - spatial_dims + offset
            x = x.index_select(dim, _far_end_index(length, pad, x.device))
    return x, original
