"""Cross-tile instance stitching: overlap matching, union-find, sequential relabel.

Protocol (what the pipeline drives; all pixels stay in the store)
-----------------------------------------------------------------
1. **Worker, tile A.** Label instances over A's halo window, then
   :func:`core_instances` keeps the instances present in A's core as ids
   ``1..n_A`` (everything else becomes 0). Write the core crop with
   :func:`offset_ids` (``offset_A`` from a per-tile stride,
   ``flat_index * id_stride``, or a prefix sum of counts). Return to the
   driver ``IdRange(offset_A, n_A)``, :func:`halo_cut_ids` and, for every
   neighbour B of :func:`neighbour_overlaps` (faces, edges and corners), the
   patch of A's (offset) labels over ``A.halo ∩ B.core``.
2. **Driver, per directed pair (A, B).** Read B's *stored core* over the same
   window (at most ``halo x tile side`` pixels per face) and reduce the two
   patches to an :class:`OverlapTable` (:func:`overlap_table`), which is a
   few entries per object touching the border. Patches can be dropped now.
3. **Driver, once.** :func:`stitch_plan` matches every table, merges the
   matches with a :class:`~segcore.labels.union_find.UnionFind` and returns a
   :class:`~segcore.labels.relabel.LabelMap` global id -> final id
   (``1..M`` in order of each object's smallest global id), applied chunk by
   chunk. Memory: the tables plus one key per written instance; never a
   scene-sized array nor a table of size ``max_id``.

Matching rule
-------------
In the window ``R = A.halo ∩ B.core``, ``|a|`` counts the pixels A predicted
as ``a``, ``|b|`` the pixels B stored as ``b``, and ``|a ∩ b|`` both. A pair
merges when its score is ``>= threshold``:

* ``majority`` (default): ``|a ∩ b| / min(|a|, |b|)``, i.e. most of the
  smaller of the two lies in the other. Touching but distinct objects share
  few pixels and stay apart.
* ``iou``: ``|a ∩ b| / |a ∪ b|``. Stricter; it misses objects that one tile
  sees as one piece and the other as several (an L whose corner lies beyond
  one tile's halo), so it is not the default.
* ``threshold=0`` merges any overlap: exact for consistent predictions.

Objects larger than the halo
----------------------------
No window has to contain a whole object. Wherever an object crosses a core
border (pixel ``p`` in A's core next to ``q`` in B's core, faces or
diagonals), ``q`` lies in ``A.halo ∩ B.core`` as soon as ``halo >= 1`` on
every axis, so A's id at ``p`` and B's id at ``q`` overlap there and merge.
Hence (with consistent predictions and ``threshold=0``, and for shapes
that meet an overlap window in at most two pieces, e.g. rectangles, Ls and
lines, with the defaults):

* an object cut at a halo limit is merged through its core borders;
* an object spanning more than ``tile + 2 * halo`` (a long road across many
  tiles, a huge blob) becomes one id through the chain of pairwise merges;
* pieces of one object that are joined only outside a tile's halo window
  get several ids in that tile and are re-joined through the neighbours.

With ``threshold > 0`` a comb-like object whose pieces in one window are
joined differently on the two sides may stay split: a stated limitation.
Instances that touch the outer edge of a halo window other than the scene
edge are counted in :attr:`StitchStats.n_cut_at_halo` (reported as seams).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from segcore.errors import ConfigError
from segcore.hints import parse_choice
from segcore.geometry.grid import Tile, TileGrid
from segcore.geometry.window import Window
from segcore.labels.relabel import LabelMap, label_dtype
from segcore.labels.union_find import UnionFind

__all__ = [
    "IdRange",
    "MatchRule",
    "OverlapTable",
    "StitchPlan",
    "StitchStats",
    "core_instances",
    "halo_cut_ids",
    "match_overlaps",
    "neighbour_overlaps",
    "offset_ids",
    "overlap_table",
    "stitch_plan",
]


class MatchRule(str, Enum):
    """Score of a pair in an overlap window (see the module docstring)."""

    MAJORITY = "majority"
    IOU = "iou"

    @classmethod
    def parse(cls, value: MatchRule | str) -> MatchRule:
        """Member named by ``value``; ConfigError with a "did you mean" hint."""
        return parse_choice(cls, value, name="match rule")



@dataclass(frozen=True, order=True)
class IdRange:
    """Global ids ``offset + 1 .. offset + count`` written by one tile."""

    offset: int
    count: int

    def __post_init__(self) -> None:
        offset, count = int(self.offset), int(self.count)
        if offset < 0 or count < 0 or offset + count > np.iinfo(np.uint64).max:
            raise ConfigError(
                f"IdRange: expected offset, count >= 0 with offset + count <= 2**64 - 1, "
                f"received offset={self.offset}, count={self.count}"
            )
        object.__setattr__(self, "offset", offset)
        object.__setattr__(self, "count", count)

    def ids(self) -> NDArray[np.uint64]:
        """The ids as a sorted ``uint64`` array."""
        return np.arange(self.count, dtype=np.uint64) + np.uint64(self.offset + 1)


def _ids(values: ArrayLike, name: str) -> NDArray[np.uint64]:
    arr = np.asarray(values)
    if arr.dtype.kind not in "iu":
        raise ConfigError(f"{name}: expected integer labels, received dtype {arr.dtype}")
    if arr.dtype.kind == "i" and arr.size and int(arr.min()) < 0:
        raise ConfigError(f"{name}: expected label ids >= 0, received {int(arr.min())}")
    return arr.astype(np.uint64, copy=False).ravel()


@dataclass(frozen=True)
class OverlapTable:
    """Pixel counts of one overlap window ``R`` between two label patches.

    Parameters
    ----------
    pairs : (K, 2) ndarray of uint64
        ``(predicted id, stored id)`` pairs, both non-zero, sorted.
    counts : (K,) ndarray of int64
        Pixels of ``R`` carrying each pair.
    predicted_sizes, stored_sizes : dict of int to int
        Pixels of ``R`` per non-zero id on each side.
    """

    pairs: NDArray[np.uint64]
    counts: NDArray[np.int64]
    predicted_sizes: dict[int, int]
    stored_sizes: dict[int, int]

    def scores(self, rule: MatchRule | str = MatchRule.MAJORITY) -> NDArray[np.float64]:
        """Score of every pair under ``rule``."""
        rule = MatchRule.parse(rule)
        size_a = np.array([self.predicted_sizes[int(a)] for a in self.pairs[:, 0]], np.float64)
        size_b = np.array([self.stored_sizes[int(b)] for b in self.pairs[:, 1]], np.float64)
        inter = self.counts.astype(np.float64)
        if rule is MatchRule.IOU:
            return inter / (size_a + size_b - inter)
        return inter / np.minimum(size_a, size_b)

    def matches(
        self, *, threshold: float = 0.5, rule: MatchRule | str = MatchRule.MAJORITY
    ) -> NDArray[np.uint64]:
        """``(M, 2)`` pairs whose score is ``>= threshold``."""
        if not 0.0 <= threshold <= 1.0:
            raise ConfigError(f"match threshold: expected a value in [0, 1], received {threshold}")
        return self.pairs[self.scores(rule) >= threshold]


def _sizes(ids: NDArray[np.uint64]) -> dict[int, int]:
    vals, counts = np.unique(ids[ids != 0], return_counts=True)
    return dict(zip(vals.tolist(), counts.tolist()))


def overlap_table(predicted: ArrayLike, stored: ArrayLike) -> OverlapTable:
    """Overlap histogram of two label patches of the same window.

    Parameters
    ----------
    predicted : ndarray of int
        Tile A's labels over ``A.halo ∩ B.core`` (global ids).
    stored : ndarray of int
        Tile B's stored core labels over the same window, same shape.

    Examples
    --------
    >>> t = overlap_table(np.array([[1, 1, 0], [2, 2, 2]]), np.array([[7, 7, 7], [0, 8, 8]]))
    >>> t.pairs.tolist(), t.counts.tolist()
    ([[1, 7], [2, 8]], [2, 2])
    >>> t.predicted_sizes, t.stored_sizes
    ({1: 2, 2: 3}, {7: 3, 8: 2})
    """
    a, b = np.asarray(predicted), np.asarray(stored)
    if a.shape != b.shape:
        raise ConfigError(
            f"overlap_table: expected patches of one shape, received {a.shape} and {b.shape}"
        )
    a_ids, b_ids = _ids(a, "overlap_table predicted"), _ids(b, "overlap_table stored")
    both = (a_ids != 0) & (b_ids != 0)
    stacked = np.stack([a_ids[both], b_ids[both]], axis=1)
    pairs, counts = np.unique(stacked, axis=0, return_counts=True)
    return OverlapTable(
        pairs.reshape(-1, 2).astype(np.uint64),
        counts.astype(np.int64),
        _sizes(a_ids),
        _sizes(b_ids),
    )


def match_overlaps(
    predicted: ArrayLike,
    stored: ArrayLike,
    *,
    threshold: float = 0.5,
    rule: MatchRule | str = MatchRule.MAJORITY,
) -> NDArray[np.uint64]:
    """Matched ``(predicted id, stored id)`` pairs of two label patches.

    Examples
    --------
    Two touching objects (7, 8) that A predicted with a one-pixel shift:

    >>> a = np.array([[1, 1, 1, 2, 2, 2]])
    >>> b = np.array([[7, 7, 8, 8, 8, 8]])
    >>> match_overlaps(a, b).tolist()
    [[1, 7], [2, 8]]
    """
    return overlap_table(predicted, stored).matches(threshold=threshold, rule=rule)


def core_instances(
    halo_labels: ArrayLike, core_in_halo: Window
) -> tuple[NDArray[Any], int]:
    """Keep the instances present in the core as ids ``1..n``; others become 0.

    Ids are assigned in increasing order of the input ids, so ``n`` is the
    tile's id count and the tile's global ids are ``offset + 1 .. offset + n``.

    Examples
    --------
    >>> lab = np.array([3, 3, 0, 9, 9, 4])
    >>> core_instances(lab, Window((1,), (4,)))
    (array([1, 1, 0, 2, 2, 0]), 2)
    """
    arr = np.asarray(halo_labels)
    ids = _ids(arr, "core_instances halo_labels").reshape(arr.shape)
    core_ids = np.unique(ids[core_in_halo.slices])
    core_ids = core_ids[core_ids != 0]
    idx = np.minimum(np.searchsorted(core_ids, ids), max(core_ids.size - 1, 0))
    keep = core_ids[idx] == ids if core_ids.size else np.zeros(ids.shape, bool)
    keep &= ids != 0
    dtype = label_dtype(core_ids.size, arr.dtype if arr.dtype.kind in "iu" else None)
    out = np.where(keep, idx + 1, 0).astype(dtype)
    return out, int(core_ids.size)


def offset_ids(
    labels: ArrayLike, offset: int, *, dtype: DTypeLike = np.uint64
) -> NDArray[Any]:
    """``labels + offset`` where non-zero, in ``dtype`` (checked for overflow).

    Examples
    --------
    >>> offset_ids(np.array([0, 1, 2], np.uint16), 1000, dtype=np.uint32)
    array([   0, 1001, 1002], dtype=uint32)
    """
    ids = _ids(labels, "offset_ids labels").reshape(np.shape(labels))
    top = int(ids.max()) if ids.size else 0
    out_dtype = label_dtype(int(offset) + top, dtype)
    out = ids.astype(out_dtype)
    out[ids != 0] += out_dtype.type(offset)
    return out


def neighbour_overlaps(grid: TileGrid, tile: Tile) -> list[tuple[tuple[int, ...], Window]]:
    """Every other tile whose core meets ``tile``'s halo, with that window.

    Faces, edges and corners in N-D; with ``halo > tile`` also tiles further
    away. Windows are in scene coordinates; empty when ``halo == 0``.

    Examples
    --------
    >>> grid = TileGrid.create((8, 8), tile=4, halo=1)
    >>> [(i, w.start, w.stop) for i, w in neighbour_overlaps(grid, grid.tile_at((0, 0)))]
    [((0, 1), (0, 4), (4, 5)), ((1, 0), (4, 0), (5, 4)), ((1, 1), (4, 4), (5, 5))]
    """
    ranges = [
        range(lo // t, (hi - 1) // t + 1)
        for lo, hi, t in zip(tile.halo.start, tile.halo.stop, grid.tile)
    ]
    out = []
    for index in itertools.product(*ranges):
        if index == tile.index:
            continue
        window = tile.halo.intersection(grid.tile_at(index).core)
        if window is not None:
            out.append((index, window))
    return out


def halo_cut_ids(labels: ArrayLike, tile: Tile, scene_shape: Sequence[int]) -> NDArray[np.uint64]:
    """Non-zero ids touching an outer face of the halo window that is not a scene edge.

    ``labels`` covers ``tile.halo``. These instances may continue beyond
    what the tile saw (cut at the halo limit).

    Examples
    --------
    >>> grid = TileGrid.create((6,), tile=3, halo=1)
    >>> halo_cut_ids(np.array([1, 1, 2, 3]), grid.tile_at((0,)), grid.shape).tolist()
    [3]
    """
    ids = _ids(labels, "halo_cut_ids labels").reshape(np.shape(labels))
    faces = []
    for axis, (lo, hi, size) in enumerate(zip(tile.halo.start, tile.halo.stop, scene_shape)):
        if lo > 0:
            faces.append(np.take(ids, 0, axis=axis).ravel())
        if hi < size:
            faces.append(np.take(ids, -1, axis=axis).ravel())
    if not faces:
        return np.zeros(0, np.uint64)
    found = np.unique(np.concatenate(faces))
    return found[found != 0]


@dataclass(frozen=True)
class StitchStats:
    """Counts reported as ``seams``.

    Attributes
    ----------
    n_input_ids : int
        Global ids written by all tiles.
    n_instances : int
        Final instances (``M``).
    n_merged : int
        Final instances made of two or more tile pieces (crossed a border).
    n_merges : int
        Successful unions (``n_input_ids - n_instances``).
    n_cut_at_halo : int
        Final instances with a piece touching a non-scene halo edge.
    """

    n_input_ids: int
    n_instances: int
    n_merged: int
    n_merges: int
    n_cut_at_halo: int


@dataclass(frozen=True)
class StitchPlan:
    """Result of :func:`stitch_plan`: the global -> final map and statistics."""

    label_map: LabelMap
    stats: StitchStats


def _all_keys(id_ranges: Iterable[IdRange | tuple[int, int]]) -> NDArray[np.uint64]:
    ranges = sorted(r if isinstance(r, IdRange) else IdRange(*r) for r in id_ranges)
    for prev, nxt in zip(ranges, ranges[1:]):
        if prev.offset + prev.count > nxt.offset and prev.count and nxt.count:
            raise ConfigError(
                f"stitch_plan id_ranges: ranges overlap ({prev} and {nxt}); use a per-tile "
                "stride >= the largest tile count or a prefix sum of counts"
            )
    parts = [r.ids() for r in ranges]
    return np.concatenate(parts) if parts else np.zeros(0, np.uint64)


def _positions(keys: NDArray[np.uint64], ids: NDArray[np.uint64], what: str) -> NDArray[np.intp]:
    idx = np.minimum(np.searchsorted(keys, ids), max(keys.size - 1, 0))
    if ids.size and (keys.size == 0 or not np.array_equal(keys[idx], ids)):
        bad = ids[(keys[idx] != ids) if keys.size else slice(None)]
        raise ConfigError(
            f"stitch_plan {what}: ids {bad[:5].tolist()} are in no tile's IdRange; "
            "pass the same offsets the tiles wrote with"
        )
    return idx


def stitch_plan(
    overlaps: Iterable[OverlapTable],
    id_ranges: Iterable[IdRange | tuple[int, int]],
    *,
    threshold: float = 0.5,
    rule: MatchRule | str = MatchRule.MAJORITY,
    cut_ids: Iterable[ArrayLike] = (),
    dtype: DTypeLike | None = None,
) -> StitchPlan:
    """Merge matched ids across tiles and number the objects ``1..M``.

    Parameters
    ----------
    overlaps : iterable of OverlapTable
        One per directed tile pair (A's prediction over B's core vs B's
        stored core), both directions.
    id_ranges : iterable of IdRange or (offset, count)
        Ids each tile wrote; disjoint.
    threshold, rule
        Matching rule (module docstring).
    cut_ids : iterable of ndarray
        Per tile, global ids from :func:`halo_cut_ids` (statistics only).
    dtype : dtype, optional
        Output dtype; default the smallest of uint16/uint32/uint64 holding M.

    Raises
    ------
    ConfigError
        On overlapping ranges, ids outside every range, or dtype overflow.

    Examples
    --------
    Tile 0 wrote ids 1, 2 and tile 1 wrote 11; A's object 2 continues as 11:

    >>> t = overlap_table(np.array([[2, 2, 0]]), np.array([[11, 11, 0]]))
    >>> plan = stitch_plan([t], [IdRange(0, 2), IdRange(10, 1)])
    >>> plan.label_map.apply(np.array([1, 2, 11, 0], np.uint64))
    array([1, 2, 2, 0], dtype=uint16)
    >>> plan.stats.n_instances, plan.stats.n_merged
    (2, 1)
    """
    keys = _all_keys(id_ranges)
    uf = UnionFind()
    for table in overlaps:
        pairs = table.matches(threshold=threshold, rule=rule)
        pos = _positions(keys, pairs.ravel(), "overlaps").reshape(-1, 2)
        for i, j in pos.tolist():
            uf.union(i, j)
    rep = np.arange(keys.size, dtype=np.intp)
    groups = uf.groups()
    for group in groups:
        rep[group] = group[0]
    is_root = rep == np.arange(keys.size)
    final_of_root = np.cumsum(is_root)
    n_final = int(final_of_root[-1]) if keys.size else 0
    values = final_of_root[rep].astype(label_dtype(n_final, dtype))
    label_map = LabelMap(keys, values)
    cuts = [_ids(c, "stitch_plan cut_ids") for c in cut_ids]
    cut_all = np.unique(np.concatenate(cuts)) if cuts else np.zeros(0, np.uint64)
    cut_all = cut_all[cut_all != 0]
    cut_final = values[_positions(keys, cut_all, "cut_ids")] if cut_all.size else values[:0]
    stats = StitchStats(
        n_input_ids=int(keys.size),
        n_instances=n_final,
        n_merged=len(groups),
        n_merges=int(keys.size) - n_final,
        n_cut_at_halo=int(np.unique(cut_final).size),
    )
    return StitchPlan(label_map, stats)


