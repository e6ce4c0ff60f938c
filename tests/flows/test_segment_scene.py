"""The Prefect flows under the test harness, with the bundled demo-satellite model."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import rasterio
import torch
from torchmetrics.classification import MulticlassF1Score, MulticlassJaccardIndex

from flows.segment_scene import segment_batch, segment_scene
from pipeline.options import RunOptions
from pipeline.run import Workspace
from pipeline.formats import Scene
from pipeline.store import SEMANTIC, VALID, open_store


def _scene(path, sid=None):
    return Scene(path, sid or path.name.removesuffix(".tif"), "geotiff")


def test_segment_scene_runs_one_task_per_stage(scene_factory, demo_bundle, demo_pool, tmp_path,
                                               prefect_harness):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    image, _ = scene_factory("flow-stages", size=(400, 400))
    ws = Workspace(_scene(image), tmp_path)
    state = segment_scene(ws, demo_bundle, RunOptions(tile=256), demo_pool, return_state=True)
    assert state.is_completed()
    result = state.result()
    assert result.path == ws.final / "report.json" and result.path.is_file()
    assert result.report.tiles.total == 4 and not result.reused
    flow_run_id = state.state_details.flow_run_id
    stages = {"ingest", "infer", "stitch", "panoptic", "metrics", "export", "report"}
    deadline = time.monotonic() + 30
    with get_client(sync_client=True) as client:
        while True:  # task runs are recorded from events, asynchronously
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            names = {r.name.rsplit("-", 1)[0] for r in runs}
            done = all(r.state and r.state.is_completed() for r in runs)
            if (stages <= names and done) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    assert stages <= names
    assert done


def test_tiled_output_equals_single_tile_run(scene_factory, demo_bundle, demo_pool, tmp_path,
                                             prefect_harness):
    """Acceptance: 2048 x 2048, --tile 256 vs one tile (--tile 4096): >= 99.99 % of the
    semantic pixels agree, the panoptic maps have PQ >= 0.99, no instance that is whole
    in the single-tile run is split in the tiled one, and the instance ids themselves
    agree (one scene-wide centre list: the same ids, not only the same objects)."""
    from segcore.panoptic.quality import PanopticAccumulator, panoptic_quality

    image, _ = scene_factory("seamless", size=(2048, 2048), seed=11)
    scenes = [_scene(image)]
    outputs, categories = {}, {}
    for tile in (256, 4096):
        out = tmp_path / f"tile{tile}"
        result = segment_batch(scenes, demo_bundle, RunOptions(tile=tile), out, pool=demo_pool)
        assert result.failed == 0
        report = json.loads((out / "seamless" / "report.json").read_text())
        assert report["tiles"]["total"] == (64 if tile == 256 else 1)
        group = open_store(out / "seamless" / "scene.zarr")
        outputs[tile] = {name: group[name][:] for name in (SEMANTIC, "instance", "panoptic")}
        segments = json.loads((out / "seamless" / "segments.json").read_text())["segments_info"]
        categories[tile] = {s["id"]: s["category_id"] for s in segments}
    tiled, whole = outputs[256], outputs[4096]
    agree = float((tiled[SEMANTIC] == whole[SEMANTIC]).mean())
    print(f"seamless agreement tile 256 vs single tile: {agree:.6%}")
    assert agree >= 0.9999
    # panoptic: tiled measured against the single-tile run
    acc = PanopticAccumulator()
    acc.add(tiled["panoptic"], whole["panoptic"])
    names = dict(enumerate(demo_bundle.spec.class_names))
    things = [c.id for c in demo_bundle.spec.classes if c.isthing]
    pq = panoptic_quality(acc, categories[256], categories[4096], names, thing_ids=things)
    print(f"panoptic quality tile 256 vs single tile: PQ {pq.pq:.6f}")
    assert pq.pq >= 0.99
    same_ids = float((tiled["instance"] == whole["instance"]).mean())
    print(f"instance ids equal tile 256 vs single tile: {same_ids:.6%}")
    assert same_ids >= 0.9999
    # the scene exercises seams: many single-run instances straddle tile borders
    inside = whole["instance"] > 0
    rows, cols = np.nonzero(inside)
    ids = whole["instance"][inside]
    tiles_of = rows // 256 * 8 + cols // 256
    per_id = np.unique(np.stack([ids, tiles_of]), axis=1)[0]
    straddling = int((np.unique(per_id, return_counts=True)[1] > 1).sum())
    print(f"single-tile instances straddling 256-px tile borders: {straddling}")
    assert straddling >= 20
    # no whole object split: each single-run instance meets exactly one tiled id
    pairs = np.unique(np.stack([whole["instance"][inside], tiled["instance"][inside]]), axis=1)
    pairs = pairs[:, pairs[1] > 0]
    split = np.unique(pairs[0], return_counts=True)[1] > 1
    assert not split.any(), f"{int(split.sum())} single-tile instances split by tiling"


def test_metrics_equal_torchmetrics(scene_factory, demo_bundle, demo_pool, tmp_path,
                                    prefect_harness):
    image, labels = scene_factory("metrics", size=(512, 640), seed=21, nodata=0,
                                  nodata_fraction=0.05)
    ws = Workspace(_scene(image), tmp_path, labels)
    report = segment_scene(ws, demo_bundle, RunOptions(tile=256), demo_pool).report.to_json()
    group = open_store(ws.final / "scene.zarr")
    pred = group[SEMANTIC][:].astype(np.int64)
    valid = group[VALID][:]
    with rasterio.open(labels) as src:
        truth = src.read(1).astype(np.int64)
        unlabelled = 255 if src.dtypes[0] == "uint8" else 65535
    # torchmetrics on the same arrays: input nodata left out, unlabelled as ignore_index
    t = np.where(valid, truth, unlabelled)
    p, t = torch.from_numpy(pred.ravel()), torch.from_numpy(t.ravel())
    k = demo_bundle.spec.num_classes
    common = {"num_classes": k, "ignore_index": unlabelled}
    iou = MulticlassJaccardIndex(average=None, **common)(p, t).numpy()
    f1 = MulticlassF1Score(average=None, **common)(p, t).numpy()
    sem = report["metrics"]["semantic"]
    present = set(np.unique(pred[valid])) | set(np.unique(truth[valid & (truth != unlabelled)]))
    for i, name in enumerate(demo_bundle.spec.class_names):
        if i in present:
            assert sem["per_class"][name]["iou"] == pytest.approx(float(iou[i]), abs=1e-6)
            assert sem["per_class"][name]["dice"] == pytest.approx(float(f1[i]), abs=1e-6)
        else:
            assert sem["per_class"][name]["iou"] is None
    miou = MulticlassJaccardIndex(average="macro", **common)(p, t).item()
    dice = MulticlassF1Score(average="macro", **common)(p, t).item()
    assert sem["miou"] == pytest.approx(miou, abs=1e-6)
    assert sem["dice"] == pytest.approx(dice, abs=1e-6)
    assert sem["miou"] > 0.5
