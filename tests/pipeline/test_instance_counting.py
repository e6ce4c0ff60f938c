"""A model with instances: the class totals the tile workers count and the fusion
statistics the centre pass gathers equal the block passes over the stored arrays, which
then do not run (on Ray and in-process)."""

from __future__ import annotations

import json

import pytest

from pipeline.formats import Scene, format_of
from pipeline.inference.local_pool import LocalPool
from pipeline.options import RunOptions
from pipeline.run import Workspace, run_scene
from pipeline.store import INSTANCE, SEMANTIC, VALID, open_store, semantic_dtype
from pipeline.streaming.panoptic import fusion_stats
from segcore.panoptic.fusion import decide, segments_table


@pytest.mark.parametrize("where", ["ray", "local"])
def test_totals_and_segments_without_reading_the_labels_back(
        scene_factory, demo_bundle, demo_pool, tmp_path, monkeypatch, where):
    def no_pass(*args, **kwargs):
        raise AssertionError("a pass read the labels back")

    # Web Mercator: pixel areas differ from row to row; nodata at the edges
    image, _ = scene_factory("inst-counted", size=(600, 700), seed=5, crs="EPSG:3857",
                             nodata=0, nodata_fraction=0.05)
    scene = Scene(image, "inst-counted", "geotiff")
    pool = demo_pool if where == "ray" else LocalPool(str(demo_bundle.path), cores=2)
    try:
        with monkeypatch.context() as m:
            m.setattr(type(format_of(scene)), "summarise", no_pass)
            m.setattr("pipeline.streaming.panoptic.fusion_stats", no_pass)
            ws = Workspace(scene, tmp_path)
            report = run_scene(ws, demo_bundle, RunOptions(tile=256), pool).report.to_json()
    finally:
        if where == "local":
            pool.shutdown()
    group, spec, fmt = open_store(ws.final / "scene.zarr"), demo_bundle.spec, format_of(scene)
    ingested = type("I", (), {"info": fmt.open(image)})()
    totals = fmt.summarise(group[SEMANTIC], ingested, spec.num_classes)
    assert report["summary"]["classes"] == totals.to_dict(spec.class_names)  # bit for bit
    _, nodata = semantic_dtype(spec.num_classes)
    stats = fusion_stats(group[SEMANTIC], group[INSTANCE], group[VALID], nodata=nodata,
                         block=group[SEMANTIC].chunks)
    segments = segments_table(decide(stats, spec.class_rows, min_stuff_area=spec.min_stuff_area))
    assert json.loads((ws.final / "segments.json").read_text())["segments_info"] == segments
    assert sum(s["isthing"] for s in segments) > 5 and report["summary"]["nodata_pixels"] > 0
    assert report["seams"]["instances_merged_across_tiles"] > 0  # objects across tile cores
