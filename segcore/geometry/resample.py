"""Resampling between voxel grids that cover the same physical extent.

Grid convention (PyTorch's ``align_corners=False``)
---------------------------------------------------
An axis of ``n_in`` voxels resampled to ``n_out`` voxels keeps the outer
*faces* of the grid where they are: voxel ``j`` of the output has its centre
at the continuous source index

    x_in(j) = (j + 0.5) * n_in / n_out - 0.5,

so the output voxel size is ``spacing_in * n_in / n_out`` (close to, but not
exactly, the requested spacing once ``n_out`` is rounded). This is what
``torch.nn.functional.interpolate(..., mode="trilinear" / "bilinear" /
"linear", align_corners=False)`` and ``mode="nearest-exact"`` use, and the
tests check both.

* **linear**: separable linear interpolation between the two source voxels
  around ``x_in``, with ``x_in`` clamped to ``[0, n_in - 1]`` (the edge voxel
  is repeated, as torch does).
* **nearest**: source voxel ``floor(max(x_in, 0) + 0.5)`` (capped at
  ``n_in - 1``), with the floating-point steps of torch's ``nearest-exact``
  kernel for float64 tensors (``x_in`` in float64, the sum rounded to float32
  before ``floor``), so indices equal torch's exactly. For float32 and uint8
  tensors torch computes ``x_in`` in float32 instead; the two differ only
  where ``x_in + 0.5`` is within float32 rounding of an integer, by one
  voxel at such ties (376 of 18,641 size pairs up to 1,200 voxels have one,
  e.g. 2 -> 61 voxels); cast to float64 to compare with torch.

Block-wise use: every output voxel depends on at most two source voxels per
axis, so a block of the output needs only the source bounding box of its
coordinates (:func:`source_window`), and block results equal the whole-array
result exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from segcore.errors import ConfigError

__all__ = [
    "linear_block",
    "nearest_block",
    "nearest_indices",
    "resampled_affine",
    "resampled_shape",
    "source_coordinates",
    "source_window",
]


def _check_size(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{name}: expected an integer >= 1, received {value!r}")
    return int(value)


def resampled_shape(
    shape: Sequence[int], spacing_in: Sequence[float], spacing_out: Sequence[float]
) -> tuple[int, ...]:
    """Shape of a grid resampled from ``spacing_in`` to ``spacing_out``.

    ``n_out = max(1, round(n_in * s_in / s_out))`` per axis, with Python's
    ``round`` (halves go to the even integer, as in nnU-Net).

    Parameters
    ----------
    shape : sequence of D int
    spacing_in, spacing_out : sequence of D float
        Voxel sizes (e.g. mm), same axis order as ``shape``.

    Returns
    -------
    tuple of D int

    Examples
    --------
    >>> resampled_shape((400, 512, 512), (1.0, 0.7, 0.7), (1.5, 1.5, 1.5))
    (267, 239, 239)
    >>> resampled_shape((3,), (1.0,), (10.0,))
    (1,)
    """
    if not len(shape) == len(spacing_in) == len(spacing_out):
        raise ConfigError(
            f"spacing: expected {len(shape)} values per spacing for shape {tuple(shape)}, "
            f"received {tuple(spacing_in)} and {tuple(spacing_out)}"
        )
    for name, sp in (("spacing_in", spacing_in), ("spacing_out", spacing_out)):
        if not all(math.isfinite(float(s)) and float(s) > 0 for s in sp):
            raise ConfigError(f"{name}: expected positive finite values, received {tuple(sp)}")
    return tuple(
        max(1, round(_check_size(n, "shape") * float(a) / float(b)))
        for n, a, b in zip(shape, spacing_in, spacing_out)
    )


def source_coordinates(n_out: int, n_in: int, *, clamp: bool = False) -> NDArray[np.float64]:
    """Continuous source index of every output voxel centre along one axis.

    ``x_in(j) = (j + 0.5) * n_in / n_out - 0.5`` (module notes).

    Parameters
    ----------
    n_out, n_in : int
        Voxel counts of the output and source axes.
    clamp : bool, default False
        Clip to ``[0, n_in - 1]``, as linear interpolation uses them.

    Returns
    -------
    (n_out,) ndarray of float64

    Examples
    --------
    >>> source_coordinates(2, 4)
    array([0.5, 2.5])
    >>> source_coordinates(4, 2, clamp=True)
    array([0.  , 0.25, 0.75, 1.  ])
    """
    n_out, n_in = _check_size(n_out, "n_out"), _check_size(n_in, "n_in")
    x = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    return np.clip(x, 0.0, n_in - 1.0) if clamp else x


def nearest_indices(n_out: int, n_in: int) -> NDArray[np.int64]:
    """Source voxel of every output voxel along one axis (torch ``nearest-exact``).

    Parameters
    ----------
    n_out, n_in : int

    Returns
    -------
    (n_out,) ndarray of int64
        Values in ``[0, n_in)``.

    Examples
    --------
    >>> nearest_indices(3, 5).tolist()
    [0, 2, 4]
    >>> nearest_indices(5, 2).tolist()
    [0, 0, 1, 1, 1]
    """
    n_out, n_in = _check_size(n_out, "n_out"), _check_size(n_in, "n_in")
    scale = n_in / n_out  # the operations of torch's float64 kernel, in order:
    x = np.maximum(scale * (np.arange(n_out, dtype=np.float64) + 0.5) - 0.5, 0.0)
    rounded = np.floor((x + 0.5).astype(np.float32))  # C's floorf(double) rounds to float
    return np.minimum(rounded.astype(np.int64), n_in - 1)


def source_window(coords: ArrayLike, n_in: int, *, linear: bool) -> tuple[int, int]:
    """``(start, stop)`` of the source voxels that coordinates or indices need.

    Parameters
    ----------
    coords : (m,) ndarray
        Clamped source coordinates (``linear=True``) or source indices.
    n_in : int
        Length of the source axis.
    linear : bool
        Whether the upper neighbour of each coordinate is needed too.

    Examples
    --------
    >>> source_window(np.array([1.25, 3.75]), 10, linear=True)
    (1, 5)
    >>> source_window(np.array([9.0]), 10, linear=True)
    (9, 10)
    >>> source_window(np.array([2, 4]), 10, linear=False)
    (2, 5)
    """
    c = np.asarray(coords)
    start, last = int(np.floor(c.min())), int(np.floor(c.max()))
    stop = min(last + 2, n_in) if linear else last + 1
    return start, stop


def _check_block(src: np.ndarray, origin: Sequence[int], axes: Sequence[np.ndarray]) -> int:
    lead = src.ndim - len(axes)
    if lead < 0 or len(origin) != len(axes):
        raise ConfigError(
            f"src_origin: expected one origin and one coordinate array per spatial axis of "
            f"a block of {src.ndim} axes, received {len(origin)} origins and {len(axes)} arrays"
        )
    return lead


def linear_block(
    src: ArrayLike, src_origin: Sequence[int], axis_coords: Sequence[ArrayLike]
) -> NDArray[np.float64]:
    """Separable linear interpolation of a block of a larger array.

    Parameters
    ----------
    src : (*lead, m_0, ..., m_{D-1}) ndarray
        Source voxels ``[o_k, o_k + m_k)`` of each spatial axis ``k`` of the
        whole array; leading axes (channels) pass through.
    src_origin : sequence of D int
        ``o_k``: the whole-array index of the block's first voxel per axis.
    axis_coords : sequence of D (n_k,) ndarray of float
        Whole-array source coordinates, already clamped to the array
        (``source_coordinates(..., clamp=True)``), each within
        ``[o_k, o_k + m_k - 1]`` (see :func:`source_window`).

    Returns
    -------
    (*lead, n_0, ..., n_{D-1}) ndarray of float64

    Examples
    --------
    >>> whole = np.arange(6.0)
    >>> linear_block(whole[2:5], (2,), [np.array([2.25, 3.5, 4.0])])
    array([2.25, 3.5 , 4.  ])
    """
    out = np.asarray(src, dtype=np.float64)
    axes = [np.asarray(c, dtype=np.float64) for c in axis_coords]
    lead = _check_block(out, src_origin, axes)
    for k, (o, c) in enumerate(zip(src_origin, axes)):
        axis, m = lead + k, out.shape[lead + k]
        if c.size and (c.min() < o or c.max() > o + m - 1):
            raise ConfigError(
                f"axis_coords[{k}]: expected coordinates in [{o}, {o + m - 1}] (the block), "
                f"received [{c.min()}, {c.max()}]; clamp them to the array and read "
                f"source_window(coords, n_in, linear=True)"
            )
        floor = np.floor(c)
        i0 = floor.astype(np.int64) - int(o)
        i1 = np.minimum(i0 + 1, m - 1)
        w = (c - floor).reshape((-1,) + (1,) * (out.ndim - axis - 1))
        out = np.take(out, i0, axis=axis) * (1.0 - w) + np.take(out, i1, axis=axis) * w
    return out


def nearest_block(
    src: ArrayLike, src_origin: Sequence[int], axis_indices: Sequence[ArrayLike]
) -> np.ndarray:
    """Nearest-neighbour gather from a block of a larger array (dtype kept).

    Parameters
    ----------
    src : (*lead, m_0, ..., m_{D-1}) ndarray
    src_origin : sequence of D int
    axis_indices : sequence of D (n_k,) ndarray of int
        Whole-array source indices (:func:`nearest_indices`), inside the block.

    Returns
    -------
    (*lead, n_0, ..., n_{D-1}) ndarray, dtype of ``src``

    Examples
    --------
    >>> labels = np.array([[1, 2], [3, 4]], np.uint8)
    >>> nearest_block(labels, (0, 0), [nearest_indices(3, 2), nearest_indices(4, 2)])
    array([[1, 1, 2, 2],
           [3, 3, 4, 4],
           [3, 3, 4, 4]], dtype=uint8)
    """
    out = np.asarray(src)
    axes = [np.asarray(i, dtype=np.int64) for i in axis_indices]
    lead = _check_block(out, src_origin, axes)
    for k, (o, idx) in enumerate(zip(src_origin, axes)):
        m = out.shape[lead + k]
        if idx.size and (idx.min() < o or idx.max() >= o + m):
            raise ConfigError(
                f"axis_indices[{k}]: expected indices in [{o}, {o + m}) (the block), "
                f"received [{idx.min()}, {idx.max()}]"
            )
        out = np.take(out, idx - int(o), axis=lead + k)
    return out


def resampled_affine(
    affine: ArrayLike, shape_in: Sequence[int], shape_out: Sequence[int]
) -> NDArray[np.float64]:
    """Voxel-to-world affine of the resampled grid (voxel centres as in the module notes).

    ``A_out = A_in @ [[diag(r), (r - 1) / 2], [0, 1]]`` with
    ``r = shape_in / shape_out``: output voxel ``j`` maps where source index
    ``(j + 0.5) * r - 0.5`` maps.

    Parameters
    ----------
    affine : (D + 1, D + 1) ndarray of float
        Voxel index (in the axis order of ``shape_in``) to world.
    shape_in, shape_out : sequence of D int

    Returns
    -------
    (D + 1, D + 1) ndarray of float64

    Examples
    --------
    >>> a = np.diag([2.0, 1.0, 1.0, 1.0])
    >>> resampled_affine(a, (10, 4, 4), (5, 8, 4))
    array([[ 4.  ,  0.  ,  0.  ,  1.  ],
           [ 0.  ,  0.5 ,  0.  , -0.25],
           [ 0.  ,  0.  ,  1.  ,  0.  ],
           [ 0.  ,  0.  ,  0.  ,  1.  ]])
    """
    a = np.asarray(affine, dtype=np.float64)
    d = len(shape_in)
    if a.shape != (d + 1, d + 1) or len(shape_out) != d:
        raise ConfigError(
            f"affine: expected a ({d + 1}, {d + 1}) matrix for shapes {tuple(shape_in)} -> "
            f"{tuple(shape_out)}, received shape {a.shape}"
        )
    r = np.array([_check_size(i, "shape_in") / _check_size(o, "shape_out")
                  for i, o in zip(shape_in, shape_out)])
    step = np.eye(d + 1)
    step[:d, :d] = np.diag(r)
    step[:d, d] = (r - 1.0) / 2.0
    return a @ step
