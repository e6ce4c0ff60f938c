"""The stages of one scene, as plain functions over a workspace.

ingest -> plan -> infer -> stitch -> metrics -> export -> report -> publish.
Prefect tasks (``flows/segment_scene.py``) call these one per task; plain
Python can call :func:`run_scene`. Every stage reads and writes the scene's
Zarr store; only small results move between stages.

Atomicity: a scene is built in ``DIR/.<scene_id>.partial/`` and renamed to
``DIR/<scene_id>/`` only when its report is written, so a failed run never
damages a finished scene and ``report.json`` marks a finished one.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.bundle import ModelBundle
from pipeline.config import RunOptions
from pipeline.export import export_cogs
from pipeline.inference.pool import WorkerPool
from pipeline.ingest import IngestResult, ingest_geotiff
from pipeline.io.geotiff import RasterInfo, open_raster
from pipeline.metrics import open_labels, scene_metrics
from pipeline.panoptic import fuse_scene, segment_categories
from pipeline.progress import advance_progress, start_progress
from pipeline.report.quicklook import write_quicklooks
from pipeline.report.writer import render_html, write_json_atomic
from pipeline.scenes import Scene, SceneKind
from pipeline.stitching import InstanceStitcher, relabel_instances
from pipeline.store import (
    INSTANCE, INSTANCE_RAW, PANOPTIC, SEMANTIC, create_label_array, label_dtype, open_store,
)
from pipeline.summary import summarise_semantic
from segcore.errors import InputError
from segcore.geometry.grid import TileGrid
from segcore.receptive_field import halo_for


@dataclass(frozen=True)
class Workspace:
    """Where one scene is built and where it lands."""

    scene: Scene
    out_dir: Path
    labels: Path | None = None

    @property
    def final(self) -> Path:
        return self.out_dir / self.scene.scene_id

    @property
    def partial(self) -> Path:
        return self.out_dir / f".{self.scene.scene_id}.partial"

    @property
    def store(self) -> Path:
        return self.partial / "scene.zarr"


@dataclass(frozen=True)
class TilePlan:
    grid: TileGrid
    halo: int
    tile: int


@dataclass
class SceneState:
    """What the stages learn about a scene (small: no pixels)."""

    workspace: Workspace
    bundle: ModelBundle
    options: RunOptions
    ingest: IngestResult | None = None
    plan: TilePlan | None = None
    tiles_done: int = 0
    stitcher: InstanceStitcher | None = None
    seams: dict = field(default_factory=dict)
    categories: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    metrics: dict | None = None
    exports: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    @property
    def info(self) -> RasterInfo:
        assert self.ingest is not None, "ingest stage has not run"
        return self.ingest.info


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def stage_ingest(state: SceneState) -> None:
    """Validate the input and copy its bands into ``scene.zarr/image``."""
    ws, spec = state.workspace, state.bundle.spec
    if ws.scene.kind is not SceneKind.GEOTIFF:
        raise InputError(str(ws.scene.path), "NIfTI volumes are not supported by this version yet")
    info = open_raster(ws.scene.path)
    bands = state.options.bands or state.bundle.default_bands(info.count)
    if ws.partial.exists():
        shutil.rmtree(ws.partial)
    ws.partial.mkdir(parents=True)
    attrs = {"scene_id": ws.scene.scene_id, "input": str(ws.scene.path), "model": spec.name,
             "classes": [c.model_dump() for c in spec.classes]}
    state.ingest = ingest_geotiff(
        ws.scene.path, ws.store, bands=bands, needed=spec.input.channels,
        image_chunk=state.options.image_chunk, attrs=attrs, info=info,
    )
    state.timings["read"] = state.ingest.seconds


def plan_tiles(shape: tuple[int, int], bundle: ModelBundle, options: RunOptions) -> TilePlan:
    """Tile and halo sizes: options, else the bundle, rounded up to the model stride.

    The default halo is half the model's receptive field (rounded up to the stride),
    which makes tiled output equal whole-scene output for a convolutional model.
    """
    spec = bundle.spec
    stride = spec.stride
    tile = _round_up(options.tile or spec.tile, stride)
    if options.overlap is not None:
        halo = options.overlap
    elif spec.overlap is not None:
        halo = spec.overlap
    elif spec.receptive_field is not None:
        halo = halo_for(spec.receptive_field, stride)
    else:
        halo = tile // 4
    halo = _round_up(halo, stride)
    grid = TileGrid.create(shape, tile, halo, align=stride)
    return TilePlan(grid=grid, halo=halo, tile=tile)


def stage_infer(state: SceneState, pool: WorkerPool) -> None:
    """Run the model actors over every tile; each writes its own core chunks."""
    start = time.perf_counter()
    state.plan = plan_tiles(state.info.shape, state.bundle, state.options)
    grid = state.plan.grid
    dtype, nodata = label_dtype(state.bundle.spec.num_classes)
    group = open_store(state.workspace.store, mode="r+")
    create_label_array(group, SEMANTIC, dtype=dtype, fill_value=nodata, chunks=grid.chunks)
    if "instance" in state.bundle.spec.heads:
        raw = create_label_array(group, INSTANCE_RAW, dtype=np.dtype("uint64"), fill_value=0,
                                 chunks=grid.chunks)
        state.stitcher = InstanceStitcher(raw)
    sid = state.workspace.scene.scene_id
    start_progress(sid, "infer", len(grid))
    outcomes = pool.run(str(state.workspace.store), nodata, grid,
                        progress=lambda n: advance_progress(sid, "infer", n),
                        on_outcomes=state.stitcher.add if state.stitcher else None)
    state.tiles_done = len({o.index for o in outcomes})
    state.timings["infer"] = time.perf_counter() - start


def stage_stitch(state: SceneState) -> None:
    """Check the mosaic is complete, stitch instances across tiles, total the classes.

    Semantic tiles need no merging (each worker wrote its own cores). Instances
    are matched in the halo overlaps and renumbered 1..M scene-wide, chunk by chunk.
    """
    start = time.perf_counter()
    assert state.plan is not None
    expected = len(state.plan.grid)
    if state.tiles_done != expected:
        raise RuntimeError(
            f"{state.workspace.scene.path}: only {state.tiles_done} of {expected} tiles finished"
        )
    group = open_store(state.workspace.store, mode="r+")
    chunks = state.plan.grid.chunks
    instance = create_label_array(group, INSTANCE, dtype=np.dtype("uint32"), fill_value=0,
                                  chunks=chunks)
    if state.stitcher is not None:
        plan = state.stitcher.plan()
        relabel_instances(group[INSTANCE_RAW], instance, plan)
        state.stitcher = None
        st = plan.stats
        state.seams = {"instances_merged_across_tiles": st.n_merged, "merges": st.n_merges,
                       "instances_cut_at_halo": st.n_cut_at_halo, "tile_pieces": st.n_input_ids}
    totals = summarise_semantic(group[SEMANTIC], state.info, state.bundle.spec.num_classes)
    state.summary = {"classes": totals.to_dict(state.bundle.spec.class_names), "instances": {},
                     "nodata_pixels": totals.nodata_pixels}
    state.timings["stitch"] = time.perf_counter() - start


def _class_rows(spec) -> list[tuple[int, str, bool]]:
    return [(c.id, c.name, c.isthing) for c in sorted(spec.classes, key=lambda c: c.id)]


def stage_panoptic(state: SceneState) -> None:
    """Fuse semantic + instance into ``panoptic`` and ``segments.json``."""
    start = time.perf_counter()
    spec = state.bundle.spec
    group = open_store(state.workspace.store, mode="r+")
    _, nodata = label_dtype(spec.num_classes)
    plan, segments = fuse_scene(group, SEMANTIC, INSTANCE, _class_rows(spec), nodata=nodata,
                                min_stuff_area=spec.min_stuff_area)
    state.categories = segment_categories(plan)
    write_json_atomic(state.workspace.partial / "segments.json",
                      {"segments_info": segments, "categories": [
                          {"id": c.id, "name": c.name, "isthing": int(c.isthing)}
                          for c in spec.classes]})
    counts = {c.name: 0 for c in spec.classes if c.isthing}
    for seg in segments:
        if seg["isthing"]:
            counts[seg["category"]] = counts.get(seg["category"], 0) + 1
    state.summary["instances"] = counts
    state.timings["panoptic"] = time.perf_counter() - start


def stage_metrics(state: SceneState) -> None:
    """Metrics against the scene's label file, when there is one."""
    start = time.perf_counter()
    labels = state.workspace.labels
    if labels is not None:
        assert state.plan is not None
        info = open_labels(labels, state.info)
        group = open_store(state.workspace.store)
        metrics = scene_metrics(
            group[SEMANTIC], group[PANOPTIC], group, info,
            classes=_class_rows(state.bundle.spec), pred_categories=state.categories,
            seam_tile=state.plan.grid.tile[:2], seam_width=max(state.plan.halo, 1),
        )
        state.seams["metrics"] = metrics.pop("seams")
        state.metrics = {**metrics, "labels": str(labels)}
    state.timings["metrics"] = time.perf_counter() - start


def stage_export(state: SceneState) -> None:
    """COG exports on the input's grid."""
    start = time.perf_counter()
    group = open_store(state.workspace.store)
    _, nodata = label_dtype(state.bundle.spec.num_classes)
    state.exports = export_cogs(group, [SEMANTIC, INSTANCE, PANOPTIC], state.info,
                                state.workspace.partial,
                                {SEMANTIC: nodata, INSTANCE: 0, PANOPTIC: 0})
    state.timings["export"] = time.perf_counter() - start


def build_report(state: SceneState) -> dict:
    ws, plan = state.workspace, state.plan
    assert plan is not None
    timings = {k: round(state.timings.get(k, 0.0), 4)
               for k in ("read", "infer", "stitch", "panoptic", "metrics", "export")}
    timings["total"] = round(time.perf_counter() - state.started, 4)
    return {
        "scene_id": ws.scene.scene_id, "input": str(ws.scene.path), "kind": ws.scene.kind.value,
        "shape": list(state.info.shape), "model": state.bundle.name,
        "tiles": {"total": len(plan.grid), "computed": state.tiles_done, "reused": 0,
                  "retried": 0, "tile": plan.tile, "halo": plan.halo},
        "timings_s": timings,
        "summary": state.summary,
        "metrics": state.metrics,
        "seams": state.seams,
        "outputs": {**state.exports, "zarr": "scene.zarr"},
        "bands": list(state.ingest.bands) if state.ingest else None,
        "crs": state.info.crs_wkt,
        "transform": list(state.info.transform),
    }


def stage_report(state: SceneState) -> dict:
    """Quicklooks, ``report.html``, then ``report.json`` (last, atomically)."""
    ws, spec = state.workspace, state.bundle.spec
    group = open_store(ws.store)
    colors = [c.color for c in sorted(spec.classes, key=lambda c: c.id)]
    images = write_quicklooks(group, group[SEMANTIC], colors, ws.partial,
                              state.options.quicklook_size)
    report = build_report(state)
    report["outputs"].update(images, segments="segments.json")
    (ws.partial / "report.html").write_text(
        render_html(report, dict(zip(spec.class_names, colors)), images))
    write_json_atomic(ws.partial / "report.json", report)
    return report


def publish(workspace: Workspace) -> Path:
    """Swap the finished scene into place; a previous result is replaced only now."""
    final, partial = workspace.final, workspace.partial
    if final.exists():
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        final.rename(old)
        partial.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        partial.rename(final)
    return final


def discard(workspace: Workspace) -> None:
    """Remove a failed scene's partial work (a finished result stays untouched)."""
    shutil.rmtree(workspace.partial, ignore_errors=True)


StageCall = Callable[..., Any]


def _direct(stage: Callable[..., Any], *args: Any) -> Any:
    return stage(*args)


def run_scene(workspace: Workspace, bundle: ModelBundle, options: RunOptions,
              pool: WorkerPool, *, call: StageCall = _direct) -> dict:
    """Run every stage, then publish the scene; returns the report.

    ``call(stage, *args)`` runs one stage: directly in plain Python, or as an
    orchestrator's task (the Prefect flow passes one that maps stages to tasks).
    On any failure the partial work is discarded and the error propagates.
    """
    state = SceneState(workspace, bundle, options)
    try:
        call(stage_ingest, state)
        call(stage_infer, state, pool)
        call(stage_stitch, state)
        call(stage_panoptic, state)
        call(stage_metrics, state)
        call(stage_export, state)
        report = call(stage_report, state)
    except BaseException:
        discard(workspace)
        raise
    publish(workspace)
    return report
