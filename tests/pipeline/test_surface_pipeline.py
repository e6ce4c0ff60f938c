"""Chunked HD95 over zarr arrays on disk equals the whole-array result exactly."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr
from scipy import ndimage

from pipeline.streaming.surface import collect_surfaces, surface_distances
from segcore.errors import ConfigError
from segcore.metrics.surface import hausdorff_percentile, surface_voxels

IGNORE = 255
CLASSES = [(0, "background"), (1, "liver"), (2, "kidney"), (3, "spleen"), (4, "absent")]


def _labels(rng: np.random.Generator, shape: tuple[int, ...], k: int = 4) -> np.ndarray:
    """Smooth random label fields with classes 0..k-1."""
    fields = ndimage.gaussian_filter(rng.standard_normal((k, *shape)), (0, *[1.5] * len(shape)))
    return fields.argmax(0).astype(np.uint8)


def _scene(shape: tuple[int, ...], seed: int = 0):
    rng = np.random.default_rng(seed)
    truth = _labels(rng, shape)
    pred = truth.copy()
    flip = ndimage.gaussian_filter(rng.standard_normal(shape), 1.0) > 0.35
    pred[flip] = _labels(rng, shape)[flip]
    pred[rng.random(shape) < 0.01] = IGNORE  # nodata in the prediction matches no class
    truth[ndimage.gaussian_filter(rng.standard_normal(shape), 1.0) > 0.5] = IGNORE
    valid = np.ones(shape, bool)
    valid[..., : shape[-1] // 5] = False
    return pred, truth, valid


def _to_zarr(path: Path, name: str, data: np.ndarray, chunks: tuple[int, ...]) -> zarr.Array:
    arr = zarr.create_array(str(path / f"{name}.zarr"), shape=data.shape, chunks=chunks,
                            dtype=data.dtype, fill_value=0)
    arr[...] = data
    return zarr.open_array(str(path / f"{name}.zarr"), mode="r")


def _whole_array(pred, truth, valid, spacing):
    keep = valid & (truth != IGNORE)
    out = {}
    for c, name in CLASSES:
        hd = hausdorff_percentile(
            surface_voxels((pred == c) & keep), surface_voxels((truth == c) & keep), spacing
        )
        out[name] = {"hd95_mm": hd if math.isfinite(hd) else None}
    return out


@pytest.mark.parametrize(
    ("shape", "chunks", "spacing"),
    [((21, 30, 19), (8, 7, 6), (2.5, 0.8, 0.8)), ((45, 38), (16, 10), (0.5, 1.25))],
    ids=["3d", "2d"],
)
def test_chunked_hd95_over_zarr_equals_whole_array(tmp_path: Path, shape, chunks, spacing) -> None:
    pred, truth, valid = _scene(shape)
    zp, zt, zv = (_to_zarr(tmp_path, n, a, chunks) for n, a in
                  (("pred", pred), ("truth", truth), ("valid", valid)))
    got = surface_distances(zp, zt, zv, classes=CLASSES, spacing=spacing, ignore=IGNORE)
    assert got == _whole_array(pred, truth, valid, spacing)  # exact, not approx
    assert got["absent"] == {"hd95_mm": None}
    assert all(got[n]["hd95_mm"] is not None for n in ("background", "liver", "kidney"))
    json.dumps(got)


def test_surfaces_per_block_equal_whole_array_sets(tmp_path: Path) -> None:
    shape, chunks = (17, 23, 13), (5, 6, 4)
    pred, truth, valid = _scene(shape, seed=3)
    zp, zt, zv = (_to_zarr(tmp_path, n, a, chunks) for n, a in
                  (("pred", pred), ("truth", truth), ("valid", valid)))
    keep = valid & (truth != IGNORE)
    surfaces = collect_surfaces(zp, zt, zv, classes=[0, 1, 2], ignore=IGNORE)
    for c, (p_pts, t_pts) in surfaces.items():
        for got, mask in ((p_pts, (pred == c) & keep), (t_pts, (truth == c) & keep)):
            got = got[np.lexsort(got.T[::-1])]
            np.testing.assert_array_equal(got, surface_voxels(mask))


@pytest.mark.parametrize("chunks", [None, (4, 4, 4), (5, 3, 7), (100, 100, 100)])
def test_numpy_inputs_without_valid_or_ignore(chunks) -> None:
    pred, truth, _ = _scene((12, 14, 10), seed=5)
    spacing = (1.0, 1.0, 3.0)
    got = surface_distances(pred, truth, None, classes=CLASSES, spacing=spacing,
                            ignore=None, chunks=chunks)
    # ignore=None: 255 in truth is just a value no listed class matches
    for c, name in CLASSES[:4]:
        hd = hausdorff_percentile(surface_voxels(pred == c), surface_voxels(truth == c), spacing)
        assert got[name]["hd95_mm"] == hd


def test_masked_pipeline_equals_monai_on_masked_labels() -> None:
    from monai.metrics import compute_hausdorff_distance

    pred, truth, valid = _scene((14, 18, 16), seed=9)
    spacing = (3.0, 0.9, 0.7)
    got = surface_distances(pred, truth, valid, classes=CLASSES[:4], spacing=spacing,
                            ignore=IGNORE, chunks=(5, 6, 7))
    keep = valid & (truth != IGNORE)
    for c, name in CLASSES[:4]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = compute_hausdorff_distance(
                ((pred == c) & keep)[None, None], ((truth == c) & keep)[None, None],
                include_background=True, percentile=95, spacing=spacing,
            )
        assert got[name]["hd95_mm"] == pytest.approx(float(ref[0, 0]), abs=1e-3)


def test_class_empty_everywhere_gives_null() -> None:
    truth = np.zeros((6, 7), np.uint8)
    pred = truth.copy()
    pred[2:4, 2:5] = 1
    got = surface_distances(pred, truth, None, classes=[(1, "a"), (2, "b")],
                            spacing=(1.0, 1.0), ignore=None)
    assert got == {"a": {"hd95_mm": None}, "b": {"hd95_mm": None}}


def test_mismatched_inputs_raise_config_error() -> None:
    a = np.zeros((4, 5), np.uint8)
    with pytest.raises(ConfigError, match="pred"):
        surface_distances(np.zeros((4, 4), np.uint8), a, None, classes=[(1, "a")],
                          spacing=(1.0, 1.0), ignore=None)
    with pytest.raises(ConfigError, match="spacing"):
        surface_distances(a, a, None, classes=[(1, "a")], spacing=(1.0,), ignore=None)
