"""ROIAlign / NMS against brute-force references (torchvision semantics) and SEED §3 gradient spread."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from segcore.errors import ConfigError
from segcore.ops import bilinear_gradient_ratio, box_iou, nms, roi_align


# ------------------------------------------------------------------ references

def _bilinear_ref(fmap: np.ndarray, y: float, x: float) -> float:
    """torchvision's CPU bilinear_interpolate, point by point."""
    h, w = fmap.shape
    if y < -1.0 or y > h or x < -1.0 or x > w:
        return 0.0
    y = max(y, 0.0)
    x = max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= h - 1:
        y_high = y_low = h - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= w - 1:
        x_high = x_low = w - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1.0 - ly, 1.0 - lx
    return (hy * hx * fmap[y_low, x_low] + hy * lx * fmap[y_low, x_high]
            + ly * hx * fmap[y_high, x_low] + ly * lx * fmap[y_high, x_high])


def _roi_align_ref(features: np.ndarray, rois: np.ndarray, oh: int, ow: int, scale: float,
                   sampling_ratio: int, aligned: bool) -> np.ndarray:
    k = rois.shape[0]
    _, c, h, w = features.shape
    out = np.zeros((k, c, oh, ow))
    offset = 0.5 if aligned else 0.0
    for r in range(k):
        b = int(rois[r, 0])
        x1, y1 = rois[r, 1] * scale - offset, rois[r, 2] * scale - offset
        x2, y2 = rois[r, 3] * scale - offset, rois[r, 4] * scale - offset
        rw, rh = x2 - x1, y2 - y1
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bh, bw = rh / oh, rw / ow
        gh = sampling_ratio if sampling_ratio > 0 else math.ceil(rh / oh)
        gw = sampling_ratio if sampling_ratio > 0 else math.ceil(rw / ow)
        count = max(gh * gw, 1)
        for ch in range(c):
            for py in range(oh):
                for px in range(ow):
                    acc = 0.0
                    for iy in range(gh):
                        y = y1 + py * bh + (iy + 0.5) * bh / gh
                        for ix in range(gw):
                            x = x1 + px * bw + (ix + 0.5) * bw / gw
                            acc += _bilinear_ref(features[b, ch], y, x)
                    out[r, ch, py, px] = acc / count
    return out


def _random_rois(rng: np.random.Generator, k: int, n: int, h: int, w: int, scale: float) -> np.ndarray:
    """Boxes in image coordinates, some partly or fully outside the (H, W) feature map."""
    span_x, span_y = w / scale, h / scale
    x = rng.uniform(-0.5 * span_x, 1.3 * span_x, size=(k, 2))
    y = rng.uniform(-0.5 * span_y, 1.3 * span_y, size=(k, 2))
    rois = np.stack([rng.integers(0, n, size=k).astype(float),
                     x.min(1), y.min(1), x.max(1), y.max(1)], axis=1)
    rois[0, 1:] = [1.0, 1.0, 1.2, 1.1]  # tiny box (exercises the aligned=False 1x1 floor)
    rois[1, 1:] = [-3 * span_x, -3 * span_y, -2 * span_x, -2 * span_y]  # fully outside
    rois[2, 1:] = [0.0, 0.0, span_x, span_y]  # whole map
    return rois


# ------------------------------------------------------------------ roi_align

@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [-1, 1, 2, 3])
def test_roi_align_equals_bruteforce(aligned: bool, sampling_ratio: int) -> None:
    rng = np.random.default_rng(10 * sampling_ratio + aligned + 100)
    n, c, h, w = 2, 3, 7, 9
    scale = 0.5
    features = rng.normal(size=(n, c, h, w))
    rois = _random_rois(rng, 12, n, h, w, scale)
    for oh, ow in ((2, 3), (4, 4)):
        got = roi_align(torch.from_numpy(features), torch.from_numpy(rois), (oh, ow),
                        spatial_scale=scale, sampling_ratio=sampling_ratio, aligned=aligned)
        assert got.shape == (12, c, oh, ow) and got.dtype == torch.float64
        ref = _roi_align_ref(features, rois, oh, ow, scale, sampling_ratio, aligned)
        np.testing.assert_allclose(got.numpy(), ref, atol=1e-5, rtol=0)


def test_roi_align_float32_and_list_boxes() -> None:
    rng = np.random.default_rng(3)
    features = rng.normal(size=(2, 2, 6, 5)).astype(np.float32)
    rois = _random_rois(rng, 6, 2, 6, 5, 1.0)
    rois[:, 0] = [0, 0, 1, 1, 1, 0]
    order = np.argsort(rois[:, 0], kind="stable")
    rois = rois[order]
    got = roi_align(torch.from_numpy(features), torch.from_numpy(rois).float(), 3, sampling_ratio=2)
    ref = _roi_align_ref(features.astype(np.float64), rois, 3, 3, 1.0, 2, True)
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-5)
    as_list = [torch.from_numpy(rois[rois[:, 0] == i, 1:]).float() for i in range(2)]
    torch.testing.assert_close(roi_align(torch.from_numpy(features), as_list, 3, sampling_ratio=2), got)


def test_roi_align_empty_and_validation() -> None:
    x = torch.randn(1, 2, 4, 4)
    assert roi_align(x, torch.zeros(0, 5), (2, 3)).shape == (0, 2, 2, 3)
    with pytest.raises(ConfigError, match="boxes"):
        roi_align(x, torch.zeros(3, 4), 2)
    with pytest.raises(ConfigError, match="batch"):
        roi_align(x, torch.tensor([[1.0, 0, 0, 2, 2]]), 2)
    with pytest.raises(ConfigError, match="features"):
        roi_align(torch.randn(2, 4, 4), torch.zeros(1, 5), 2)


def _single_point_box(x: float, y: float) -> torch.Tensor:
    """aligned=True, output 1x1, sampling_ratio 1: the only sample is the box centre - 0.5."""
    return torch.tensor([[0.0, x - 0.5, y - 0.5, x + 1.5, y + 1.5]], dtype=torch.float64)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 3), st.integers(0, 4), st.floats(0.0, 0.999), st.floats(0.0, 0.999))
def test_roi_align_gradient_spreads_to_four_corners(i: int, j: int, a: float, b: float) -> None:
    """SEED §3: dL/dA = delta (1-a)(1-b), dL/dB = delta a(1-b), dL/dC = delta (1-a) b, dL/dD = delta a b."""
    h, w = 5, 6
    features = torch.randn(1, 1, h, w, dtype=torch.float64, requires_grad=True)
    # sample point x = j + a (column), y = i + b (row); box centre minus 0.5 lands there
    out = roi_align(features, _single_point_box(j + a, i + b), 1, sampling_ratio=1)
    delta = 1.7
    (grad,) = torch.autograd.grad(out.sum() * delta, features)
    g = grad[0, 0]
    expected = torch.zeros(h, w, dtype=torch.float64)
    expected[i, j] += delta * (1 - a) * (1 - b)  # A: top left
    expected[i, j + 1] += delta * a * (1 - b)    # B: top right
    expected[i + 1, j] += delta * (1 - a) * b    # C: bottom left
    expected[i + 1, j + 1] += delta * a * b      # D: bottom right
    torch.testing.assert_close(g, expected, atol=1e-12, rtol=1e-9)
    # forward value is the bilinear formula of SEED §3
    f = features.detach()[0, 0]
    val = (f[i, j] * (1 - a) * (1 - b) + f[i, j + 1] * a * (1 - b)
           + f[i + 1, j] * (1 - a) * b + f[i + 1, j + 1] * a * b)
    assert out.item() == pytest.approx(float(val), abs=1e-12)
    # ratio of squared gradient norms, bilinear over nearest (all of delta on one pixel)
    ratio = float((g ** 2).sum()) / delta ** 2
    assert ratio == pytest.approx(bilinear_gradient_ratio(a, b), rel=1e-9)
    assert ratio <= 1.0 + 1e-12


def test_bilinear_gradient_ratio_formula() -> None:
    a = np.linspace(0, 1, 41)[:, None]
    b = np.linspace(0, 1, 41)[None, :]
    r = bilinear_gradient_ratio(a, b)
    np.testing.assert_allclose(r, ((1 - a) ** 2 + a ** 2) * ((1 - b) ** 2 + b ** 2), atol=1e-15)
    assert (r <= 1.0).all() and r.min() == pytest.approx(0.25)
    assert bilinear_gradient_ratio(0.5, 0.5) == 0.25
    t = bilinear_gradient_ratio(torch.tensor([0.0, 0.25]), torch.tensor([1.0, 0.5]))
    torch.testing.assert_close(t, torch.tensor([1.0, 0.625 * 0.5]))


def test_roi_align_gradcheck() -> None:
    rng = np.random.default_rng(5)
    features = torch.from_numpy(rng.normal(size=(1, 2, 5, 5))).requires_grad_(True)
    rois = torch.tensor([[0.0, 0.3, 0.7, 3.9, 4.2], [0.0, -1.2, 2.1, 2.6, 6.3]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda f: roi_align(f, rois, (2, 2), sampling_ratio=2), (features,))


# ------------------------------------------------------------------ nms / box_iou

def _iou_ref(p: list[float], q: list[float]) -> float:
    iw = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
    ih = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
    inter = iw * ih
    union = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - inter
    return inter / union if union > 0 else float("nan")


def _nms_ref(boxes: list[list[float]], scores: list[float], thr: float) -> list[int]:
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    keep: list[int] = []
    for i in order:
        if all(not (_iou_ref(boxes[i], boxes[k]) > thr) for k in keep):
            keep.append(i)
    return keep


@st.composite
def boxes_and_scores(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor]:
    k = draw(st.integers(0, 25))
    coords = st.floats(0, 20, allow_nan=False).map(lambda v: round(v, 1))
    raw = [[draw(coords) for _ in range(4)] for _ in range(k)]
    boxes = [[min(r[0], r[2]), min(r[1], r[3]), max(r[0], r[2]) + 0.5, max(r[1], r[3]) + 0.5] for r in raw]
    scores = [draw(st.sampled_from([0.1, 0.5, 0.9]) | st.floats(0, 1)) for _ in range(k)]  # ties likely
    return (torch.tensor(boxes, dtype=torch.float64).reshape(k, 4),
            torch.tensor(scores, dtype=torch.float64))


@settings(max_examples=150, deadline=None)
@given(boxes_and_scores(), st.sampled_from([0.0, 0.3, 0.5, 0.7, 1.0]))
def test_nms_equals_greedy_reference(bs: tuple[torch.Tensor, torch.Tensor], thr: float) -> None:
    boxes, scores = bs
    keep = nms(boxes, scores, thr)
    assert keep.dtype == torch.int64
    assert keep.tolist() == _nms_ref(boxes.tolist(), scores.tolist(), thr)
    if len(keep):
        assert (scores[keep][:-1] >= scores[keep][1:]).all()


def test_nms_ties_and_threshold_is_strict() -> None:
    boxes = torch.tensor([[0.0, 0, 2, 2], [1.0, 0, 3, 2], [0.0, 0, 2, 2]])  # IoU(0,1) = 1/3
    scores = torch.tensor([0.5, 0.5, 0.5])
    assert nms(boxes, scores, 1 / 3 + 1e-6).tolist() == [0, 1]  # 2 duplicates 0 (IoU 1)
    assert nms(boxes, scores, 0.3).tolist() == [0]
    assert nms(boxes, scores, 1.0).tolist() == [0, 1, 2]  # IoU 1 is not > 1


def test_nms_empty_and_validation() -> None:
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).tolist() == []
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).dtype == torch.int64
    with pytest.raises(ConfigError, match="scores"):
        nms(torch.zeros(3, 4), torch.zeros(2), 0.5)


def test_box_iou_by_hand() -> None:
    a = torch.tensor([[0.0, 0, 2, 2], [1.0, 1, 4, 3]])
    b = torch.tensor([[1.0, 0, 3, 2], [10.0, 10, 11, 11]])
    expected = torch.tensor([[1 / 3, 0.0], [0.25, 0.0]])
    torch.testing.assert_close(box_iou(a, b), expected)


@pytest.mark.parametrize("x, y", [(2.0, 4.0), (2.0, -1.0), (5.0, 1.5), (-1.0, 1.5), (2.0, 4.001), (-1.001, 1.0),
                                  (4.999, 3.5)])
def test_roi_align_boundary_points(x: float, y: float) -> None:
    """Samples exactly on y = -1 / y = H (x = -1 / x = W) are clamped, just beyond them are zero."""
    h, w = 4, 5
    features = np.arange(h * w, dtype=np.float64).reshape(1, 1, h, w) + 1.0
    rois = _single_point_box(x, y).numpy()
    got = roi_align(torch.from_numpy(features), torch.from_numpy(rois), 1, sampling_ratio=1)
    ref = _roi_align_ref(features, rois, 1, 1, 1.0, 1, True)
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-9)
    inside = -1.0 <= x <= w and -1.0 <= y <= h
    assert (float(got) != 0.0) == inside
