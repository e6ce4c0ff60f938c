"""Streamed panoptic quality (PQ, SQ, RQ) at scene scale.

Chunks contribute only a table of ``(predicted id, true id) -> pixel count``
(np.unique on a 64-bit key ``pred << 32 | true``); per-segment areas are its
row and column sums. Tables of chunks merge by addition, so a scene of any
size is evaluated without loading it whole; matching happens once, on the
merged table, in :func:`panoptic_quality`.

Definition (COCO panopticapi ``pq_compute``, exactly)
------------------------------------------------------
* Segments are the ids with at least one pixel; ``void_id`` (0) is void in
  both maps. Each segment's category comes from the category mappings.
* A predicted and a true segment *match* when they have the same category
  and ``IoU > 0.5`` with ``union = |p| + |t| - |p & t| - |p & void_truth|``:
  the predicted segment's pixels on void truth leave the union. (Predicted
  void pixels inside a true segment stay in the union, as in COCO.) IoU
  > 0.5 makes matches unique.
* TP: matched pairs; FN: unmatched true segments; FP: unmatched predicted
  segments, except those with more than half of their area on void truth,
  which are ignored. All counted per category.
* Per class: ``PQ = sum IoU(TP) / (TP + FP/2 + FN/2)``,
  ``SQ = sum IoU / TP`` (0 when TP = 0), ``RQ = TP / (TP + FP/2 + FN/2)``.
* A class with ``TP + FP + FN = 0`` is *absent*: None in ``per_class`` and
  left out of every mean. Overall PQ/SQ/RQ are means over present classes
  (also over present thing and over present stuff classes); None when no
  class is present.

Correspondence with torchmetrics 1.9 ``PanopticQuality`` (checked in tests)
---------------------------------------------------------------------------
torchmetrics takes ``(category, instance)`` per pixel. Encode each true and
predicted segment as ``(category, segment id)`` for things and
``(category, 0)`` for stuff (torchmetrics forces stuff instances to 0, so
each map may hold at most one segment per stuff category), and void truth as
a category in neither ``things`` nor ``stuffs``. Its results then equal ours
when the **prediction has no void pixels**. Where it has, torchmetrics
differs from COCO: it also removes the true segment's pixels predicted void
from the union, and it does not count a true segment as FN when more than
half of it is predicted void. It reports 0 for absent classes (we: None);
its means skip them, as ours do.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from segcore.errors import ConfigError

__all__ = ["ClassQuality", "PanopticAccumulator", "PanopticScores", "panoptic_quality"]

_LOW = np.uint64(0xFFFFFFFF)


@dataclass
class PanopticAccumulator:
    """Mergeable table of ``(pred id, true id)`` pixel counts.

    Attributes
    ----------
    keys : (P,) ndarray of uint64
        Sorted unique keys ``pred << 32 | true``.
    counts : (P,) ndarray of int64
        Pixels per key.

    Examples
    --------
    >>> acc = PanopticAccumulator()
    >>> acc.add(np.array([[1, 1, 2]]), np.array([[5, 5, 0]]))
    >>> acc.pairs()
    (array([1, 2], dtype=uint32), array([5, 0], dtype=uint32), array([2, 1]))
    """

    keys: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def add(self, pred_chunk: np.ndarray, true_chunk: np.ndarray) -> None:
        """Count the id pairs of one chunk.

        Parameters
        ----------
        pred_chunk, true_chunk : (*chunk) ndarray of uint32
            Segment ids (0 = void) of the same pixels; any integer dtype
            whose values lie in ``[0, 2**32)``.
        """
        pred, true = np.asarray(pred_chunk), np.asarray(true_chunk)
        if pred.shape != true.shape:
            raise ConfigError(f"pred_chunk: expected the shape of true_chunk {true.shape}, received {pred.shape}")
        for name, arr in (("pred_chunk", pred), ("true_chunk", true)):
            if not np.issubdtype(arr.dtype, np.integer):
                raise ConfigError(f"{name}: expected an integer array, received dtype {arr.dtype}")
            if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 0xFFFFFFFF):
                raise ConfigError(f"{name}: expected segment ids in [0, 2**32), received "
                                  f"[{int(arr.min())}, {int(arr.max())}]")
        key = (pred.astype(np.uint64).ravel() << np.uint64(32)) | true.astype(np.uint64).ravel()
        keys, counts = np.unique(key, return_counts=True)
        self._absorb(keys, counts.astype(np.int64))

    def merge(self, other: PanopticAccumulator) -> PanopticAccumulator:
        """Add another accumulator's counts into this one; returns ``self``."""
        self._absorb(other.keys, other.counts)
        return self

    def merge_all(self, others: list[PanopticAccumulator]) -> PanopticAccumulator:
        """Add many accumulators at once (one sort, not one per accumulator); returns ``self``."""
        if others:
            self._absorb(np.concatenate([o.keys for o in others]),
                         np.concatenate([o.counts for o in others]))
        return self

    def _absorb(self, keys: np.ndarray, counts: np.ndarray) -> None:
        all_keys = np.concatenate([self.keys, keys])
        uniq, inverse = np.unique(all_keys, return_inverse=True)
        self.keys = uniq
        self.counts = np.bincount(inverse, weights=np.concatenate([self.counts, counts]),
                                  minlength=uniq.size).astype(np.int64)

    def pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(pred ids, true ids, counts)``, each ``(P,)``, sorted by pred then true."""
        return (
            (self.keys >> np.uint64(32)).astype(np.uint32),
            (self.keys & _LOW).astype(np.uint32),
            self.counts.copy(),
        )


@dataclass(frozen=True)
class ClassQuality:
    """Counts and qualities of one category; qualities None when absent."""

    tp: int
    fp: int
    fn: int
    iou_sum: float
    pq: float | None
    sq: float | None
    rq: float | None


@dataclass(frozen=True)
class PanopticScores:
    """Per-class and mean PQ/SQ/RQ (means over present classes; None if none).

    ``things`` and ``stuff`` are ``{"pq", "sq", "rq"}`` means over the
    present thing / stuff classes (None entries when none is present or
    ``thing_ids`` was not given).
    """

    pq: float | None
    sq: float | None
    rq: float | None
    per_class: Mapping[str, ClassQuality]
    things: Mapping[str, float | None]
    stuff: Mapping[str, float | None]

    def to_dict(self) -> dict[str, Any]:
        """``{"pq", "sq", "rq", "per_class": {name: {"pq", "sq", "rq"}}, "things", "stuff"}``."""
        return {
            "pq": self.pq,
            "sq": self.sq,
            "rq": self.rq,
            "per_class": {n: {"pq": q.pq, "sq": q.sq, "rq": q.rq} for n, q in self.per_class.items()},
            "things": dict(self.things),
            "stuff": dict(self.stuff),
        }


def _categories_of(ids: np.ndarray, mapping: Mapping[int, int], name: str, void_id: int) -> np.ndarray:
    """Category per segment id (void -> -1); ConfigError on unknown ids."""
    table_ids = np.array(sorted(int(i) for i in mapping), dtype=np.int64)
    table_cat = np.array([int(mapping[int(i)]) for i in table_ids], dtype=np.int64)
    ids = ids.astype(np.int64)
    pos = np.clip(np.searchsorted(table_ids, ids), 0, max(table_ids.size - 1, 0))
    found = table_ids[pos] == ids if table_ids.size else np.zeros(ids.size, bool)
    missing = ~found & (ids != void_id)
    if missing.any():
        raise ConfigError(f"{name}: segment ids {np.unique(ids[missing])[:5].tolist()} occur in the map "
                          "but have no category")
    cats = table_cat[pos] if table_ids.size else np.zeros(ids.size, np.int64)
    return np.where(ids == void_id, -1, cats)


def _mean(rows: list[ClassQuality]) -> dict[str, float | None]:
    if not rows:
        return {"pq": None, "sq": None, "rq": None}
    return {k: float(np.mean([getattr(r, k) for r in rows])) for k in ("pq", "sq", "rq")}


def _class_quality(tp: int, fp: int, fn: int, iou_sum: float) -> ClassQuality:
    if tp + fp + fn == 0:
        return ClassQuality(0, 0, 0, 0.0, None, None, None)
    denom = tp + 0.5 * fp + 0.5 * fn
    return ClassQuality(tp, fp, fn, iou_sum, iou_sum / denom, iou_sum / tp if tp else 0.0, tp / denom)


def _per_category_counts(
    acc: PanopticAccumulator,
    pred_categories: Mapping[int, int],
    true_categories: Mapping[int, int],
    void_id: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Match segments; returns TP pairs' categories and IoUs, FP and FN categories."""
    p, t, n = acc.pairs()
    p, t = p.astype(np.int64), t.astype(np.int64)
    pred_ids, p_inv = np.unique(p, return_inverse=True)
    true_ids, t_inv = np.unique(t, return_inverse=True)
    pred_area = np.bincount(p_inv, weights=n).astype(np.int64)
    true_area = np.bincount(t_inv, weights=n).astype(np.int64)
    pred_on_void = np.bincount(p_inv, weights=n * (t == void_id), minlength=pred_ids.size).astype(np.int64)
    pred_cat = _categories_of(pred_ids, pred_categories, "pred_categories", void_id)
    true_cat = _categories_of(true_ids, true_categories, "true_categories", void_id)
    cand = (p != void_id) & (t != void_id) & (pred_cat[p_inv] == true_cat[t_inv])
    union = pred_area[p_inv] + true_area[t_inv] - n - pred_on_void[p_inv]
    iou = np.where(cand, n / np.maximum(union, 1), 0.0)
    tp = cand & (iou > 0.5)
    pred_matched = np.zeros(pred_ids.size, bool)
    pred_matched[p_inv[tp]] = True
    true_matched = np.zeros(true_ids.size, bool)
    true_matched[t_inv[tp]] = True
    fn = (true_ids != void_id) & ~true_matched
    fp = (pred_ids != void_id) & ~pred_matched & (pred_on_void * 2 <= pred_area)
    return true_cat[t_inv[tp]], iou[tp], pred_cat[fp], true_cat[fn], pred_cat, true_cat


def panoptic_quality(
    acc: PanopticAccumulator,
    pred_categories: Mapping[int, int],
    true_categories: Mapping[int, int],
    class_names: Mapping[int, str],
    *,
    void_id: int = 0,
    thing_ids: Collection[int] | None = None,
) -> PanopticScores:
    """PQ, SQ and RQ per class and overall from a merged accumulator.

    Parameters
    ----------
    acc : PanopticAccumulator
        Pair counts of every chunk of the scene, merged.
    pred_categories, true_categories : mapping of int to int
        Segment id -> category id, for every non-void id in each map
        (extra entries are ignored).
    class_names : mapping of int to str
        Category id -> name; every category to report (absent ones get None).
    void_id : int, default 0
        Void segment id in both maps.
    thing_ids : collection of int, optional
        Thing category ids, for the ``things`` / ``stuff`` means.

    Returns
    -------
    PanopticScores

    Raises
    ------
    ConfigError
        If a segment id has no category or a category has no name.

    Examples
    --------
    True: segments 1 (cat 0, 4 px) and 2 (cat 1, 2 px). Predicted segment 7
    (cat 0) covers 1 and one pixel of 2: IoU 4/5 -> TP; 2 unmatched -> FN.

    >>> acc = PanopticAccumulator()
    >>> acc.add(np.array([7, 7, 7, 7, 7, 0]), np.array([1, 1, 1, 1, 2, 2]))
    >>> s = panoptic_quality(acc, {7: 0}, {1: 0, 2: 1}, {0: "a", 1: "b", 2: "c"})
    >>> s.to_dict()["per_class"]
    {'a': {'pq': 0.8, 'sq': 0.8, 'rq': 1.0}, 'b': {'pq': 0.0, 'sq': 0.0, 'rq': 0.0}, 'c': {'pq': None, 'sq': None, 'rq': None}}
    >>> s.pq
    0.4
    """
    tp_cat, tp_iou, fp_cat, fn_cat, pred_cat, true_cat = _per_category_counts(
        acc, pred_categories, true_categories, void_id
    )
    seen = set(np.unique(np.concatenate([pred_cat, true_cat])).tolist()) - {-1}
    unnamed = sorted(seen - {int(c) for c in class_names})
    if unnamed:
        raise ConfigError(f"class_names: categories {unnamed[:5]} occur in the maps but have no name")
    per_class: dict[str, ClassQuality] = {}
    groups: dict[bool, list[ClassQuality]] = {True: [], False: []}
    things = None if thing_ids is None else {int(c) for c in thing_ids}
    for cid, name in class_names.items():
        q = _class_quality(
            int(np.count_nonzero(tp_cat == cid)),
            int(np.count_nonzero(fp_cat == cid)),
            int(np.count_nonzero(fn_cat == cid)),
            float(tp_iou[tp_cat == cid].sum()),
        )
        per_class[str(name)] = q
        if q.pq is not None and things is not None:
            groups[int(cid) in things].append(q)
    present = [q for q in per_class.values() if q.pq is not None]
    overall = _mean(present)
    none = {"pq": None, "sq": None, "rq": None}
    return PanopticScores(
        overall["pq"], overall["sq"], overall["rq"], per_class,
        _mean(groups[True]) if things is not None else none,
        _mean(groups[False]) if things is not None else none,
    )
