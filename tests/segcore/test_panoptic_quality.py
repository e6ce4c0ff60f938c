"""Streamed panoptic quality == brute force (COCO definition) == torchmetrics where they agree."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from torchmetrics.detection import PanopticQuality

from segcore.errors import ConfigError
from segcore.panoptic import PanopticAccumulator, panoptic_quality

NAMES = {0: "boat", 1: "house", 2: "water", 3: "field", 4: "never"}  # 4: an empty class
THINGS = {0, 1}
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def brute_force(pred, true, pcat, tcat, names, things):
    """COCO panopticapi, written with masks and loops over segment pairs."""
    tp = {c: 0 for c in names}
    fp, fn, iou_sum = dict(tp), dict(tp), {c: 0.0 for c in names}
    void_t = true == 0
    pids = [int(i) for i in np.unique(pred) if i != 0]
    tids = [int(i) for i in np.unique(true) if i != 0]
    matched_p, matched_t = set(), set()
    for p in pids:
        pm = pred == p
        for t in tids:
            if pcat[p] != tcat[t]:
                continue
            tm = true == t
            iou = np.sum(pm & tm) / (np.sum(pm | tm) - np.sum(pm & void_t))
            if iou > 0.5:
                matched_p.add(p)
                matched_t.add(t)
                tp[tcat[t]] += 1
                iou_sum[tcat[t]] += iou
    for t in set(tids) - matched_t:
        fn[tcat[t]] += 1
    for p in set(pids) - matched_p:
        pm = pred == p
        if np.sum(pm & void_t) / np.sum(pm) <= 0.5:
            fp[pcat[p]] += 1
    per = {}
    for c, name in names.items():
        if tp[c] + fp[c] + fn[c] == 0:
            per[name] = None
            continue
        d = tp[c] + fp[c] / 2 + fn[c] / 2
        per[name] = (iou_sum[c] / d, iou_sum[c] / tp[c] if tp[c] else 0.0, tp[c] / d, c in things)
    present = [v for v in per.values() if v is not None]
    mean = [float(np.mean([v[k] for v in present])) if present else None for k in range(3)]
    return per, mean


@st.composite
def panoptic_pairs(draw: st.DrawFn, *, pred_void: bool = True, one_stuff_segment: bool = False):
    shape = tuple(draw(st.lists(st.integers(1, 9), min_size=2, max_size=2)))
    if one_stuff_segment:  # ids 102, 103 are the only stuff segments (water, field)
        tcat = {1: 0, 2: 0, 3: 1, 102: 2, 103: 3}
        pcat = {1: 0, 2: 1, 3: 1, 4: 0, 102: 2, 103: 3}
    else:
        tcat = {i: draw(st.integers(0, 3)) for i in range(1, 7)}
        pcat = {i: draw(st.integers(0, 3)) for i in range(11, 18)}
    true = draw(hnp.arrays(np.uint32, shape, elements=st.sampled_from([0, *tcat])))
    pred_ids = sorted(pcat) + ([0] if pred_void else [])
    relabel = {t: draw(st.sampled_from(pred_ids)) for t in [0, *tcat]}
    pred = np.vectorize(lambda t: relabel[t], otypes=[np.uint32])(true)
    noise = draw(hnp.arrays(bool, shape, elements=st.sampled_from([False, False, False, True])))
    pred[noise] = draw(hnp.arrays(np.uint32, shape, elements=st.sampled_from(pred_ids)))[noise]
    if not one_stuff_segment:  # often give a relabelled segment its true category
        for t, p in relabel.items():
            if p and t and draw(st.booleans()):
                pcat[p] = tcat[t]
    cuts = [sorted(draw(st.sets(st.integers(1, max(n - 1, 1)), max_size=3))) if n > 1 else [] for n in shape]
    return pred, true, pcat, tcat, cuts


def streamed(pred, true, pcat, tcat, cuts):
    edges = [[0, *c, n] for c, n in zip(cuts, pred.shape)]
    parts = []
    for box in itertools.product(*[list(zip(e[:-1], e[1:])) for e in edges]):
        sl = tuple(slice(a, b) for a, b in box)
        acc = PanopticAccumulator()
        acc.add(pred[sl], true[sl])
        parts.append(acc)
    total = PanopticAccumulator()
    for acc in parts[::-1]:
        total.merge(acc)
    return panoptic_quality(total, pcat, tcat, NAMES, thing_ids=THINGS)


def _close(a, b) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and math.isclose(a, b, abs_tol=1e-6))


@given(panoptic_pairs())
@SETTINGS
def test_streamed_equals_brute_force(case) -> None:
    pred, true, pcat, tcat, cuts = case
    scores = streamed(pred, true, pcat, tcat, cuts)
    per, mean = brute_force(pred, true, pcat, tcat, NAMES, THINGS)
    d = scores.to_dict()
    assert d["per_class"]["never"] == {"pq": None, "sq": None, "rq": None}
    for name, ref in per.items():
        got = d["per_class"][name]
        if ref is None:
            assert got == {"pq": None, "sq": None, "rq": None}
        else:
            assert all(_close(got[k], ref[i]) for i, k in enumerate(("pq", "sq", "rq"))), (name, got, ref)
    assert all(_close(d[k], mean[i]) for i, k in enumerate(("pq", "sq", "rq")))
    for group, flag in (("things", True), ("stuff", False)):
        rows = [v for v in per.values() if v is not None and v[3] == flag]
        ref_pq = float(np.mean([v[0] for v in rows])) if rows else None
        assert _close(d[group]["pq"], ref_pq)


def _torchmetrics_input(ids: np.ndarray, cat: dict[int, int], void_cat: int) -> torch.Tensor:
    category = np.vectorize(lambda i: cat.get(int(i), void_cat))(ids)
    instance = np.where(np.isin(category, list(THINGS)), ids, 0)
    return torch.from_numpy(np.stack([category, instance], axis=-1).astype(np.int64))[None]


@given(panoptic_pairs(pred_void=False, one_stuff_segment=True))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_matches_torchmetrics_without_predicted_void(case) -> None:
    pred, true, pcat, tcat, cuts = case
    d = streamed(pred, true, pcat, tcat, cuts).to_dict()
    things, stuffs = {0, 1}, {2, 3, 4}
    preds_t, target_t = _torchmetrics_input(pred, pcat, 99), _torchmetrics_input(true, tcat, 99)
    per_class = PanopticQuality(things=things, stuffs=stuffs, return_sq_and_rq=True, return_per_class=True)
    per_class.update(preds_t, target_t)
    table = per_class.compute().numpy()  # rows: sorted things, then sorted stuffs
    for row, cid in enumerate([0, 1, 2, 3, 4]):
        got = d["per_class"][NAMES[cid]]
        if got["pq"] is not None:
            np.testing.assert_allclose([got["pq"], got["sq"], got["rq"]], table[row], atol=1e-6)
    overall = PanopticQuality(things=things, stuffs=stuffs, return_sq_and_rq=True)
    overall.update(preds_t, target_t)
    ref = overall.compute().numpy()
    if d["pq"] is not None:
        np.testing.assert_allclose([d["pq"], d["sq"], d["rq"]], ref, atol=1e-6)


def test_conventions_differ_with_predicted_void() -> None:
    """A true segment mostly predicted void: COCO keeps those pixels in the union, torchmetrics not."""
    true = np.array([[1, 1, 1, 2]], np.uint32)
    pred = np.array([[0, 0, 7, 8]], np.uint32)
    acc = PanopticAccumulator()
    acc.add(pred, true)
    d = panoptic_quality(acc, {7: 0, 8: 0}, {1: 0, 2: 0}, {0: "boat"}).to_dict()
    assert d["per_class"]["boat"]["rq"] == pytest.approx(0.5)  # TP (8, 2), FN 1, FP 7
    tm = PanopticQuality(
        things={0}, stuffs={1}, return_sq_and_rq=True, return_per_class=True, allow_unknown_preds_category=True
    )
    tm.update(_torchmetrics_input(pred, {7: 0, 8: 0}, 99), _torchmetrics_input(true, {1: 0, 2: 0}, 99))
    assert tm.compute()[0, 2].item() == 1.0  # there (7, 1) matches: IoU 1 / (1 + 3 - 1 - 2)


def test_void_truth_ignores_mostly_void_predictions_and_leaves_union() -> None:
    true = np.array([0, 0, 0, 5, 5, 5, 5], np.uint32)
    pred = np.array([9, 9, 3, 3, 3, 3, 0], np.uint32)
    acc = PanopticAccumulator()
    acc.add(pred, true)
    d = panoptic_quality(acc, {9: 0, 3: 0}, {5: 0}, {0: "boat"}).to_dict()
    # 9 lies wholly on void: ignored; 3: |3 & 5| = 3, union = 4 + 4 - 3 - 1 = 4
    assert d["per_class"]["boat"] == {"pq": 0.75, "sq": 0.75, "rq": 1.0}


def test_all_absent_gives_none() -> None:
    acc = PanopticAccumulator()
    acc.add(np.zeros((2, 2), np.uint32), np.zeros((2, 2), np.uint32))
    d = panoptic_quality(acc, {}, {}, NAMES, thing_ids=THINGS).to_dict()
    assert d["pq"] is None and d["things"]["pq"] is None
    assert d["per_class"]["boat"] == {"pq": None, "sq": None, "rq": None}


def test_3d_chunks_and_errors() -> None:
    true = np.zeros((2, 3, 4), np.uint32)
    true[:, 1:, 1:] = 4
    acc = PanopticAccumulator()
    acc.add(true[:1], true[:1])
    acc.add(true[1:], true[1:])
    assert panoptic_quality(acc, {4: 2}, {4: 2}, NAMES).pq == 1.0
    with pytest.raises(ConfigError, match="no category"):
        panoptic_quality(acc, {}, {4: 2}, NAMES)
    with pytest.raises(ConfigError, match="no name"):
        panoptic_quality(acc, {4: 7}, {4: 7}, NAMES)
    with pytest.raises(ConfigError):
        acc.add(np.zeros(3, np.int64), np.zeros(4, np.int64))
    with pytest.raises(ConfigError):
        acc.add(np.array([-1]), np.array([0]))
