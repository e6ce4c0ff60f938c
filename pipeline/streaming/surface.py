"""Per-class HD95 of a scene, streamed over blocks of its label arrays.

Each block is read with a 1-voxel margin (padded with background where the
margin leaves the array), so the surface voxels collected block by block are
exactly those of the whole array (``segcore.metrics.surface``). Memory: one
block plus margin of each input array, and the surface points (``O(area)``,
24 bytes a point in 3-D).

Excluded voxels: where ``valid`` is False or ``truth == ignore``, the voxel is
set to background in *both* the prediction mask and the truth mask of every
class before surfaces are taken (MONAI run on masked label arrays gives the
same numbers). An object cut by an excluded region thus gets a surface along
that cut in both masks, and the two cuts coincide, so they add zero-distance
pairs rather than penalties.

Reading cost: with zarr, a block read with its margin decodes the
neighbouring chunks too (up to ``3**D`` chunks per block when blocks equal
chunks); pass ``chunks`` as a multiple of the storage chunks to amortise that.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from pipeline.blockmap import BlockMap, serial
from pipeline.store import iter_blocks
from segcore.errors import ConfigError
from segcore.metrics.surface import block_surface_voxels, hausdorff_percentile

__all__ = ["collect_surfaces", "surface_distances"]


def _read_with_margin(array: Any, block: tuple[slice, ...], shape: tuple[int, ...]) -> np.ndarray:
    """``array[block]`` grown by one voxel per side; outside the array: zeros (False)."""
    read = tuple(slice(max(b.start - 1, 0), min(b.stop + 1, n)) for b, n in zip(block, shape))
    pad = [(1 - (b.start - r.start), 1 - (r.stop - b.stop)) for b, r in zip(block, read)]
    return np.pad(np.asarray(array[read]), pad, constant_values=0)


class _Ones:
    """An endless array of True: ``_Ones()[slices]`` has the slices' shape."""

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        return np.ones(tuple(k.stop - k.start for k in key), bool)


def _check_inputs(pred: Any, truth: Any, valid: Any, spacing: Sequence[float]) -> None:
    for name, arr in (("pred", pred), ("valid", valid)):
        if arr is not None and tuple(arr.shape) != tuple(truth.shape):
            raise ConfigError(
                f"{name}: expected the shape of truth {tuple(truth.shape)}, "
                f"received {tuple(arr.shape)}"
            )
    if len(spacing) != len(truth.shape):
        raise ConfigError(
            f"spacing: expected {len(truth.shape)} values (one per axis of shape "
            f"{tuple(truth.shape)}), received {tuple(spacing)}"
        )


def _block_surfaces(block: tuple[slice, ...], pred: Any, truth: Any, valid: Any | None,
                    classes: Sequence[int], ignore: int | None,
                    shape: tuple[int, ...]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    t = _read_with_margin(truth, block, shape)
    p = _read_with_margin(pred, block, shape)
    # the margin outside the array is background for every class, class 0 included
    keep = _read_with_margin(_Ones(), block, shape).astype(bool, copy=False)
    if valid is not None:
        keep &= _read_with_margin(valid, block, shape).astype(bool, copy=False)
    if ignore is not None:
        keep &= t != ignore
    origin = tuple(b.start for b in block)
    return {c: (block_surface_voxels((p == c) & keep, origin=origin),
                block_surface_voxels((t == c) & keep, origin=origin)) for c in classes}


def collect_surfaces(
    pred: Any,
    truth: Any,
    valid: Any | None,
    *,
    classes: Sequence[int],
    ignore: int | None,
    chunks: tuple[int, ...] | None = None,
    blocks: BlockMap = serial,
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Surface voxels ``(pred_points, true_points)``, each ``(N, D) int64``, per class id.

    Arguments as in :func:`surface_distances`; one block pass (the points come back).
    """
    shape = tuple(truth.shape)
    _check_inputs(pred, truth, valid, [1.0] * len(shape))
    block_shape = tuple(chunks or getattr(truth, "chunks", shape))
    parts = blocks.map(_block_surfaces, list(iter_blocks(shape, block_shape)), pred, truth,
                       valid, list(classes), ignore, shape, label="surface")
    empty = np.zeros((0, len(shape)), np.int64)
    return {c: (np.concatenate([empty, *(part[c][0] for part in parts)]),
                np.concatenate([empty, *(part[c][1] for part in parts)])) for c in classes}


def surface_distances(
    pred: Any,
    truth: Any,
    valid: Any | None,
    *,
    classes: Sequence[tuple[int, str]],
    spacing: tuple[float, ...],
    ignore: int | None,
    chunks: tuple[int, ...] | None = None,
    blocks: BlockMap = serial,
) -> dict[str, dict[str, float | None]]:
    """HD95 in mm per class between predicted and true label arrays.

    Parameters
    ----------
    pred, truth : (*shape) zarr.Array or ndarray of int
        Class ids, 2-D or 3-D; anything sliceable with a tuple of slices into
        numpy works. ``pred`` may hold a nodata value: it matches no class.
    valid : (*shape) zarr.Array or ndarray of bool, or None
        Voxels to score; None scores all.
    classes : sequence of (int, str)
        ``(class id, name)`` pairs to score (e.g. leave background out).
    spacing : tuple of float
        Voxel size in mm per axis, in the arrays' axis order.
    ignore : int or None
        Truth value excluded like ``valid == False``.
    chunks : tuple of int, optional
        Block shape of the pass (default: ``truth.chunks``, else one block).
    blocks : BlockMap, default serial
        Where the blocks are read (:mod:`pipeline.blockmap`).

    Returns
    -------
    dict of str to {"hd95_mm": float or None}
        None where the value is not finite: the class is empty in the
        prediction or the truth (or both) after exclusion.
    """
    _check_inputs(pred, truth, valid, spacing)
    ids = [int(c) for c, _ in classes]
    surfaces = collect_surfaces(pred, truth, valid, classes=ids, ignore=ignore, chunks=chunks,
                                blocks=blocks)
    out: dict[str, dict[str, float | None]] = {}
    for c, name in classes:
        hd = hausdorff_percentile(*surfaces[int(c)], spacing, percentile=95.0)
        out[str(name)] = {"hd95_mm": hd if math.isfinite(hd) else None}
    return out
