"""The statistics of a model's labels, gathered as its tiles finish.

For a model without instances, the passes after inference need only two small
tables of the semantic labels: the class totals (:class:`ClassTotals`, pixels and
ground area or volume per class) and the stuff statistics that make the segment
table (:class:`~segcore.panoptic.fusion.FusionStats`). Each tile core is exactly one
chunk of the label array, so the tile worker that writes a core can count it at
once, while the labels are still in memory: the driver then merges one small table
per tile instead of reading the whole array back twice (about 1.3 s of 10 s at
8192² with a near-free model, measured in ``bench/machinery.py``). A model with
instances gets its class totals counted the same way (``stuff=False``); its stuff
statistics need the scene's instance ids, and the centre pass gathers them while it
writes the ids (:func:`pipeline.streaming.centres.assign_instances`).

:func:`merge_tiles` merges per-tile results in the chunks' C order, the order the
block passes merge in, so the totals are bit-identical to :func:`summarise`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.streaming.summary import BlockSizes, ClassTotals, SizeUnit, index_scratch
from segcore.panoptic.fusion import FusionStats


@dataclass(frozen=True)
class TileStatsSpec:
    """What a tile worker needs to count its core (sent with every batch; pickles).

    ``sizes`` is the format's per-block pixel size (ground area or voxel volume) for a
    block key on the stored grid; the model must run on that grid. ``stuff=False``
    counts the class totals alone: a model with instances, whose fusion statistics
    need the scene's instance ids (:func:`pipeline.streaming.centres.assign_instances`
    gathers them).
    """

    num_classes: int
    unit: SizeUnit
    sizes: BlockSizes
    nodata: int
    stuff: bool = True


def count_core(spec: TileStatsSpec, labels: np.ndarray, valid: np.ndarray,
               key: tuple[slice, ...]) -> tuple[ClassTotals, FusionStats | None]:
    """Totals and stuff statistics of one core ``labels`` ``(*core)`` at block ``key``
    (the totals alone, and None, when ``spec.stuff`` is False).

    Examples
    --------
    >>> spec = TileStatsSpec(2, SizeUnit.AREA_M2, lambda key: np.float64(4.0), 255)
    >>> labels = np.array([[0, 1], [1, 255]], np.uint8)
    >>> totals, stuff = count_core(spec, labels, labels != 255, (slice(2, 4), slice(0, 2)))
    >>> totals.pixels.tolist(), totals.size.tolist(), stuff.counts.tolist()
    ([1, 2], [4.0, 8.0], [1, 2])
    """
    totals = ClassTotals(spec.num_classes, spec.unit)
    if not spec.stuff:
        totals.add(labels, spec.sizes(key))
        return totals, None
    origin = tuple(s.start for s in key)
    if labels.ndim == 2 and labels.dtype.kind == "u" and valid.all():
        rows, cols = totals.add_plane(labels, spec.sizes(key))
        stuff = _plane_stuff(spec, labels, rows, cols, origin)
        if stuff is not None:
            return totals, stuff
    else:
        totals.add(labels, spec.sizes(key))
    stuff = FusionStats(ndim=labels.ndim, nodata=spec.nodata)
    stuff.add(labels, np.zeros(labels.shape, np.uint8), valid, offset=origin)
    return totals, stuff


def _plane_stuff(spec: TileStatsSpec, labels: np.ndarray, rows: np.ndarray,
                 columns: np.ndarray | None, origin: tuple[int, ...]) -> FusionStats | None:
    """The stuff statistics of an all-valid 2-D core from its class counts per row ``rows``
    ``(h, k + 1)`` and per column ``columns`` ``(w, k + 1)`` (:meth:`ClassTotals.add_plane`;
    one more ``bincount`` when it gave no columns); None when a label other than nodata
    lies at or above ``k`` (the table lumps those together; :meth:`FusionStats.add`
    counts them one by one)."""
    k = spec.num_classes
    above = int(rows[:, k].sum())
    if above and above != np.count_nonzero(labels == spec.nodata):
        return None
    h, w = labels.shape
    if columns is None:
        idx = index_scratch((h, w))  # the rows' indices are used up: add_plane returned
        np.add(np.minimum(labels, k), np.arange(w, dtype=np.intp) * (k + 1), out=idx,
               casting="unsafe")
        columns = np.bincount(idx.ravel(), minlength=w * (k + 1)).reshape(w, k + 1)
    cols = columns[:, :k] > 0
    in_rows = rows[:, :k] > 0
    counts = rows[:, :k].sum(axis=0)
    seen = np.flatnonzero(counts)
    lo = np.stack([in_rows.argmax(axis=0), cols.argmax(axis=0)], axis=1)[seen]
    hi = np.stack([h - 1 - in_rows[::-1].argmax(axis=0), w - 1 - cols[::-1].argmax(axis=0)],
                  axis=1)[seen]
    stuff = FusionStats(ndim=2, nodata=spec.nodata)
    stuff.add_boxes(seen.astype(np.uint64), counts[seen], lo + np.asarray(origin),
                    hi + np.asarray(origin))
    return stuff


def merge_tiles(parts: Sequence[tuple[tuple[int, ...], ClassTotals, FusionStats | None]],
                num_classes: int, unit: SizeUnit, ndim: int,
                nodata: int) -> tuple[ClassTotals, FusionStats | None]:
    """Merge ``(core start, totals, stuff)`` per tile in the chunks' C order (stuff None
    when a tile counted none)."""
    totals = ClassTotals(num_classes, unit)
    ordered = sorted(parts, key=lambda p: p[0])
    for _, part, _ in ordered:
        totals.merge(part)
    if any(p[2] is None for p in ordered):
        return totals, None
    stuff = FusionStats(ndim=ndim, nodata=nodata).merge_all([p[2] for p in ordered])
    return totals, stuff
