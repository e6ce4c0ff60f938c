"""Hungarian matching against brute force and scipy; set-prediction cost terms by hand (SEED §5)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.optimize import linear_sum_assignment

from segcore.errors import ConfigError
from segcore.matching import hungarian_match, match_cost, pairwise_box_iou, set_prediction_cost


def _brute_force_min(cost: np.ndarray) -> float:
    n, m = cost.shape
    if n <= m:
        return min(cost[np.arange(n), list(p)].sum() for p in itertools.permutations(range(m), n))
    return min(cost[list(p), np.arange(m)].sum() for p in itertools.permutations(range(n), m))


def _check_valid(rows: torch.Tensor, cols: torch.Tensor, n: int, m: int) -> None:
    assert rows.dtype == torch.int64 and cols.dtype == torch.int64
    assert rows.shape == cols.shape == (min(n, m),)
    assert len(set(rows.tolist())) == len(rows) and len(set(cols.tolist())) == len(cols)
    assert rows.tolist() == sorted(rows.tolist())
    assert all(0 <= r < n for r in rows.tolist()) and all(0 <= c < m for c in cols.tolist())


shapes = st.tuples(st.integers(1, 6), st.integers(1, 6))


@settings(max_examples=150, deadline=None)
@given(shapes.flatmap(lambda s: arrays(np.float64, s, elements=st.floats(-100, 100, allow_nan=False))))
def test_hungarian_equals_brute_force(cost: np.ndarray) -> None:
    n, m = cost.shape
    rows, cols = hungarian_match(cost)
    _check_valid(rows, cols, n, m)
    assert cost[rows.numpy(), cols.numpy()].sum() == pytest.approx(_brute_force_min(cost), abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(shapes.flatmap(lambda s: arrays(np.int64, s, elements=st.integers(0, 2))))
def test_hungarian_ties_equal_brute_force(cost: np.ndarray) -> None:
    """Few distinct values: many optimal assignments, any one must reach the optimum."""
    rows, cols = hungarian_match(torch.from_numpy(cost))
    _check_valid(rows, cols, *cost.shape)
    assert cost[rows.numpy(), cols.numpy()].sum() == _brute_force_min(cost)


@pytest.mark.parametrize("shape", [(40, 40), (30, 70), (70, 30), (120, 100)])
def test_hungarian_matches_scipy_total_cost(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    for cost in (rng.normal(size=shape) * 10, rng.integers(0, 4, size=shape).astype(float)):
        rows, cols = hungarian_match(torch.from_numpy(cost))
        _check_valid(rows, cols, *shape)
        r_ref, c_ref = linear_sum_assignment(cost)
        assert cost[rows.numpy(), cols.numpy()].sum() == pytest.approx(cost[r_ref, c_ref].sum(), abs=1e-8)


def test_hungarian_identical_to_scipy_for_unique_optimum() -> None:
    rng = np.random.default_rng(1)
    cost = rng.random((25, 25))
    rows, cols = hungarian_match(cost)
    r_ref, c_ref = linear_sum_assignment(cost)
    np.testing.assert_array_equal(rows.numpy(), r_ref)
    np.testing.assert_array_equal(cols.numpy(), c_ref)


@pytest.mark.parametrize("shape", [(0, 0), (0, 4), (3, 0)])
def test_hungarian_empty(shape: tuple[int, int]) -> None:
    rows, cols = hungarian_match(torch.zeros(shape))
    assert rows.shape == cols.shape == (0,)
    assert rows.dtype == cols.dtype == torch.int64


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_hungarian_rejects_non_finite(bad: float) -> None:
    cost = np.ones((3, 3))
    cost[1, 2] = bad
    with pytest.raises(ConfigError, match="finite"):
        hungarian_match(cost)
    with pytest.raises(ConfigError):
        hungarian_match(torch.from_numpy(cost))


def test_hungarian_rejects_wrong_rank() -> None:
    with pytest.raises(ConfigError, match="2-D"):
        hungarian_match(np.ones(3))


# ---------------------------------------------------------------- set_prediction_cost

def _inputs() -> dict:
    logp = torch.log(torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], dtype=torch.float64))
    boxes_pred = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 4.0, 3.0]], dtype=torch.float64)
    gt_classes = torch.tensor([2, 0, 1])
    gt_boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 0.0, 3.0, 2.0], [10.0, 10.0, 11.0, 11.0]],
                            dtype=torch.float64)
    return dict(class_logprob=logp, boxes_pred=boxes_pred, mask_pred=None,
                gt_classes=gt_classes, gt_boxes=gt_boxes, gt_masks=None)


def test_cost_class_term_by_hand() -> None:
    c = set_prediction_cost(**_inputs(), w_cls=2.0, w_l1=0.0, w_iou=0.0)
    probs = [[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]
    expected = [[-2 * math.log(probs[i][k]) for k in (2, 0, 1)] for i in range(2)]
    np.testing.assert_allclose(c.numpy(), expected, rtol=1e-12)


def test_cost_l1_term_by_hand() -> None:
    c = set_prediction_cost(**_inputs(), w_cls=0.0, w_l1=0.5, w_iou=0.0)
    # pred0 vs gts: 0; |1|+0+|1|+0 = 2; 10+10+9+9 = 38
    # pred1 (1,1,4,3): 1+1+2+1 = 5; 0+1+1+1 = 3; 9+9+7+8 = 33
    np.testing.assert_allclose(c.numpy(), 0.5 * np.array([[0, 2, 38], [5, 3, 33]]), atol=1e-12)


def test_cost_iou_term_by_hand() -> None:
    c = set_prediction_cost(**_inputs(), w_cls=0.0, w_l1=0.0, w_iou=3.0)
    # pred0 (area 4) vs gt1 (area 4): inter 1*2 = 2, union 6 -> 1/3
    # pred1 (area 6) vs gt0 (area 4): inter [1,2]x[1,2] = 1, union 9 -> 1/9
    # pred1 vs gt1 [1,3]x[0,2]: inter [1,3]x[1,2] = 2, union 8 -> 1/4
    iou = np.array([[1.0, 1 / 3, 0.0], [1 / 9, 1 / 4, 0.0]])
    np.testing.assert_allclose(c.numpy(), 3.0 * (1 - iou), atol=1e-12)
    np.testing.assert_allclose(pairwise_box_iou(_inputs()["boxes_pred"], _inputs()["gt_boxes"]).numpy(), iou,
                               atol=1e-12)


def test_cost_terms_add_up() -> None:
    parts = [set_prediction_cost(**_inputs(), w_cls=a, w_l1=b, w_iou=c)
             for a, b, c in ((1.5, 0, 0), (0, 0.7, 0), (0, 0, 2.0))]
    total = set_prediction_cost(**_inputs(), w_cls=1.5, w_l1=0.7, w_iou=2.0)
    torch.testing.assert_close(total, sum(parts))
    assert match_cost is set_prediction_cost


def _mask_inputs() -> dict:
    d = _inputs()
    d["mask_pred"] = torch.tensor([[[0.0, 2.0], [-1.0, 1.0]], [[3.0, -2.0], [0.5, 0.0]]], dtype=torch.float64)
    d["gt_masks"] = torch.tensor([[[1, 1], [0, 0]], [[0, 0], [0, 1]], [[1, 0], [1, 1]]], dtype=torch.float64)
    return d


def test_cost_dice_term_by_hand() -> None:
    d = _mask_inputs()
    c = set_prediction_cost(**d, w_cls=0.0, w_l1=0.0, w_iou=0.0, w_dice=2.0)
    expected = np.zeros((2, 3))
    for i in range(2):
        p = [1 / (1 + math.exp(-float(v))) for v in d["mask_pred"][i].flatten()]
        for j in range(3):
            t = [float(v) for v in d["gt_masks"][j].flatten()]
            inter = sum(a * b for a, b in zip(p, t))
            expected[i, j] = 1 - (2 * inter + 1) / (sum(p) + sum(t) + 1)
    np.testing.assert_allclose(c.numpy(), 2.0 * expected, rtol=1e-12)


def test_cost_focal_term_by_hand() -> None:
    d = _mask_inputs()
    alpha, gamma = 0.25, 2.0
    c = set_prediction_cost(**d, w_cls=0.0, w_l1=0.0, w_iou=0.0, w_focal=1.0)
    expected = np.zeros((2, 3))
    for i in range(2):
        p = [1 / (1 + math.exp(-float(v))) for v in d["mask_pred"][i].flatten()]
        for j in range(3):
            t = [float(v) for v in d["gt_masks"][j].flatten()]
            terms = [tt * alpha * (1 - pp) ** gamma * -math.log(pp)
                     + (1 - tt) * (1 - alpha) * pp ** gamma * -math.log(1 - pp) for pp, tt in zip(p, t)]
            expected[i, j] = sum(terms) / len(terms)
    np.testing.assert_allclose(c.numpy(), expected, rtol=1e-10)


def test_cost_then_match_recovers_permutation() -> None:
    gen = torch.Generator().manual_seed(0)
    m = 5
    xy = torch.rand(m, 2, generator=gen, dtype=torch.float64) * 50
    gt_boxes = torch.cat([xy, xy + 5 + torch.rand(m, 2, generator=gen, dtype=torch.float64) * 10], 1)
    gt_classes = torch.randint(0, 4, (m,), generator=gen)
    perm = torch.randperm(m, generator=gen)
    n = 8  # 3 extra "no object" queries far away
    boxes_pred = torch.cat([gt_boxes[perm] + 0.1, torch.full((3, 4), 500.0, dtype=torch.float64)])
    logits = torch.zeros(n, 5, dtype=torch.float64)
    logits[torch.arange(m), gt_classes[perm]] = 3.0
    cost = set_prediction_cost(torch.log_softmax(logits, 1), boxes_pred, None, gt_classes, gt_boxes, None,
                               w_cls=1.0, w_l1=5.0, w_iou=2.0)
    rows, cols = hungarian_match(cost)
    assert rows.tolist() == list(range(m))
    assert cols.tolist() == perm.tolist()


def test_cost_validation() -> None:
    with pytest.raises(ConfigError, match="w_l1"):
        set_prediction_cost(**_inputs(), w_cls=1.0, w_l1=-1.0, w_iou=0.0)
    with pytest.raises(ConfigError, match="mask_pred"):
        set_prediction_cost(**_inputs(), w_cls=1.0, w_l1=1.0, w_iou=0.0, w_dice=1.0)
    bad = _inputs()
    bad["gt_classes"] = torch.tensor([0, 3, 1])
    with pytest.raises(ConfigError, match="gt_classes"):
        set_prediction_cost(**bad, w_cls=1.0, w_l1=1.0, w_iou=1.0)


def test_cost_empty_targets() -> None:
    d = _inputs()
    d["gt_classes"] = torch.zeros(0, dtype=torch.int64)
    d["gt_boxes"] = torch.zeros(0, 4, dtype=torch.float64)
    c = set_prediction_cost(**d, w_cls=1.0, w_l1=1.0, w_iou=1.0)
    assert c.shape == (2, 0)
    assert hungarian_match(c)[0].shape == (0,)
