"""Training targets of the instance head: centre heatmap, offsets, offset weights."""

from __future__ import annotations

import math
from typing import TypeVar

import numpy as np
import torch

from segcore.errors import ConfigError

__all__ = ["instance_centres", "instance_targets"]

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def _as_labels(instance: np.ndarray | torch.Tensor) -> np.ndarray:
    arr = instance.detach().cpu().numpy() if isinstance(instance, torch.Tensor) else np.asarray(instance)
    if arr.ndim < 1 or arr.dtype.kind not in "iub":
        raise ConfigError(
            f"instance: expected an integer array (*spatial), received {arr.dtype} "
            f"of shape {arr.shape}"
        )
    if arr.dtype.kind == "i" and arr.size and arr.min() < 0:
        raise ConfigError(f"instance: expected ids >= 0 (0 = background), received {arr.min()}")
    return arr


def instance_centres(instance: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rounded centres of mass of the instances of a label array.

    Parameters
    ----------
    instance : (*S) ndarray of int
        Instance ids, 0 = background.

    Returns
    -------
    ids : (n,) ndarray of int
        Sorted non-zero ids.
    centres : (n, ndim) ndarray of int64
        Centre of mass of each id rounded half to even (``np.rint``); it
        may lie outside a non-convex instance.
    inverse : (*S) ndarray of intp
        Index into ``ids`` + 1 per pixel, 0 for background.

    Examples
    --------
    >>> ids, centres, _ = instance_centres(np.array([[0, 7, 7, 7], [0, 0, 3, 0]]))
    >>> ids.tolist(), centres.tolist()
    ([3, 7], [[1, 2], [0, 2]])
    """
    ids, inverse = np.unique(instance, return_inverse=True)
    inverse = inverse.reshape(instance.shape)
    if ids.size and ids[0] == 0:
        ids = ids[1:]
    else:
        inverse = inverse + 1
    n = ids.size
    counts = np.bincount(inverse.ravel(), minlength=n + 1)[1:]
    grids = np.indices(instance.shape, sparse=False).reshape(instance.ndim, -1)
    sums = np.stack(
        [np.bincount(inverse.ravel(), weights=g, minlength=n + 1)[1:] for g in grids], axis=1
    ).reshape(n, instance.ndim)
    centres = np.rint(sums / np.maximum(counts, 1)[:, None]).astype(np.int64)
    return ids, centres, inverse


def _gaussian(heat: np.ndarray, centre: np.ndarray, sigma: float, radius: int) -> None:
    """``heat = max(heat, exp(-|x - centre|^2 / (2 sigma^2)))`` within ``radius``."""
    window, factors = [], []
    for axis, c in enumerate(centre.tolist()):
        lo, hi = max(c - radius, 0), min(c + radius + 1, heat.shape[axis])
        x = np.arange(lo, hi, dtype=np.float64) - c
        window.append(slice(lo, hi))
        factors.append(np.exp(-(x * x) / (2.0 * sigma * sigma)))
    g = factors[0]
    for f in factors[1:]:
        g = np.multiply.outer(g, f)
    view = heat[tuple(window)]
    np.maximum(view, g.astype(np.float32), out=view)


def instance_targets(
    instance: ArrayT, *, sigma: float = 8.0
) -> tuple[ArrayT, ArrayT, ArrayT]:
    """Centre heatmap, offsets and offset weights for an instance label array, in N-D.

    Every instance's centre is its centre of mass rounded to the nearest pixel
    (:func:`instance_centres`). The heatmap is the pixel-wise maximum of one
    Gaussian ``exp(-|x - c|^2 / (2 sigma^2))`` per instance, truncated at
    ``3 sigma`` (peak exactly 1.0 at each centre). The offset at an instance
    pixel ``x`` is ``c - x`` (pixel units, one channel per axis in axis
    order), 0 on the background; the weights are 1 at instance pixels and 0
    elsewhere (the offset loss only counts instance pixels). Stack the
    outputs of several label arrays for a batch.

    Parameters
    ----------
    instance : (*S) ndarray or Tensor of int
        Instance ids, 0 = background; any number of spatial axes (2-D, 3-D).
        Ids need not be consecutive.
    sigma : float, default 8.0
        Standard deviation of the Gaussians in pixels (Panoptic-DeepLab: 8).

    Returns
    -------
    center : (1, *S) float32
    offsets : (ndim, *S) float32
    weights : (*S) float32
        NumPy arrays for an array input, CPU tensors for a tensor input.

    Raises
    ------
    ConfigError
        On a non-integer or negative label array or a non-positive ``sigma``.

    Examples
    --------
    >>> heat, off, w = instance_targets(np.array([[1, 1, 1, 0, 2]]), sigma=1.0)
    >>> heat.astype(float).round(2).tolist()
    [[[0.61, 1.0, 0.61, 0.61, 1.0]]]
    >>> off.tolist()
    [[[0.0, 0.0, 0.0, 0.0, 0.0]], [[1.0, 0.0, -1.0, 0.0, 0.0]]]
    >>> w.tolist()
    [[1.0, 1.0, 1.0, 0.0, 1.0]]
    """
    labels = _as_labels(instance)
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not (
        math.isfinite(sigma) and sigma > 0
    ):
        raise ConfigError(f"sigma: expected a finite number > 0, received {sigma!r}")
    _, centres, inverse = instance_centres(labels)
    shape = labels.shape
    heat = np.zeros((1,) + shape, dtype=np.float32)
    radius = math.ceil(3 * sigma)
    for centre in centres:
        _gaussian(heat[0], centre, float(sigma), radius)
    offsets = np.zeros((labels.ndim,) + shape, dtype=np.float32)
    inside = inverse > 0
    where = np.nonzero(inside)
    own = centres[inverse[inside] - 1]
    for axis in range(labels.ndim):
        offsets[axis][where] = own[:, axis] - where[axis]
    weights = inside.astype(np.float32)
    if isinstance(instance, torch.Tensor):
        return torch.from_numpy(heat), torch.from_numpy(offsets), torch.from_numpy(weights)
    return heat, offsets, weights
