"""Per-class pixel counts and physical sizes, streamed chunk by chunk.

A scene's format says what one pixel (voxel) is worth: ground area in m² for
georeferenced scenes (projected CRS: the planar map area of the affine transform
times the square of the CRS's linear unit in metres; geographic CRS: the exact area
on the CRS ellipsoid, see ``segcore.geodesy``), volume in mL for medical volumes
(voxel mm³ / 1000). :func:`summarise` streams the semantic array block by block and
weights each pixel by the format's ``sizes`` of that block.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

import numpy as np
import zarr

from pipeline.blockmap import BlockMap, serial
from pipeline.store import iter_blocks


_SCRATCH = threading.local()


def index_scratch(shape: tuple[int, ...]) -> np.ndarray:
    """A reusable ``intp`` array of ``shape`` for this thread (bincount indices): a fresh
    2 MB array per 512² tile costs its page faults every time. Valid until the
    thread's next call."""
    size = math.prod(shape)
    buffer = getattr(_SCRATCH, "buffer", None)
    if buffer is None or buffer.size < size:
        buffer = _SCRATCH.buffer = np.empty(size, np.intp)
    return buffer[:size].reshape(shape)


class SizeUnit(str, Enum):
    """The physical size of a class in ``report.json`` ``summary.classes``."""

    AREA_M2 = "area_m2"
    VOLUME_ML = "volume_ml"


BlockSizes = Callable[[tuple[slice, ...]], np.ndarray]
"""Physical size of every pixel of a block ``key``: an array broadcastable to the block."""


@dataclass
class ClassTotals:
    """Running totals over chunks: pixels and physical size per class id, nodata pixels.

    Examples
    --------
    >>> t = ClassTotals(2)
    >>> t.add(np.array([[0, 1], [1, 255]]), np.float64(2.0))
    >>> t.to_dict(["a", "b"]), t.nodata_pixels
    ({'a': {'pixels': 1, 'area_m2': 2.0}, 'b': {'pixels': 2, 'area_m2': 4.0}}, 1)
    """

    num_classes: int
    unit: SizeUnit = SizeUnit.AREA_M2
    pixels: np.ndarray = field(init=False)
    size: np.ndarray = field(init=False)
    nodata_pixels: int = 0

    def __post_init__(self) -> None:
        self.pixels = np.zeros(self.num_classes, dtype=np.int64)
        self.size = np.zeros(self.num_classes, dtype=np.float64)

    def add(self, labels: np.ndarray, sizes: np.ndarray) -> None:
        """Add a block ``(*block)`` of class ids with its per-pixel sizes (broadcastable)."""
        if np.ndim(labels) == 2:
            self.add_plane(labels, sizes)
            return
        k = self.num_classes
        lab = np.minimum(labels, k).astype(np.intp)  # k: nodata and anything above
        counts = np.bincount(lab.ravel(), minlength=k + 1)
        self.nodata_pixels += int(counts[k])
        self.pixels += counts[:k]
        sizes = np.asarray(sizes, dtype=np.float64)
        if sizes.shape == lab.shape and sizes.size > 1:  # a size per pixel: no scan for one size
            self.size += np.bincount(lab.ravel(), weights=sizes.ravel(), minlength=k + 1)[:k]
        elif sizes.size == 1 or sizes.min() == sizes.max():  # one size (voxels, no CRS)
            self.size += counts[:k] * float(sizes.flat[0])
        else:
            weights = np.broadcast_to(sizes, labels.shape)
            self.size += np.bincount(lab.ravel(), weights=weights.ravel(), minlength=k + 1)[:k]

    def add_plane(self, labels: np.ndarray, sizes: np.ndarray) -> np.ndarray:
        """Add a 2-D block ``(h, w)``; returns its per-row class counts ``(h, k + 1)``.

        One ``bincount`` of ``row * (k + 1) + class`` gives the counts per row (column
        ``k``: nodata and anything above), which the sizes are summed by as well: per row
        for a size per row (geographic grids), per row then over the rows for a size per
        pixel. The caller may reuse the table (the tile workers' segment boxes).

        Examples
        --------
        >>> t = ClassTotals(2)
        >>> t.add_plane(np.array([[0, 1], [1, 255]]), np.array([[1.0, 2.0], [3.0, 4.0]]))
        array([[1, 1, 0],
               [0, 1, 1]])
        >>> t.pixels.tolist(), t.size.tolist(), t.nodata_pixels
        ([1, 2], [1.0, 5.0], 1)
        """
        k = self.num_classes
        h, w = np.shape(labels)
        idx = index_scratch((h, w))
        np.add(np.minimum(labels, k), (np.arange(h, dtype=np.intp) * (k + 1))[:, None], out=idx,
               casting="unsafe")
        flat = idx.ravel()
        rows = np.bincount(flat, minlength=h * (k + 1)).reshape(h, k + 1)
        counts = rows.sum(axis=0)
        self.nodata_pixels += int(counts[k])
        self.pixels += counts[:k]
        sizes = np.asarray(sizes, dtype=np.float64)
        if sizes.size == 1 or (sizes.shape != (h, w) and sizes.min() == sizes.max()):
            self.size += counts[:k] * float(sizes.flat[0])  # one size (no CRS)
        elif sizes.shape == (h, 1):  # one size per row
            self.size += sizes[:, 0] @ rows[:, :k]
        else:  # a size per pixel: summed per row, then over the rows
            weights = (sizes if sizes.shape == (h, w) else np.broadcast_to(sizes, (h, w))).ravel()
            per_row = np.bincount(flat, weights=weights, minlength=h * (k + 1))
            self.size += per_row.reshape(h, k + 1)[:, :k].sum(axis=0)
        return rows

    def merge(self, other: ClassTotals) -> ClassTotals:
        """Add ``other``'s counts into this one (in place); returns self."""
        self.pixels += other.pixels
        self.size += other.size
        self.nodata_pixels += other.nodata_pixels
        return self

    def to_dict(self, names: list[str]) -> dict[str, dict[str, int | float]]:
        """Per class name: ``{"pixels": n, <unit>: total}``."""
        return {
            name: {"pixels": int(self.pixels[i]), self.unit.value: float(self.size[i])}
            for i, name in enumerate(names)
        }


def _block_totals(key: tuple[slice, ...], semantic: zarr.Array, num_classes: int,
                  unit: SizeUnit, sizes: BlockSizes) -> ClassTotals:
    totals = ClassTotals(num_classes, unit)
    totals.add(semantic[key], sizes(key))
    return totals


def summarise(semantic: zarr.Array, num_classes: int, *, unit: SizeUnit,
              sizes: BlockSizes, blocks: BlockMap = serial) -> ClassTotals:
    """Class totals of ``semantic`` (nodata left out), one block pass over its chunks.

    ``sizes`` travels to the block tasks, so it must pickle (a closure over plain
    values does: Ray sends functions by value).
    """
    totals = ClassTotals(num_classes, unit)
    for part in blocks.map(_block_totals, list(iter_blocks(semantic.shape, semantic.chunks)),
                           semantic, num_classes, unit, sizes, label="totals"):
        totals.merge(part)
    return totals
