"""Instances and panoptic maps through the pipeline: stitching, fusion, exports, segments."""

from __future__ import annotations

import json

import numpy as np
import rasterio

from pipeline.options import RunOptions
from pipeline.run import Workspace, run_scene
from pipeline.formats import Scene
from pipeline.store import INSTANCE, PANOPTIC, SEMANTIC, open_store


def _run(image, out, bundle, pool, labels=None, **options):
    scene = Scene(image, image.name.removesuffix(".tif"), "geotiff")
    ws = Workspace(scene, out, labels)
    return ws, run_scene(ws, bundle, RunOptions(**options), pool).report.to_json()


def test_segments_json_agrees_exactly_with_panoptic_tif(scene_factory, tiny_instance_bundle,
                                                        tiny_instance_pool, tmp_path):
    image, labels = scene_factory("pan-seg", size=(700, 600), nodata=0, nodata_fraction=0.05)
    ws, report = _run(image, tmp_path, tiny_instance_bundle, tiny_instance_pool, labels=labels,
                      tile=256)
    segments = json.loads((ws.final / "segments.json").read_text())["segments_info"]
    with rasterio.open(ws.final / "panoptic.tif") as pan_ds, rasterio.open(image) as src:
        pan = pan_ds.read(1)
        assert pan_ds.crs == src.crs and pan_ds.transform == src.transform
        assert pan_ds.overviews(1)
    ids, counts = np.unique(pan[pan > 0], return_counts=True)
    by_id = {s["id"]: s for s in segments}
    assert sorted(by_id) == ids.tolist(), "every segment id present, no extra ones"
    for seg_id, count in zip(ids.tolist(), counts.tolist()):
        seg = by_id[seg_id]
        assert seg["area"] == count
        rows, cols = np.nonzero(pan == seg_id)
        x, y = int(cols.min()), int(rows.min())
        assert seg["bbox"] == [x, y, int(cols.max()) - x + 1, int(rows.max()) - y + 1]
    # nodata stays void; the zarr arrays equal the exports
    group = open_store(ws.final / "scene.zarr")
    semantic = group[SEMANTIC][:]
    assert (pan[semantic == 255] == 0).all()
    np.testing.assert_array_equal(group[PANOPTIC][:], pan)
    with rasterio.open(ws.final / "instance.tif") as inst_ds:
        np.testing.assert_array_equal(inst_ds.read(1), group[INSTANCE][:])
    things = sum(1 for s in segments if s["isthing"])
    assert report["summary"]["instances"] == {"building": things}
    assert set(report["metrics"]) >= {"semantic", "panoptic"}
    assert set(report["metrics"]["panoptic"]) >= {"pq", "sq", "rq", "per_class"}
    assert {"instances_merged_across_tiles", "instances_cut_at_halo", "metrics"} <= set(
        report["seams"])
    assert (ws.final / "quicklook_instances.png").is_file()
