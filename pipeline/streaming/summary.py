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
from pipeline.storage.chunk_io import read_block
from pipeline.store import iter_blocks
from segcore.geodesy import CellAreas


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


BlockSizes = Callable[[tuple[slice, ...]], "np.ndarray | CellAreas"]
"""Physical size of every pixel of a block ``key``: an array broadcastable to the block, or
sizes linear per cell (:class:`~segcore.geodesy.CellAreas`; ``np.asarray`` gives the array)."""


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

    def add_plane(self, labels: np.ndarray,
                  sizes: np.ndarray | CellAreas) -> tuple[np.ndarray, np.ndarray | None]:
        """Add a 2-D block ``(h, w)``; returns its class counts per row ``(h, k + 1)``, and
        per column ``(w, k + 1)`` when it counted them (None otherwise).

        One ``bincount`` of ``row * (k + 1) + class`` gives the counts per row (column
        ``k``: nodata and anything above), which the sizes are summed by as well: per row
        for a size per row (geographic grids), per row then over the rows for a size per
        pixel. Sizes linear per cell (:class:`~segcore.geodesy.CellAreas`, projected
        grids) are summed from class counts per pixel row and cell column and per cell
        row and pixel column (:func:`_cell_tables`), without a size per pixel; these
        give the counts per column too. The caller may reuse the tables (the tile
        workers' segment boxes).

        Examples
        --------
        >>> t = ClassTotals(2)
        >>> rows, cols = t.add_plane(np.array([[0, 1], [1, 255]]),
        ...                          np.array([[1.0, 2.0], [3.0, 4.0]]))
        >>> rows, cols
        (array([[1, 1, 0],
               [0, 1, 1]]), None)
        >>> t.pixels.tolist(), t.size.tolist(), t.nodata_pixels
        ([1, 2], [1.0, 5.0], 1)
        """
        k = self.num_classes
        h, w = np.shape(labels)
        if isinstance(sizes, CellAreas):
            tables = _cell_tables(labels, k, sizes) if sizes.shape == (h, w) else None
            if tables is not None:
                by_row, by_col = tables
                rows, cols = by_row.sum(axis=2).T, by_col.sum(axis=1).T
                counts = rows.sum(axis=0)
                self.nodata_pixels += int(counts[k])
                self.pixels += counts[:k]
                self.size += sizes.class_sizes(by_row, by_col)[:k]
                return rows, cols
            sizes = np.asarray(sizes)
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
        return rows, None

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


PLANE_CLASSES = 8
"""Up to this many classes (nodata included) are counted one class plane at a time."""


def _cell_tables(labels: np.ndarray, k: int,
                 cells: CellAreas) -> tuple[np.ndarray, np.ndarray] | None:
    """Class counts of ``labels`` ``(h, w)`` (``k``: nodata and above) per pixel row and
    cell column ``(k + 1, h, m)`` and per cell row and pixel column ``(k + 1, n, w)``;
    None when the tables would outgrow the block (many classes and cells).

    Up to :data:`PLANE_CLASSES` classes, each class's pixels are summed over the cells'
    rows of the block and of its transpose (1.1 ms a 512² block of 6 classes, against
    2.8-3.7 ms for two ``bincount`` of ``(row, cell, class)`` indices, which more
    classes take).
    """
    h, w = labels.shape
    rn, cn = cells.row_nodes, cells.col_nodes
    n, m, width = len(rn) - 1, len(cn) - 1, k + 1
    if (h * m + n * w) * width > 4 * h * w:  # cells of a few pixels: an area per pixel
        return None
    if width <= PLANE_CLASSES:
        across = np.ascontiguousarray(labels.T)  # rows of the transpose: the block's columns
        by_row, by_col = np.empty((width, m, h), np.int64), np.empty((width, n, w), np.int64)
        plane, plane_t = np.empty((h, w), bool), np.empty((w, h), bool)
        for c in range(width):
            (np.equal if c < k else np.greater_equal)(labels, c, out=plane)
            (np.equal if c < k else np.greater_equal)(across, c, out=plane_t)
            _cell_sums(plane.view(np.uint8), rn, out=by_col[c])
            _cell_sums(plane_t.view(np.uint8), cn, out=by_row[c])
        return by_row.transpose(0, 2, 1), by_col
    lab = np.minimum(labels, k)
    idx = index_scratch((h, w))
    np.add(lab, (np.arange(h, dtype=np.intp) * (m * width))[:, None], out=idx, casting="unsafe")
    idx += np.repeat(np.arange(m, dtype=np.intp) * width, np.diff(cn))
    by_row = np.bincount(idx.ravel(), minlength=h * m * width).reshape(h, m, width)
    np.add(lab, np.repeat(np.arange(n, dtype=np.intp) * (w * width), np.diff(rn))[:, None],
           out=idx, casting="unsafe")
    idx += np.arange(w, dtype=np.intp) * width
    by_col = np.bincount(idx.ravel(), minlength=n * w * width).reshape(n, w, width)
    return by_row.transpose(2, 0, 1), by_col.transpose(2, 0, 1)


def _cell_sums(plane: np.ndarray, nodes: np.ndarray, *, out: np.ndarray) -> np.ndarray:
    """Sums of the rows of ``plane`` ``(H, W)`` (0/1 as uint8) within each cell between
    ``nodes`` into ``out`` ``(len(nodes) - 1, W)``: the leading cells of equal height at
    once, in uint8 while a cell has at most 255 rows, the others one by one.

    Examples
    --------
    >>> plane = np.array([[1, 0], [1, 1], [0, 1]], np.uint8)
    >>> _cell_sums(plane, np.array([0, 2, 3]), out=np.empty((2, 2), np.int64))
    array([[2, 1],
           [0, 1]])
    """
    steps = np.diff(nodes)
    step = int(steps[0])
    same = len(steps) if (steps == step).all() else int(np.argmin(steps == step))
    lead = plane[: same * step].reshape(same, step, plane.shape[1])
    out[:same] = np.add.reduce(lead, axis=1, dtype=np.uint8 if step <= 255 else np.int64)
    for cell in range(same, len(steps)):
        out[cell] = plane[nodes[cell]:nodes[cell + 1]].sum(axis=0, dtype=np.int64)
    return out


def _block_totals(key: tuple[slice, ...], semantic: zarr.Array, num_classes: int,
                  unit: SizeUnit, sizes: BlockSizes) -> ClassTotals:
    totals = ClassTotals(num_classes, unit)
    totals.add(read_block(semantic, key), sizes(key))
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
