"""Labels never cost a segmentation: metrics of finished scenes without re-inference,
label files checked before inference, and the segpipe version in the fingerprint.

Real GeoTIFFs, Zarr and the in-process model pool (no Ray needed for one small scene).
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from pipeline.formats import Scene
from pipeline.inference.local_pool import LocalPool
from pipeline.options import RunOptions
from pipeline.run import Workspace, resume, run_scene
from pipeline.run.resume import labels_digest

SIZE = (300, 260)


@pytest.fixture(scope="module")
def pools(tiny_bundle, tiny_instance_bundle):
    made = {"semantic": (tiny_bundle, LocalPool(str(tiny_bundle.path), cores=2)),
            "instances": (tiny_instance_bundle,
                          LocalPool(str(tiny_instance_bundle.path), cores=2))}
    yield made
    for _, pool in made.values():
        pool.shutdown()


def _run(image, out, model, labels=None, **options):
    bundle, pool = model
    ws = Workspace(Scene(image, "scene", "geotiff"), out, labels)
    return ws, run_scene(ws, bundle, RunOptions(tile=128, **options), pool)


def _other_labels(src, dst):
    """The same grid, other content: every labelled class id moved on by one."""
    with rasterio.open(src) as f:
        profile, data = f.profile, f.read()
    data[0] = np.where(data[0] < 4, data[0] + 1, data[0])
    with rasterio.open(dst, "w", **profile) as f:
        f.write(data)
    return dst


@pytest.mark.parametrize("kind", ["semantic", "instances"])
def test_labels_added_later_are_measured_without_inference(scene_factory, pools, tmp_path,
                                                           kind):
    image, labels = scene_factory("later", size=SIZE)
    ws, first = _run(image, tmp_path / "out", pools[kind])
    assert first.report.metrics is None
    export = ws.final / first.report.outputs["semantic"]
    inode = export.stat().st_ino
    _, later = _run(image, tmp_path / "out", pools[kind], labels=labels)
    report = later.report
    assert not later.reused
    assert report.tiles.computed == 0 and report.tiles.reused == report.tiles.total
    assert report.scores is not None and report.metrics.labels_digest == labels_digest(labels)
    assert report.fingerprint == first.report.fingerprint
    assert report.summary == first.report.summary
    assert export.stat().st_ino == inode  # the export was carried over, not rewritten
    assert not ws.partial.exists()
    # the same metrics as a run that had the labels from the start
    _, fresh = _run(image, tmp_path / "fresh", pools[kind], labels=labels)
    assert report.to_json()["metrics"] == fresh.report.to_json()["metrics"]
    assert report.seams == fresh.report.seams


def test_changed_labels_get_new_metrics_and_same_labels_are_reused(scene_factory, pools,
                                                                  tmp_path):
    image, labels = scene_factory("changed", size=SIZE)
    truth = tmp_path / "truth.tif"
    truth.write_bytes(labels.read_bytes())
    _, first = _run(image, tmp_path / "out", pools["semantic"], labels=truth)
    _other_labels(labels, truth)  # same path, new content
    _, second = _run(image, tmp_path / "out", pools["semantic"], labels=truth)
    assert second.report.tiles.computed == 0 and not second.reused
    assert second.report.metrics.labels_digest != first.report.metrics.labels_digest
    assert second.report.scores.semantic != first.report.scores.semantic
    _, third = _run(image, tmp_path / "out", pools["semantic"], labels=truth)
    assert third.reused and third.report == second.report
    # labels left out: the finished result (with its metrics) is reused as it is
    _, fourth = _run(image, tmp_path / "out", pools["semantic"])
    assert fourth.reused and fourth.report == second.report


def test_a_new_segpipe_version_recomputes(scene_factory, pools, tmp_path, monkeypatch):
    image, _ = scene_factory("version", size=SIZE)
    _, first = _run(image, tmp_path / "out", pools["semantic"])
    monkeypatch.setattr(resume, "segpipe_version", lambda: "999.0")
    _, second = _run(image, tmp_path / "out", pools["semantic"])
    assert not second.reused and second.report.fingerprint != first.report.fingerprint
    assert second.report.tiles.computed == second.report.tiles.total


def test_labels_on_another_grid_are_refused_before_inference(scene_factory, pools, tmp_path,
                                                             monkeypatch):
    image, _ = scene_factory("grid", size=SIZE)
    _, other = scene_factory("grid-other", size=(SIZE[0] - 20, SIZE[1]))
    from pipeline.formats.geotiff import GeoTiffFormat

    events = []
    check, infer = GeoTiffFormat.check_labels, LocalPool.run

    def checked(self, *args, **kwargs):
        events.append("check labels")
        return check(self, *args, **kwargs)

    def inferred(self, *args, **kwargs):
        events.append("infer")
        return infer(self, *args, **kwargs)

    monkeypatch.setattr(GeoTiffFormat, "check_labels", checked)
    monkeypatch.setattr(LocalPool, "run", inferred)
    ws, result = _run(image, tmp_path / "out", pools["semantic"], labels=other)
    error = result.report.metrics_error
    assert error.startswith(str(other)) and "share one grid" in error and "\n" not in error
    assert result.report.scores is None and (ws.final / "semantic.tif").is_file()
    assert result.report.tiles.computed == result.report.tiles.total
    assert events[0] == "check labels" and "infer" in events


def _truncated(src, dst):
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) * 2 // 3])
    return dst


def _corrupt_block(src, dst):
    """A sound header and a garbled compressed block: found only when pixels are read."""
    with rasterio.open(src) as f:
        offset = int(f.get_tag_item("BLOCK_OFFSET_0_0", "TIFF", bidx=1))
        size = int(f.get_tag_item("BLOCK_SIZE_0_0", "TIFF", bidx=1))
    data = bytearray(src.read_bytes())
    data[offset + 2: offset + size - 2] = (bytes(range(256)) * size)[: size - 4]
    dst.write_bytes(bytes(data))
    return dst


@pytest.mark.parametrize(("damage", "expected"), [(_truncated, "truncated"),
                                                  (_corrupt_block, "cannot read the labels")])
def test_damaged_labels_keep_the_segmentation(scene_factory, pools, tmp_path, damage,
                                              expected):
    image, labels = scene_factory("broken", size=SIZE)
    bad = damage(labels, tmp_path / "bad.tif")
    ws, result = _run(image, tmp_path / "out", pools["semantic"], labels=bad)
    error = result.report.metrics_error
    assert error is not None and error.startswith(str(bad)) and expected in error, error
    assert "\n" not in error
    assert (ws.final / "semantic.tif").is_file() and not ws.partial.exists()
    assert result.report.tiles.computed == result.report.tiles.total
    # good labels for the same scene: measured now, without inference
    _, good = _run(image, tmp_path / "out", pools["semantic"], labels=labels)
    assert good.report.scores is not None and good.report.tiles.computed == 0


def test_volume_labels_added_later_are_measured_without_inference(tmp_path):
    """NIfTI: the label file is copied into the store and HD95 computed on reopening."""
    from tests.pipeline.formats.cases import CASES, spot_bundle, spot_data

    case = CASES["nifti"]
    data, spots = spot_data(case, seed=5)
    image = case.write(tmp_path / "vol.nii.gz", data)
    truth = spots.astype(np.int16)
    truth[:2] = 0  # not quite the prediction
    labels = case.write(tmp_path / "vol_labels.nii.gz", truth)
    bundle = spot_bundle(tmp_path / "spot", 3)
    pool = LocalPool(str(bundle.path), cores=2)
    try:
        def run(out, labels=None):
            ws = Workspace(Scene(image, "vol", "nifti"), out, labels)
            return run_scene(ws, bundle, RunOptions(tile=case.tile), pool).report

        assert run(tmp_path / "out").metrics is None
        later = run(tmp_path / "out", labels)
        fresh = run(tmp_path / "fresh", labels)
    finally:
        pool.shutdown()
    assert later.tiles.computed == 0 and later.scores.surface is not None
    assert later.to_json()["metrics"] == fresh.to_json()["metrics"]
