"""Chunked resampling of zarr arrays on disk: equal to the whole array and to torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import zarr

from pipeline.streaming.resample import resample_array
from segcore.errors import ConfigError
from segcore.geometry.resample import (
    linear_block,
    nearest_block,
    nearest_indices,
    source_coordinates,
)

SHAPE_IN = (13, 17, 11)
SRC_CHUNKS = (5, 6, 4)
DST_CHUNKS = (6, 5, 7)
# downsampling, upsampling, non-integer factors both ways, and mixed
SHAPES_OUT = [(7, 9, 6), (26, 34, 22), (19, 12, 16), (5, 40, 11)]


def _store(path: Path, name: str, data: np.ndarray, chunks) -> zarr.Array:
    arr = zarr.create_array(str(path / f"{name}.zarr"), shape=data.shape, chunks=chunks,
                            dtype=data.dtype, fill_value=0)
    arr[...] = data
    return arr


def _empty(path: Path, name: str, shape, dtype, chunks) -> zarr.Array:
    return zarr.create_array(str(path / f"{name}.zarr"), shape=shape, chunks=chunks,
                             dtype=dtype, fill_value=0)


def _torch(src: np.ndarray, shape_out, mode: str) -> np.ndarray:
    lead = src.ndim - len(shape_out)
    x = torch.from_numpy(np.ascontiguousarray(src)).reshape(1, -1, *src.shape[lead:])
    kwargs = {} if mode == "nearest-exact" else {"align_corners": False}
    y = F.interpolate(x, size=tuple(shape_out), mode=mode, **kwargs)
    return y.reshape(*src.shape[:lead], *shape_out).numpy()


@pytest.mark.parametrize("shape_out", SHAPES_OUT)
def test_linear_image_with_channels(tmp_path: Path, shape_out) -> None:
    image = np.random.default_rng(0).standard_normal((2, *SHAPE_IN)).astype(np.float32)
    src = _store(tmp_path, "image", image, (1, *SRC_CHUNKS))
    dst = _empty(tmp_path, "out", (2, *shape_out), np.float32, (1, *DST_CHUNKS))
    resample_array(src, dst, mode="linear", spatial_dims=3)
    got = dst[...]
    coords = [source_coordinates(o, i, clamp=True) for o, i in zip(shape_out, SHAPE_IN)]
    whole = linear_block(image, (0, 0, 0), coords).astype(np.float32)
    np.testing.assert_array_equal(got, whole)  # chunked == whole array, exactly
    np.testing.assert_allclose(got, _torch(image, shape_out, "trilinear"), rtol=0, atol=1e-5)


@pytest.mark.parametrize("shape_out", SHAPES_OUT)
def test_nearest_labels_and_valid_mask(tmp_path: Path, shape_out) -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 256, size=SHAPE_IN).astype(np.uint8)
    valid = rng.random(SHAPE_IN) < 0.7
    idx = [nearest_indices(o, i) for o, i in zip(shape_out, SHAPE_IN)]
    for name, data in (("labels", labels), ("valid", valid)):
        src = _store(tmp_path, name, data, SRC_CHUNKS)
        dst = _empty(tmp_path, f"{name}_out", shape_out, data.dtype, DST_CHUNKS)
        resample_array(src, dst, mode="nearest")
        got = dst[...]
        assert got.dtype == data.dtype
        np.testing.assert_array_equal(got, nearest_block(data, (0, 0, 0), idx))
        expected = _torch(data.astype(np.float64), shape_out, "nearest-exact").astype(data.dtype)
        np.testing.assert_array_equal(got, expected)


def test_round_trip_through_the_model_grid_keeps_labels_on_integer_factors(tmp_path) -> None:
    labels = np.random.default_rng(2).integers(0, 5, size=(6, 8, 4)).astype(np.uint8)
    src = _store(tmp_path, "labels", labels, (4, 3, 3))
    up = _empty(tmp_path, "up", (12, 24, 8), np.uint8, (5, 7, 3))
    back = _empty(tmp_path, "back", labels.shape, np.uint8, (4, 5, 2))
    resample_array(src, up, mode="nearest")
    resample_array(up, back, mode="nearest")
    np.testing.assert_array_equal(back[...], labels)


@pytest.mark.parametrize("shape_out", [(9, 30), (31, 4)])
def test_two_dimensional_with_spatial_dims_2(tmp_path: Path, shape_out) -> None:
    image = np.random.default_rng(3).random((3, 14, 11)).astype(np.float64)
    src = _store(tmp_path, "image", image, (3, 5, 4))
    dst = _empty(tmp_path, "out", (3, *shape_out), np.float64, (2, 4, 3))
    resample_array(src, dst, mode="linear", spatial_dims=2)
    np.testing.assert_allclose(dst[...], _torch(image, shape_out, "bilinear"), atol=1e-12)


def test_numpy_arrays_work_too() -> None:
    image = np.random.default_rng(4).random((5, 6, 7)).astype(np.float32)
    out = np.zeros((9, 3, 7), np.float32)
    resample_array(image, out, mode="linear")
    np.testing.assert_allclose(out, _torch(image, out.shape, "trilinear"), atol=1e-5)


@pytest.mark.parametrize(
    ("src", "dst", "kwargs", "match"),
    [
        (np.zeros((4, 4), np.uint8), np.zeros((2, 2), np.uint8), {"mode": "linear",
                                                                 "spatial_dims": 2}, "nearest"),
        (np.zeros((4, 4)), np.zeros((2, 2)), {"mode": "nearst", "spatial_dims": 2},
         "did you mean 'nearest'"),
        (np.zeros((2, 4, 4)), np.zeros((3, 2, 2)), {"mode": "linear", "spatial_dims": 2},
         "leading"),
        (np.zeros((4, 4)), np.zeros((2, 2)), {"mode": "linear", "spatial_dims": 3},
         "spatial_dims"),
    ],
)
def test_bad_arguments_raise_config_error(src, dst, kwargs, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        resample_array(src, dst, **kwargs)
