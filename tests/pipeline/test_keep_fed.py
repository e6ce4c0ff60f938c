"""Keeping the model fed: out-of-memory halving, voxel-capped batches, empty tiles skipped."""

from __future__ import annotations

import numpy as np
import rasterio
import torch
from rasterio.transform import from_origin

from pipeline.options import RunOptions
from pipeline.inference.predictor import TilePredictor
from pipeline.run import Workspace, run_scene
from pipeline.formats import Scene


class _OomAbove(torch.nn.Module):
    """Raises the CUDA out-of-memory error for batches larger than ``limit`` tiles."""

    def __init__(self, net: torch.nn.Module, limit: int) -> None:
        super().__init__()
        self.net, self.limit, self.calls = net, limit, []

    def forward(self, x):
        self.calls.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.net(x)


def _tiles(n: int, size: int = 64) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (3, size, size), dtype=np.uint8) for _ in range(n)]
    return images, [np.ones((size, size), bool) for _ in range(n)]


def test_out_of_memory_halves_the_batch_and_keeps_results(tiny_bundle):
    images, valids = _tiles(4)
    reference = TilePredictor(tiny_bundle).predict(images, valids, nodata=255)
    predictor = TilePredictor(tiny_bundle)
    wrapped = _OomAbove(predictor.net, limit=1)
    predictor.net = wrapped
    got = predictor.predict(images, valids, nodata=255)
    for a, b in zip(got, reference):
        np.testing.assert_array_equal(a.semantic, b.semantic)
    assert wrapped.calls[0] == 4 and wrapped.calls.count(1) == 4  # 4 -> 2 + 2 -> 1 x 4
    assert predictor.oom_splits == 3
    assert predictor.max_batch_voxels == 64 * 64  # later calls start at one tile
    wrapped.calls.clear()
    predictor.predict(images, valids, nodata=255)
    assert wrapped.calls == [1, 1, 1, 1]


def test_batches_are_capped_by_voxels(tiny_bundle):
    predictor = TilePredictor(tiny_bundle)
    predictor.max_batch_voxels = 2 * 64 * 64
    wrapped = _OomAbove(predictor.net, limit=99)
    predictor.net = wrapped
    predictor.predict(*_tiles(5), nodata=255)
    assert wrapped.calls == [2, 2, 1]


def test_tiles_without_valid_pixels_skip_the_model(tiny_bundle, tiny_pool, tmp_path):
    path = tmp_path / "half-empty.tif"
    data = np.random.default_rng(1).integers(1, 255, (3, 256, 512), dtype=np.uint8)
    data[:, :, :256] = 0  # left half is nodata
    with rasterio.open(path, "w", driver="GTiff", width=512, height=256, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(500000, 0, 10, 10),
                       nodata=0) as dst:
        dst.write(data)
    ws = Workspace(Scene(path, "half-empty", "geotiff"), tmp_path / "out")
    report = run_scene(ws, tiny_bundle, RunOptions(tile=128), tiny_pool).report.to_json()
    tiles = report["tiles"]
    assert tiles["total"] == 8 and tiles["skipped_empty"] == 4
    with rasterio.open(ws.final / "semantic.tif") as src:
        semantic = src.read(1)
    assert (semantic[:, :256] == 255).all() and (semantic[:, 256:] != 255).all()
