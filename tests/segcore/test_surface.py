"""Surface voxels and HD95: brute force, block decomposition, and MONAI 1.6."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage

from segcore.errors import ConfigError
from segcore.metrics.surface import (
    block_surface_voxels,
    directed_distances,
    hausdorff_percentile,
    surface_voxels,
)

SPACINGS_3D = [(1.0, 1.0, 1.0), (2.5, 0.7, 0.9)]
SPACINGS_2D = [(1.0, 1.0), (0.6, 1.7)]


def _reference_surface(mask: np.ndarray) -> np.ndarray:
    """scipy's erosion (connectivity 1, border counts as background), as MONAI."""
    return np.argwhere(mask ^ ndimage.binary_erosion(mask, border_value=0))


def _reference_hd(a: np.ndarray, b: np.ndarray, spacing, percentile=95.0) -> float:
    s = np.asarray(spacing)
    pa, pb = _reference_surface(a) * s, _reference_surface(b) * s
    d = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))
    return max(np.percentile(d.min(1), percentile), np.percentile(d.min(0), percentile))


def _blobs(rng: np.random.Generator, shape: tuple[int, ...], sigma: float = 1.5) -> np.ndarray:
    """Random smooth blobs, some touching the array border."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return field > np.quantile(field, rng.uniform(0.5, 0.85))


def _ellipsoid(shape, centre, radii) -> np.ndarray:
    grid = np.indices(shape, dtype=np.float64)
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1.0


def _monai_hd95(pred: np.ndarray, truth: np.ndarray, spacing) -> float:
    from monai.metrics import compute_hausdorff_distance

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd = compute_hausdorff_distance(
            pred[None, None], truth[None, None], include_background=True,
            distance_metric="euclidean", percentile=95, directed=False, spacing=spacing,
        )
    return float(hd[0, 0])


# --- surface voxels ---------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("shape", [(9, 11, 7), (13, 10), (1, 6, 5), (4,)])
def test_surface_equals_scipy_erosion(seed: int, shape: tuple[int, ...]) -> None:
    mask = np.random.default_rng(seed).random(shape) < 0.6
    np.testing.assert_array_equal(surface_voxels(mask), _reference_surface(mask))


@settings(max_examples=40, deadline=None)
@given(
    mask=arrays(bool, st.tuples(*[st.integers(1, 9)] * 3)),
    block=st.tuples(*[st.integers(1, 5)] * 3),
)
def test_blocks_with_margin_give_the_whole_surface(mask: np.ndarray, block) -> None:
    padded = np.pad(mask, 1)
    parts = []
    for start in np.ndindex(*[-(-n // b) for n, b in zip(mask.shape, block)]):
        lo = [i * b for i, b in zip(start, block)]
        hi = [min(a + b, n) for a, b, n in zip(lo, block, mask.shape)]
        window = tuple(slice(a, b + 2) for a, b in zip(lo, hi))  # core + margin in padded
        parts.append(block_surface_voxels(padded[window], origin=lo))
    got = np.concatenate(parts)
    got = got[np.lexsort(got.T[::-1])]
    np.testing.assert_array_equal(got, surface_voxels(mask))


def test_block_surface_rejects_blocks_without_margin() -> None:
    with pytest.raises(ConfigError, match="1-voxel margin"):
        block_surface_voxels(np.ones((1, 5), bool))
    with pytest.raises(ConfigError, match="origin"):
        block_surface_voxels(np.ones((3, 3), bool), origin=(0,))


# --- distances: brute force -------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("spacing", SPACINGS_3D)
def test_hd95_equals_brute_force_3d(seed: int, spacing) -> None:
    rng = np.random.default_rng(seed)
    a, b = rng.random((2, 8, 10, 9)) < rng.uniform(0.1, 0.6, size=(2, 1, 1, 1))
    got = hausdorff_percentile(surface_voxels(a), surface_voxels(b), spacing)
    assert got == pytest.approx(_reference_hd(a, b, spacing), abs=1e-6)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("spacing", SPACINGS_2D)
@pytest.mark.parametrize("percentile", [0.0, 50.0, 95.0, 100.0])
def test_hd_percentiles_equal_brute_force_2d(seed: int, spacing, percentile: float) -> None:
    rng = np.random.default_rng(100 + seed)
    a, b = _blobs(rng, (24, 19)), _blobs(rng, (24, 19))
    got = hausdorff_percentile(surface_voxels(a), surface_voxels(b), spacing, percentile)
    assert got == pytest.approx(_reference_hd(a, b, spacing, percentile), abs=1e-6)


def test_directed_distances_scale_by_spacing() -> None:
    d = directed_distances([[1, 1, 1]], [[0, 0, 0], [3, 3, 3]], spacing=(2.0, 1.0, 0.5))
    assert d.tolist() == pytest.approx([math.sqrt(4 + 1 + 0.25)])


# --- MONAI 1.6 --------------------------------------------------------------------------------

def _monai_cases():
    rng = np.random.default_rng(7)
    shape3, shape2 = (14, 22, 19), (31, 27)
    yield "ellipsoids-3d", _ellipsoid(shape3, (6, 10, 9), (4, 8, 6)), \
        _ellipsoid(shape3, (7.3, 11, 8), (5, 6.5, 7)), (2.5, 0.8, 1.1)
    yield "ellipsoid-at-border-3d", _ellipsoid(shape3, (0, 10, 9), (5, 9, 7)), \
        _ellipsoid(shape3, (2, 12, 18), (6, 5, 5)), (3.0, 0.7, 0.7)
    for i in range(3):
        yield f"blobs-3d-{i}", _blobs(rng, shape3), _blobs(rng, shape3), (1.9, 0.6, 0.75)
    yield "ellipses-2d", _ellipsoid(shape2, (15, 13), (10, 6)), \
        _ellipsoid(shape2, (14, 15), (7, 9)), (0.5, 1.3)
    for i in range(3):
        yield f"blobs-2d-{i}", _blobs(rng, shape2), _blobs(rng, shape2), (1.2, 0.45)


@pytest.mark.parametrize(("name", "pred", "truth", "spacing"), list(_monai_cases()),
                         ids=[c[0] for c in _monai_cases()])
def test_hd95_equals_monai(name: str, pred: np.ndarray, truth: np.ndarray, spacing) -> None:
    got = hausdorff_percentile(surface_voxels(pred), surface_voxels(truth), spacing)
    assert math.isfinite(got)
    assert got == pytest.approx(_monai_hd95(pred, truth, spacing), abs=1e-3)


# --- empty cases ------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["both", "pred", "truth"])
def test_empty_masks_give_nan_like_monai(which: str) -> None:
    full = _ellipsoid((12, 13, 11), (6, 6, 5), (4, 5, 3))
    empty = np.zeros_like(full)
    pred = empty if which in ("both", "pred") else full
    truth = empty if which in ("both", "truth") else full
    got = hausdorff_percentile(surface_voxels(pred), surface_voxels(truth), (1.0, 2.0, 0.5))
    assert math.isnan(got)
    assert math.isnan(_monai_hd95(pred, truth, (1.0, 2.0, 0.5)))


def test_identical_masks_give_zero() -> None:
    mask = _ellipsoid((12, 13), (6, 6), (4, 5))
    pts = surface_voxels(mask)
    assert hausdorff_percentile(pts, pts, (0.3, 3.0)) == 0.0
    assert _monai_hd95(mask, mask, (0.3, 3.0)) == 0.0


def test_directed_distances_with_empty_sets() -> None:
    assert directed_distances(np.empty((0, 2)), [[1, 1]], (1.0, 1.0)).shape == (0,)
    assert np.isinf(directed_distances([[1, 1], [0, 0]], np.empty((0, 2)), (1.0, 1.0))).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"spacing": (1.0, 0.0)}, "spacing"),
        ({"spacing": (1.0, 1.0, 1.0)}, "pred_points|from_points"),
        ({"spacing": (1.0, 1.0), "percentile": 101}, "percentile"),
    ],
)
def test_bad_arguments_raise_config_error(kwargs, match: str) -> None:
    pts = np.array([[0, 0], [1, 1]])
    with pytest.raises(ConfigError, match=match):
        hausdorff_percentile(pts, pts, **kwargs)
