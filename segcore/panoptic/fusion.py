"""Panoptic fusion of a semantic and an instance map, chunk by chunk.

The scene is never held whole: fusion runs in two passes over its chunks.

1. **Statistics** (:class:`FusionStats`): every chunk adds, for each
   ``(instance id, semantic class)`` pair of its valid pixels, the pixel
   count and the global bounding box (min and max per axis). Instance id 0
   ("no instance") is a pair key like any other, so stuff pixels are counted
   by the same table. Stats of chunks merge with :meth:`FusionStats.merge`
   (sums and min/max: the order of chunks and merges does not matter).
2. **Decision** (:func:`decide`) turns the merged table into a
   :class:`PanopticPlan`: lookup tables plus the final segment table.
3. **Application** (:func:`apply_plan`) maps each chunk to panoptic ids with
   the plan; :func:`segments_table` gives the ``segments.json`` entries.

Rules
-----
A pixel is *nodata* where ``valid`` is False or its semantic value equals
the nodata value (``FusionStats.nodata``, default 255). Then, in order:

* **Nodata stays void** (segment id 0), whatever its instance id. Nodata
  pixels count nowhere: not in votes, areas or boxes.
* **Majority vote**: an instance (id != 0) takes the semantic class that
  most of its valid pixels carry; ties go to the smallest class id.
* **Kept instance**: if that class is a *thing* class, every valid pixel of
  the instance (whatever its own semantic class) becomes the instance's
  segment, with that class as its category.
* **Dropped instance**: if the majority class is a *stuff* class, the
  instance is dropped and each of its pixels is treated exactly as if its
  instance id were 0 (next two rules).
* **Stuff**: pixels with no (kept) instance whose class is a stuff class
  form one segment per stuff class for the whole scene (COCO convention).
  A stuff segment whose area (pixels after the rules above, dropped
  instances included) is below ``min_stuff_area`` becomes void.
* **Unclaimed things**: pixels with no (kept) instance whose class is a
  thing class become void.

Segment ids (uint32, stable and documented)
-------------------------------------------
With ``K = max class id + 1``: stuff class ``c`` -> ``c + 1`` (in
``[1, K]``) and instance ``i`` -> ``K + i`` (``> K``). The id of a segment
depends only on its class or instance id, never on chunking or on other
segments. If ``K + max instance id`` (over every instance seen, kept or
dropped) exceeds ``2**32 - 1``, :func:`decide` raises :class:`ConfigError`
(relabel instances sequentially first). Semantic class ids must be below
``2**16`` and instance ids below ``2**48`` (the pair key is 64 bits).

Bounding boxes
--------------
COCO style, with x the *last* array axis: for a 2-D ``(H, W)`` map
``[x, y, width, height]`` (x = column); for a 3-D ``(D, H, W)`` map
``[x, y, z, w, h, d]``; in general the minima along the axes in reverse
order, then the extents in the same order. All entries are Python ints.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from segcore.errors import ConfigError
from segcore.labels.relabel import LabelMap

__all__ = [
    "FusionStats",
    "PanopticPlan",
    "Segment",
    "apply_plan",
    "decide",
    "segments_table",
]

_CLASS_BITS = 16
_MAX_INSTANCE = (1 << (64 - _CLASS_BITS)) - 1
_UINT32_MAX = (1 << 32) - 1


def _group(
    keys: np.ndarray, counts: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Reduce rows with equal keys: sum counts, min of ``lo``, max of ``hi``.

    ``keys`` (P,), ``counts`` (P,), ``lo`` / ``hi`` (P, ndim). Returns the
    sorted unique keys and the reduced rows.
    """
    if keys.size == 0:
        return keys, counts, lo, hi
    order = np.argsort(keys, kind="stable")
    k = keys[order]
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    return (
        k[starts],
        np.add.reduceat(counts[order], starts),
        np.minimum.reduceat(lo[order], starts, axis=0),
        np.maximum.reduceat(hi[order], starts, axis=0),
    )


_FEW_KEYS = 4096  # distinct (instance, class) pairs per chunk up to which boxes use presence
_FEW_CLASSES = 16  # classes in a chunk without instances up to which boxes use one mask each


def _boxes_by_presence(inverse: np.ndarray, count: int, flat: np.ndarray,
                       shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel counts and per-axis first/last index of each of ``count`` groups.

    ``inverse`` ``(n,)`` is the group of each pixel at flat index ``flat`` of a chunk of
    ``shape``. For every axis a ``(count, length)`` presence table marks which indices
    each group touches; its first and last True are the box. O(n + count x length), no
    sort of the pixels (the general path sorts every pixel's key and coordinates).
    """
    counts = np.bincount(inverse, minlength=count).astype(np.int64)
    lo = np.zeros((count, len(shape)), np.int64)
    hi = np.zeros((count, len(shape)), np.int64)
    for axis, coord in enumerate(np.unravel_index(flat, shape)):
        length = shape[axis]
        present = np.zeros((count, length), bool)
        present[inverse, coord] = True
        lo[:, axis] = present.argmax(axis=1)
        hi[:, axis] = length - 1 - present[:, ::-1].argmax(axis=1)
    return counts, lo, hi


def _stuff_boxes(sem: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel counts and per-axis first/last index of each class of a chunk without instances.

    One ``bincount`` per axis of ``class + (k + 1) * index`` gives which classes each
    row (column, slice) holds, ``(length, k)``; its first and last True per class is the
    box. Left-out pixels (``keep`` False) count as class ``k``, dropped at the end.
    """
    k = int(sem[keep].max(initial=0)) + 1
    cls = np.where(keep, sem, k).astype(np.intp)
    counts = np.bincount(cls.ravel(), minlength=k + 1)[:k].astype(np.int64)
    lo = np.zeros((k, sem.ndim), np.int64)
    hi = np.zeros((k, sem.ndim), np.int64)
    present = np.flatnonzero(counts)
    if len(present) <= _FEW_CLASSES:  # a mask per class: its projections are the box
        for c in present:
            mask = cls == c
            for axis, length in enumerate(sem.shape):
                hit = mask.any(axis=tuple(a for a in range(sem.ndim) if a != axis))
                lo[c, axis] = hit.argmax()
                hi[c, axis] = length - 1 - hit[::-1].argmax()
        return counts, lo, hi
    for axis, length in enumerate(sem.shape):
        index = np.arange(length, dtype=np.intp).reshape([-1 if a == axis else 1
                                                          for a in range(sem.ndim)])
        present = np.bincount((cls + (k + 1) * index).ravel(),
                              minlength=(k + 1) * length).reshape(length, k + 1)[:, :k] > 0
        lo[:, axis] = present.argmax(axis=0)
        hi[:, axis] = length - 1 - present[::-1].argmax(axis=0)
    return counts, lo, hi


@dataclass
class FusionStats:
    """Pass-1 accumulator: per ``(instance, class)`` pixel counts and boxes.

    Mutable and mergeable; one per worker, merged on the driver.

    Parameters
    ----------
    ndim : int
        Number of spatial axes of the chunks (2 or 3, any >= 1 works).
    nodata : int or None, default 255
        Semantic value that marks nodata (in addition to ``valid``).

    Attributes
    ----------
    keys : (P,) ndarray of uint64
        Sorted pair keys ``instance << 16 | class``.
    counts : (P,) ndarray of int64
        Valid pixels per pair.
    lo, hi : (P, ndim) ndarray of int64
        Global minimum / maximum index per axis of each pair's pixels.

    Examples
    --------
    >>> s = FusionStats(ndim=1)
    >>> s.add(np.array([1, 1, 2]), np.array([0, 7, 7]), offset=(10,))
    >>> [(int(k) >> 16, int(k) & 0xFFFF, int(n)) for k, n in zip(s.keys, s.counts)]
    [(0, 1, 1), (7, 1, 1), (7, 2, 1)]
    >>> s.lo.ravel().tolist(), s.hi.ravel().tolist()
    ([10, 11, 12], [10, 11, 12])
    """

    ndim: int
    nodata: int | None = 255
    keys: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    lo: np.ndarray = field(default=None)  # type: ignore[assignment]
    hi: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if isinstance(self.ndim, bool) or not isinstance(self.ndim, (int, np.integer)) or self.ndim < 1:
            raise ConfigError(f"ndim: expected an integer >= 1, received {self.ndim!r}")
        if self.lo is None:
            self.lo = np.zeros((0, self.ndim), np.int64)
        if self.hi is None:
            self.hi = np.zeros((0, self.ndim), np.int64)

    def add(
        self,
        semantic_chunk: np.ndarray,
        instance_chunk: np.ndarray,
        valid_chunk: np.ndarray | None = None,
        offset: Sequence[int] | None = None,
    ) -> None:
        """Add one chunk.

        Parameters
        ----------
        semantic_chunk : (*chunk) ndarray of int
            Class ids in ``[0, 2**16)``, or the nodata value.
        instance_chunk : (*chunk) ndarray of int
            Scene-unique instance ids in ``[0, 2**48)``; 0 = no instance.
        valid_chunk : (*chunk) ndarray of bool, optional
            False marks nodata; default: every pixel valid.
        offset : sequence of int, optional
            Global index of the chunk's first pixel per axis; default zeros.
        """
        sem, inst, keep = _check_chunk(self.ndim, self.nodata, semantic_chunk, instance_chunk, valid_chunk)
        origin = np.zeros(self.ndim, np.int64) if offset is None else np.asarray(offset, np.int64)
        if origin.shape != (self.ndim,):
            raise ConfigError(f"offset: expected {self.ndim} integers, received {offset!r}")
        if sem.dtype.kind == "u" and sem.dtype.itemsize <= 2 and sem.size:
            # pixels without an instance: key = class id, boxes from per-axis class tables;
            # only the (usually few) instance pixels take the general path below
            things = inst != 0
            has_things = bool(things.any())
            counts, lo, hi = _stuff_boxes(sem, keep & ~things if has_things else keep)
            seen = np.flatnonzero(counts)
            self._absorb(seen.astype(np.uint64), counts[seen], lo[seen] + origin, hi[seen] + origin)
            if not has_things:
                return
            keep = keep & things
        flat = np.flatnonzero(keep)
        s = sem.ravel()[flat].astype(np.int64)
        i = inst.ravel()[flat].astype(np.int64)
        if s.size and (s.min() < 0 or s.max() >= 1 << _CLASS_BITS):
            raise ConfigError(f"semantic_chunk: expected class ids in [0, 65536) or nodata={self.nodata}, "
                              f"received values in [{s.min()}, {s.max()}]")
        if i.size and (i.min() < 0 or i.max() > _MAX_INSTANCE):
            raise ConfigError(f"instance_chunk: expected ids in [0, 2**48), received values in [{i.min()}, {i.max()}]")
        keys = (i.astype(np.uint64) << np.uint64(_CLASS_BITS)) | s.astype(np.uint64)
        unique, inverse = np.unique(keys, return_inverse=True)
        count = unique.size
        if 0 < count <= _FEW_KEYS:
            counts, lo, hi = _boxes_by_presence(inverse, count, flat, sem.shape)
            seen = counts > 0
            self._absorb(unique[seen], counts[seen], lo[seen] + origin, hi[seen] + origin)
            return
        coords = np.stack(np.unravel_index(flat, sem.shape), axis=1).astype(np.int64) + origin
        self._absorb(keys, np.ones(keys.size, np.int64), coords, coords)

    def add_boxes(self, keys: np.ndarray, counts: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
        """Add statistics counted elsewhere: ``keys`` (P,) pair keys ``instance << 16 | class``,
        ``counts`` (P,) pixels, ``lo`` / ``hi`` (P, ndim) global inclusive box corners.

        Examples
        --------
        >>> s = FusionStats(ndim=2)
        >>> s.add_boxes(np.array([3]), np.array([4]), np.array([[0, 1]]), np.array([[1, 2]]))
        >>> s.keys.tolist(), s.counts.tolist(), s.lo.tolist(), s.hi.tolist()
        ([3], [4], [[0, 1]], [[1, 2]])
        """
        keys = np.asarray(keys, np.uint64)
        counts = np.asarray(counts, np.int64)
        lo, hi = np.asarray(lo, np.int64), np.asarray(hi, np.int64)
        if counts.shape != keys.shape or lo.shape != (keys.size, self.ndim) or hi.shape != lo.shape:
            raise ConfigError(
                f"add_boxes: expected keys and counts of one shape (P,) and lo, hi of shape "
                f"(P, {self.ndim}), received {keys.shape}, {counts.shape}, {lo.shape}, {hi.shape}"
            )
        self._absorb(keys, counts, lo, hi)

    def relabelled(self, instances: LabelMap) -> FusionStats:
        """A copy whose instance ids ``i > 0`` are ``instances[i]`` (0 stays 0): the
        statistics of the same chunks after their instance ids were relabelled with
        ``instances`` (pairs that come to share a key are merged).

        Examples
        --------
        >>> s = FusionStats(ndim=1)
        >>> s.add(np.array([1, 1, 2]), np.array([0, 7, 9]))
        >>> r = s.relabelled(LabelMap(np.array([7, 9], np.uint64), np.array([1, 2], np.uint32)))
        >>> [(int(k) >> 16, int(k) & 0xFFFF, int(n)) for k, n in zip(r.keys, r.counts)]
        [(0, 1, 1), (1, 1, 1), (2, 2, 1)]
        """
        instance = self.keys >> np.uint64(_CLASS_BITS)
        mapped = np.zeros_like(instance)
        things = instance > 0
        mapped[things] = instances.apply(instance[things]).astype(np.uint64)
        keys = (mapped << np.uint64(_CLASS_BITS)) | (self.keys & np.uint64((1 << _CLASS_BITS) - 1))
        out = FusionStats(ndim=self.ndim, nodata=self.nodata)
        out.add_boxes(keys, self.counts.copy(), self.lo.copy(), self.hi.copy())
        return out

    def merge(self, other: FusionStats) -> FusionStats:
        """Add another accumulator's statistics into this one; returns ``self``."""
        if other.ndim != self.ndim or other.nodata != self.nodata:
            raise ConfigError(
                f"other: expected ndim={self.ndim}, nodata={self.nodata}, "
                f"received ndim={other.ndim}, nodata={other.nodata}"
            )
        self._absorb(other.keys, other.counts, other.lo, other.hi)
        return self

    def merge_all(self, others: list[FusionStats]) -> FusionStats:
        """Add many accumulators at once (one grouping, not one per accumulator); returns ``self``.

        Examples
        --------
        >>> a, b = FusionStats(ndim=1), FusionStats(ndim=1)
        >>> a.add(np.array([1, 1]), np.array([0, 0])); b.add(np.array([1]), np.array([0]), offset=(5,))
        >>> m = FusionStats(ndim=1).merge_all([a, b])
        >>> int(m.counts[0]), int(m.lo[0, 0]), int(m.hi[0, 0])
        (3, 0, 5)
        """
        for other in others:
            if other.ndim != self.ndim or other.nodata != self.nodata:
                raise ConfigError(
                    f"others: expected ndim={self.ndim}, nodata={self.nodata}, "
                    f"received ndim={other.ndim}, nodata={other.nodata}"
                )
        if others:
            self._absorb(np.concatenate([o.keys for o in others]),
                         np.concatenate([o.counts for o in others]),
                         np.concatenate([o.lo for o in others]),
                         np.concatenate([o.hi for o in others]))
        return self

    def _absorb(self, keys: np.ndarray, counts: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
        self.keys, self.counts, self.lo, self.hi = _group(
            np.concatenate([self.keys, keys]),
            np.concatenate([self.counts, counts]),
            np.concatenate([self.lo, lo]),
            np.concatenate([self.hi, hi]),
        )


def _check_chunk(
    ndim: int, nodata: int | None, semantic: np.ndarray, instance: np.ndarray, valid: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sem, inst = np.asarray(semantic), np.asarray(instance)
    for name, arr in (("semantic_chunk", sem), ("instance_chunk", inst)):
        if not np.issubdtype(arr.dtype, np.integer):
            raise ConfigError(f"{name}: expected an integer array, received dtype {arr.dtype}")
    if sem.ndim != ndim or inst.shape != sem.shape:
        raise ConfigError(
            f"instance_chunk: expected two {ndim}-D arrays of one shape, "
            f"received {sem.shape} and {inst.shape}"
        )
    keep = np.ones(sem.shape, bool) if valid is None else np.asarray(valid, dtype=bool)
    if keep.shape != sem.shape:
        raise ConfigError(f"valid_chunk: expected shape {sem.shape}, received {keep.shape}")
    if nodata is not None:
        keep = keep & (sem != nodata)
    return sem, inst, keep


@dataclass(frozen=True)
class Segment:
    """One panoptic segment of the final map.

    ``lo`` / ``hi`` are the inclusive min / max index per array axis.
    """

    id: int
    category_id: int
    category: str
    isthing: bool
    area: int
    lo: tuple[int, ...]
    hi: tuple[int, ...]

    def bbox(self) -> list[int]:
        """COCO bbox: minima along reversed axes, then extents (x = last axis)."""
        return [*self.lo[::-1], *(h - l + 1 for l, h in zip(self.lo[::-1], self.hi[::-1]))]


@dataclass(frozen=True)
class PanopticPlan:
    """Result of :func:`decide`: lookup tables and the final segment table.

    Attributes
    ----------
    nodata : int or None
        Semantic nodata value (as in the stats).
    id_offset : int
        ``K = max class id + 1``; instance ``i`` gets id ``K + i``.
    stuff_lut : (K,) ndarray of uint32
        Segment id of a pixel of class ``c`` with no kept instance
        (``c + 1`` for a kept stuff segment, 0 otherwise).
    known : (K,) ndarray of bool
        Which class ids are in the class table.
    kept_instances : (N,) ndarray of uint64
        Sorted ids of the kept instances.
    segments : tuple of Segment
        The final segments, sorted by id.
    """

    nodata: int | None
    id_offset: int
    stuff_lut: np.ndarray
    known: np.ndarray
    kept_instances: np.ndarray
    segments: tuple[Segment, ...]


def _parse_classes(classes: Sequence[tuple[int, str, bool]]) -> dict[int, tuple[str, bool]]:
    table: dict[int, tuple[str, bool]] = {}
    for entry in classes:
        cid, name, isthing = entry
        if isinstance(cid, bool) or not isinstance(cid, (int, np.integer)) or not 0 <= cid < 1 << _CLASS_BITS:
            raise ConfigError(f"classes: expected class ids in [0, 65536), received {cid!r}")
        if int(cid) in table:
            raise ConfigError(f"classes: class id {cid} appears twice")
        table[int(cid)] = (str(name), bool(isthing))
    if not table:
        raise ConfigError("classes: expected at least one (id, name, isthing) entry, received none")
    return table


def _majority(inst: np.ndarray, cls: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per instance id, the class with most pixels (ties: smallest class)."""
    if inst.size == 0:
        return inst, cls
    order = np.lexsort((cls, -counts, inst))
    first = np.r_[True, inst[order][1:] != inst[order][:-1]]
    return inst[order][first], cls[order][first]


def decide(
    stats: FusionStats, classes: Sequence[tuple[int, str, bool]], *, min_stuff_area: int = 0
) -> PanopticPlan:
    """Apply the fusion rules (module docstring) to merged pass-1 statistics.

    Parameters
    ----------
    stats : FusionStats
        Statistics of every chunk of the scene, merged.
    classes : sequence of (int, str, bool)
        ``(class id, name, isthing)`` for every class of the model.
    min_stuff_area : int, default 0
        Stuff segments with fewer pixels become void.

    Returns
    -------
    PanopticPlan

    Raises
    ------
    ConfigError
        On a malformed class table, class ids in the data that are not in
        the table, or instance ids whose segment id would overflow uint32.

    Examples
    --------
    >>> s = FusionStats(ndim=2)
    >>> s.add(np.array([[0, 1, 1]]), np.array([[0, 5, 5]]))
    >>> plan = decide(s, [(0, "water", False), (1, "boat", True)])
    >>> [(g.id, g.category, g.area) for g in plan.segments]
    [(1, 'water', 1), (7, 'boat', 2)]
    """
    table = _parse_classes(classes)
    if min_stuff_area < 0:
        raise ConfigError(f"min_stuff_area: expected an integer >= 0, received {min_stuff_area!r}")
    k = max(table) + 1
    known = np.zeros(k, bool)
    isthing = np.zeros(k, bool)
    for cid, (_, thing) in table.items():
        known[cid], isthing[cid] = True, thing
    inst = (stats.keys >> np.uint64(_CLASS_BITS)).astype(np.int64)
    cls = (stats.keys & np.uint64((1 << _CLASS_BITS) - 1)).astype(np.int64)
    unknown = np.unique(cls[(cls >= k) | ~known[np.minimum(cls, k - 1)]])
    if unknown.size:
        raise ConfigError(f"classes: semantic ids {unknown[:5].tolist()} occur in the data but not in the table")
    if inst.size and k + int(inst.max()) > _UINT32_MAX:
        raise ConfigError(
            f"instance ids: the largest, {int(inst.max())}, plus the id offset {k} exceeds the uint32 "
            f"segment id range ({_UINT32_MAX}); relabel instances sequentially before fusion"
        )
    ids, winner = _majority(inst[inst > 0], cls[inst > 0], stats.counts[inst > 0])
    kept = ids[isthing[winner]]
    in_kept = np.isin(inst, kept)
    seg = np.where(in_kept, k + inst, np.where(isthing[cls], 0, cls + 1))
    live = seg > 0
    sid, area, lo, hi = _group(seg[live], stats.counts[live], stats.lo[live], stats.hi[live])
    cat_of = dict(zip((k + kept).tolist(), winner[isthing[winner]].tolist()))
    cat_of.update({c + 1: c for c in range(k)})
    stuff_lut = np.where(known & ~isthing, np.arange(1, k + 1), 0).astype(np.uint32)
    segments = []
    for s_id, a, l, h in zip(sid.tolist(), area.tolist(), lo.tolist(), hi.tolist()):
        c = cat_of[s_id]
        if s_id <= k and a < min_stuff_area:
            stuff_lut[c] = 0
            continue
        segments.append(Segment(s_id, c, table[c][0], table[c][1], a, tuple(l), tuple(h)))
    return PanopticPlan(stats.nodata, k, stuff_lut, known, kept.astype(np.uint64), tuple(segments))


def apply_plan(
    plan: PanopticPlan,
    semantic_chunk: np.ndarray,
    instance_chunk: np.ndarray,
    valid_chunk: np.ndarray | None = None,
) -> np.ndarray:
    """Panoptic segment ids of one chunk (pass 2).

    Instances are looked up with ``np.searchsorted`` in the sorted kept ids,
    so memory does not grow with the largest instance id.

    Parameters
    ----------
    plan : PanopticPlan
        From :func:`decide` on the statistics of the whole scene.
    semantic_chunk, instance_chunk : (*chunk) ndarray of int
        As given to :meth:`FusionStats.add`.
    valid_chunk : (*chunk) ndarray of bool, optional
        False marks nodata.

    Returns
    -------
    (*chunk) ndarray of uint32
        Segment ids, 0 = void.

    Examples
    --------
    >>> s = FusionStats(ndim=1)
    >>> sem, inst = np.array([0, 1, 1, 255]), np.array([0, 5, 5, 5])
    >>> s.add(sem, inst)
    >>> apply_plan(decide(s, [(0, "water", False), (1, "boat", True)]), sem, inst)
    array([1, 7, 7, 0], dtype=uint32)
    """
    ndim = np.ndim(semantic_chunk)
    sem, inst, keep = _check_chunk(ndim, plan.nodata, semantic_chunk, instance_chunk, valid_chunk)
    s = sem.astype(np.int64)
    k = plan.id_offset
    bad = keep & ((s < 0) | (s >= k) | ~plan.known[np.clip(s, 0, k - 1)])
    if bad.any():
        raise ConfigError(f"semantic_chunk: class ids {np.unique(s[bad])[:5].tolist()} are not in the plan")
    out = np.where(keep, plan.stuff_lut[np.clip(s, 0, k - 1)], 0).astype(np.uint32)
    where = keep & (inst != 0)
    ids = inst[where].astype(np.uint64)
    kept = plan.kept_instances
    if kept.size and ids.size:
        pos = np.minimum(np.searchsorted(kept, ids), kept.size - 1)
        hit = kept[pos] == ids
        sub = out[where]
        sub[hit] = (ids[hit] + np.uint64(k)).astype(np.uint32)
        out[where] = sub
    return out


def segments_table(plan: PanopticPlan) -> list[dict[str, Any]]:
    """``segments.json`` entries of the final panoptic map, sorted by id.

    Returns
    -------
    list of dict
        ``{"id", "category_id", "category", "isthing", "area", "bbox"}``;
        ``isthing`` is a bool, ``bbox`` COCO style (module docstring).

    Examples
    --------
    >>> s = FusionStats(ndim=2)
    >>> s.add(np.array([[1, 1], [0, 1]]), np.array([[4, 4], [0, 0]]))
    >>> segments_table(decide(s, [(0, "sea", False), (1, "ship", True)]))[1]
    {'id': 6, 'category_id': 1, 'category': 'ship', 'isthing': True, 'area': 2, 'bbox': [0, 0, 2, 1]}
    """
    return [
        {
            "id": g.id,
            "category_id": g.category_id,
            "category": g.category,
            "isthing": g.isthing,
            "area": g.area,
            "bbox": g.bbox(),
        }
        for g in plan.segments
    ]
