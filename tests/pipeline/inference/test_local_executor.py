"""Small runs in the command's own process (LocalPool, ThreadBlocks) equal runs on Ray,
resume the same way, fail the same way, and are chosen only where they fit."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.blockmap import ThreadBlocks, serial
from pipeline.executor import choose_executor, likely_local, total_pixels
from pipeline.formats import Scene
from pipeline.inference.local_pool import LocalPool
from pipeline.options import Executor, RunOptions
from pipeline.run import Workspace, run_scene
from pipeline.store import INSTANCE, PANOPTIC, SEMANTIC, open_store
from segcore.errors import ConfigError

ARRAYS = (SEMANTIC, INSTANCE, PANOPTIC)
VOLATILE = ("timings_s",)


def _scene(path) -> Scene:
    return Scene(path, path.name.removesuffix(".tif"), "geotiff")


@pytest.fixture(scope="module")
def local_pool(tiny_instance_bundle):
    pool = LocalPool(str(tiny_instance_bundle.path), batch_size=2, cores=2)
    yield pool
    pool.shutdown()


@pytest.fixture(scope="module")
def big_objects(scene_factory):
    """A scene of several 128 px tiles with buildings across tile borders."""
    return scene_factory("local-vs-ray", size=(384, 320), seed=11)


@pytest.fixture(scope="module")
def local_demo_pool(demo_bundle):
    pool = LocalPool(str(demo_bundle.path), batch_size=2, cores=2)
    yield pool
    pool.shutdown()


def _outputs(ws) -> tuple[dict[str, np.ndarray], dict, dict[str, bytes]]:
    group = open_store(ws.final / "scene.zarr")
    arrays = {n: np.asarray(group[n][...]) for n in ARRAYS}
    report = json.loads((ws.final / "report.json").read_text())
    files = {n: (ws.final / f"{n}.tif").read_bytes() for n in ARRAYS}
    return arrays, report, files


def test_local_run_equals_ray_run_byte_for_byte(big_objects, demo_bundle, demo_pool,
                                                local_demo_pool, tmp_path):
    image, labels = big_objects
    runs = {}
    for name, pool in (("ray", demo_pool), ("local", local_demo_pool)):
        ws = Workspace(_scene(image), tmp_path / name, labels)
        result = run_scene(ws, demo_bundle, RunOptions(tile=128), pool)
        assert not result.reused
        runs[name] = _outputs(ws)
    (ray_arrays, ray_report, ray_files), (arrays, report, files) = runs["ray"], runs["local"]
    for name in ARRAYS:
        np.testing.assert_array_equal(arrays[name], ray_arrays[name], err_msg=name)
        assert files[name] == ray_files[name], f"{name}.tif differs"
    assert arrays[INSTANCE].max() > 1  # instances were stitched across tiles
    for key in VOLATILE:
        report.pop(key), ray_report.pop(key)
    assert report == ray_report
    assert report["tiles"]["computed"] == report["tiles"]["total"] == 9


def test_local_run_resumes_a_killed_runs_tiles(big_objects, tiny_instance_bundle, local_pool,
                                               tmp_path):
    """The completion records a local run writes are what a resumed run trusts."""
    image, _ = big_objects
    ws = Workspace(_scene(image), tmp_path)
    first = run_scene(ws, tiny_instance_bundle, RunOptions(tile=128), local_pool)
    arrays = _outputs(ws)[0]
    # a killed run: the finished scene back to its partial state, report.json not written
    ws.final.rename(ws.partial)
    (ws.partial / "report.json").unlink()
    records = sorted((ws.partial / "tiles").iterdir())
    assert records, "a local run writes completion records"
    again = run_scene(ws, tiny_instance_bundle, RunOptions(tile=128), local_pool)
    tiles = again.report.tiles
    assert tiles.reused == first.report.tiles.total and tiles.computed == 0
    for name, values in _outputs(ws)[0].items():
        np.testing.assert_array_equal(values, arrays[name], err_msg=name)


def test_a_failing_tile_fails_the_scene_and_leaves_nothing(scene_factory, tiny_instance_bundle,
                                                           local_pool, tmp_path, monkeypatch):
    image = scene_factory("local-bad", size=(256, 256), seed=4)[0]
    monkeypatch.setenv("SEGPIPE_FAULT_FAIL_TILE", "local-bad:2")
    ws = Workspace(_scene(image), tmp_path)
    with pytest.raises(Exception, match=r"tile \(1, 0\) failed: injected fault"):
        run_scene(ws, tiny_instance_bundle, RunOptions(tile=128), local_pool)
    assert not ws.final.exists() and not ws.partial.exists()
    assert list(tmp_path.iterdir()) == []  # no batch still running recreated it


def test_thread_blocks_equal_serial_and_copy_shared_arguments():
    seen = []

    def record(item, shared):  # each group gets its own copy of `shared`
        seen.append(id(shared))
        return item * shared["k"]

    items = list(range(50))
    assert ThreadBlocks(3).map(record, items, {"k": 3}) == serial.map(record, items, {"k": 3})
    assert len(set(seen)) > 1


@pytest.mark.parametrize(("options", "expected"), [
    ({}, Executor.LOCAL),
    ({"executor": "ray"}, Executor.RAY),
    ({"ray_address": "10.0.0.5:6379"}, Executor.RAY),
    ({"workers": 2}, Executor.RAY),
    ({"workers": 1}, Executor.LOCAL),
])
def test_auto_runs_small_inputs_locally(scene_factory, options, expected, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr("pipeline.executor.ray_connected", lambda: False)
    image = scene_factory("exec-small", size=(200, 100))[0]
    assert choose_executor(RunOptions(**options), [_scene(image)]) is expected
    assert likely_local([str(image)], RunOptions(**options)) is (expected is Executor.LOCAL)


def test_auto_sends_large_inputs_and_clusters_to_ray(scene_factory, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr("pipeline.executor.ray_connected", lambda: False)
    image = scene_factory("exec-small", size=(200, 100))[0]
    scenes = [_scene(image)] * 3
    assert total_pixels(scenes) == 60_000
    assert choose_executor(RunOptions(), scenes, max_pixels=59_999) is Executor.RAY
    assert choose_executor(RunOptions(executor="local"), scenes, max_pixels=1) is Executor.LOCAL
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    assert choose_executor(RunOptions(), scenes) is Executor.RAY
    assert not likely_local([str(image)], RunOptions())
    assert not likely_local(["s3://bucket/scene.tif"], RunOptions())


def test_unknown_executor_names_the_choices():
    with pytest.raises(ValueError, match="executor"):
        RunOptions(executor="dask")


def test_gpu_worker_without_gpu_is_refused(tiny_bundle):
    import torch

    if torch.cuda.is_available():
        pool = LocalPool(str(tiny_bundle.path), gpus_per_worker=1)
        assert pool.describe()[0]["device"] == "cuda"
        pool.shutdown()
        return
    with pytest.raises(ConfigError, match="--gpus-per-worker 1 needs a GPU"):
        LocalPool(str(tiny_bundle.path), gpus_per_worker=1)


def test_few_tiles_are_spread_over_the_lanes(scene_factory, tiny_bundle, tmp_path, monkeypatch):
    """Two tiles and a batch size of 4: one batch per lane, so a volume planned as two
    windows runs on both cores, not as one batch of two on one lane."""
    image = scene_factory("local-two-tiles", size=(128, 256), seed=5)[0]
    pool = LocalPool(str(tiny_bundle.path), batch_size=4, cores=2)
    batches = []
    run = pool.worker.run

    def counted(store, nodata, grid, indices, **kwargs):
        batches.append(len(indices))
        return run(store, nodata, grid, indices, **kwargs)

    monkeypatch.setattr(pool.worker, "run", counted)
    try:
        result = run_scene(Workspace(_scene(image), tmp_path), tiny_bundle, RunOptions(tile=128),
                           pool)
    finally:
        pool.shutdown()
    assert result.report.tiles.total == 2
    assert batches == [1, 1]
