"""Grid resampling math: torch's interpolate conventions, block decomposition, affines."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from segcore.errors import ConfigError
from segcore.geometry.resample import (
    linear_block,
    nearest_block,
    nearest_indices,
    resampled_affine,
    resampled_shape,
    source_coordinates,
    source_window,
)

TORCH_LINEAR = {1: "linear", 2: "bilinear", 3: "trilinear"}


def _whole_linear(src: np.ndarray, shape_out: tuple[int, ...]) -> np.ndarray:
    d = len(shape_out)
    coords = [source_coordinates(o, i, clamp=True) for o, i in zip(shape_out, src.shape[-d:])]
    return linear_block(src, (0,) * d, coords)


def _torch(src: np.ndarray, shape_out: tuple[int, ...], mode: str) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(src))
    lead = src.ndim - len(shape_out)
    x = x.reshape(1, -1, *src.shape[lead:])
    kwargs = {"align_corners": False} if mode != "nearest-exact" else {}
    y = F.interpolate(x, size=shape_out, mode=mode, **kwargs)
    return y.reshape(*src.shape[:lead], *shape_out).numpy()


# --- shapes and coordinates -------------------------------------------------------------------

def test_resampled_shape_rounds_and_keeps_one_voxel() -> None:
    assert resampled_shape((400, 512, 512), (2.0, 0.78, 0.78), (1.0, 1.5, 1.5)) == (800, 266, 266)
    assert resampled_shape((5, 3), (1.0, 1.0), (2.0, 100.0)) == (2, 1)  # round(2.5) == 2


@pytest.mark.parametrize(
    ("args", "match"),
    [(((4, 4), (1.0,), (1.0, 1.0)), "spacing"), (((4,), (0.0,), (1.0,)), "spacing_in"),
     (((0,), (1.0,), (1.0,)), "shape")],
)
def test_resampled_shape_rejects_bad_input(args, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        resampled_shape(*args)


@pytest.mark.parametrize(("n_out", "n_in"), [(1, 1), (3, 7), (7, 3), (10, 4), (4, 10), (9, 6)])
def test_source_coordinates_follow_the_formula_and_keep_the_extent(n_out: int, n_in: int) -> None:
    x = source_coordinates(n_out, n_in)
    j = np.arange(n_out)
    np.testing.assert_allclose(x, (j + 0.5) * n_in / n_out - 0.5)
    # the outer faces coincide: -0.5 and n - 0.5 map onto each other
    assert x[0] - 0.5 * n_in / n_out == pytest.approx(-0.5)
    assert x[-1] + 0.5 * n_in / n_out == pytest.approx(n_in - 0.5)
    clamped = source_coordinates(n_out, n_in, clamp=True)
    assert clamped.min() >= 0 and clamped.max() <= n_in - 1


# --- nearest: torch nearest-exact -------------------------------------------------------------

def test_nearest_indices_equal_torch_nearest_exact_for_all_small_sizes() -> None:
    rng = np.random.default_rng(0)
    pairs = [(o, i) for o in range(1, 70) for i in range(1, 70)]
    pairs += [tuple(int(v) for v in rng.integers(1, 1100, 2)) for _ in range(300)]
    for n_out, n_in in pairs:
        ramp = torch.arange(n_in, dtype=torch.float64)[None, None]
        expected = F.interpolate(ramp, size=n_out, mode="nearest-exact")[0, 0].long().numpy()
        np.testing.assert_array_equal(nearest_indices(n_out, n_in), expected, f"{n_in}->{n_out}")


@pytest.mark.parametrize("shape_out", [(5, 9, 4), (17, 3, 12), (1, 1, 1)])
def test_nearest_block_equals_torch_on_labels(shape_out) -> None:
    labels = np.random.default_rng(1).integers(0, 200, size=(2, 9, 7, 6)).astype(np.uint8)
    idx = [nearest_indices(o, i) for o, i in zip(shape_out, labels.shape[1:])]
    got = nearest_block(labels, (0, 0, 0), idx)
    assert got.dtype == np.uint8
    expected = _torch(labels.astype(np.float64), shape_out, "nearest-exact")
    np.testing.assert_array_equal(got, expected.astype(np.uint8))


# --- linear: torch (tri/bi)linear, align_corners=False ----------------------------------------

@pytest.mark.parametrize(
    ("shape_in", "shape_out"),
    [((6, 7, 5), (3, 11, 5)), ((6, 7, 5), (13, 4, 9)), ((9, 8, 10), (7, 3, 2)),
     ((4, 4, 4), (1, 1, 1)), ((11, 13), (5, 29)), ((8, 3), (8, 3)), ((10,), (27,))],
)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_linear_equals_torch_interpolate(shape_in, shape_out, dtype) -> None:
    src = np.random.default_rng(2).standard_normal((3, *shape_in)).astype(dtype)
    got = _whole_linear(src, shape_out)
    expected = _torch(src, shape_out, TORCH_LINEAR[len(shape_in)])
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(got, expected, rtol=0, atol=tol)


@settings(max_examples=40, deadline=None)
@given(
    shape_in=st.tuples(*[st.integers(1, 9)] * 3),
    shape_out=st.tuples(*[st.integers(1, 12)] * 3),
    block=st.tuples(*[st.integers(1, 5)] * 3),
    linear=st.booleans(),
)
def test_blocks_read_from_their_source_window_equal_the_whole(shape_in, shape_out, block,
                                                              linear) -> None:
    src = np.random.default_rng(3).random(shape_in)
    whole = _whole_linear(src, shape_out) if linear else nearest_block(
        src, (0, 0, 0), [nearest_indices(o, i) for o, i in zip(shape_out, shape_in)])
    for start in np.ndindex(*[-(-n // b) for n, b in zip(shape_out, block)]):
        out = tuple(slice(s * b, min((s + 1) * b, n)) for s, b, n in zip(start, block, shape_out))
        axes, read = [], []
        for o, i, sl in zip(shape_out, shape_in, out):
            full = source_coordinates(o, i, clamp=True) if linear else nearest_indices(o, i)
            axes.append(full[sl])
            read.append(slice(*source_window(full[sl], i, linear=linear)))
        origin = [r.start for r in read]
        part = (linear_block if linear else nearest_block)(src[tuple(read)], origin, axes)
        np.testing.assert_array_equal(part, whole[out])


def test_blocks_reject_coordinates_outside_them() -> None:
    with pytest.raises(ConfigError, match="source_window"):
        linear_block(np.zeros(3), (2,), [np.array([1.5])])
    with pytest.raises(ConfigError, match="axis_indices"):
        nearest_block(np.zeros(3), (2,), [np.array([5])])
    with pytest.raises(ConfigError, match="src_origin"):
        linear_block(np.zeros((3, 3)), (0,), [np.array([0.0]), np.array([0.0])])


# --- affine ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("shape_in", "shape_out"),
                         [((10, 7, 5), (4, 11, 5)), ((3, 3, 3), (9, 2, 1))])
def test_resampled_affine_maps_output_centres_onto_source_coordinates(shape_in, shape_out) -> None:
    rng = np.random.default_rng(4)
    affine = np.eye(4)
    affine[:3, :3] = rng.standard_normal((3, 3)) + 2 * np.eye(3)
    affine[:3, 3] = rng.standard_normal(3) * 50
    out = resampled_affine(affine, shape_in, shape_out)
    j = np.stack(np.meshgrid(*[np.arange(n) for n in shape_out], indexing="ij"), -1).reshape(-1, 3)
    x = np.stack([source_coordinates(o, i)[j[:, k]] for k, (o, i) in
                  enumerate(zip(shape_out, shape_in))], -1)
    world_out = (out[:3, :3] @ j.T).T + out[:3, 3]
    world_in = (affine[:3, :3] @ x.T).T + affine[:3, 3]
    np.testing.assert_allclose(world_out, world_in, atol=1e-9)
    # the grid's corner (voxel -0.5 on every axis) stays where it is
    corner = np.append(np.full(3, -0.5), 1.0)
    np.testing.assert_allclose(out @ corner, affine @ corner, atol=1e-9)


def test_resampled_affine_rejects_a_wrong_matrix() -> None:
    with pytest.raises(ConfigError, match="affine"):
        resampled_affine(np.eye(3), (2, 2, 2), (1, 1, 1))
