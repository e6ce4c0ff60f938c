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
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.bundle import ModelBundle, ModelFormat, load_bundle
from pipeline.options import RunOptions
from pipeline.formats.geotiff_export import export_cogs
from pipeline.inference.pool import WorkerPool
from pipeline.inference.records import read_records
from pipeline.formats.geotiff_ingest import IngestResult, ingest_geotiff
from pipeline.io.geotiff import RasterInfo, open_raster
from pipeline.streaming.metrics import open_labels, scene_metrics
from pipeline.streaming.panoptic import fuse_scene, segment_categories
from pipeline.progress import advance_progress, start_progress
from pipeline.report.quicklook import write_quicklooks
from pipeline.atomic import write_json_atomic
from pipeline.report.writer import render_html
from pipeline.discovery import Scene, SceneKind
from pipeline.streaming.stitching import InstanceStitcher, relabel_instances
from pipeline.store import (
    INSTANCE, INSTANCE_RAW, PANOPTIC, SEMANTIC, VALID, create_label_array, semantic_dtype,
    open_store,
)
from pipeline.run.resume import finished_report, mark_ingested, partial_matches, run_fingerprint
from pipeline.spacing import decide_spacing
from pipeline.streaming.summary import summarise_semantic, summarise_volume
from segcore.errors import InputError
from segcore.geometry.grid import TileGrid
from segcore.receptive_field import halo_for, measure


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


TILE_RECORDS = "tiles"  # completion records of the partial scene, one file per tile


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
    volume: Any = None  # pipeline.formats.nifti_volume.VolumeIngest for NIfTI scenes
    plan: TilePlan | None = None
    tiles_done: int = 0
    tiles_reused: int = 0
    tiles_retried: int = 0
    tiles_skipped: int = 0
    fingerprint: str = ""
    resumed: bool = False  # a killed run's ingest and finished tiles are reused
    stitcher: InstanceStitcher | None = None
    seams: dict = field(default_factory=dict)
    categories: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    metrics: dict | None = None
    exports: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    @property
    def is_volume(self) -> bool:
        return self.workspace.scene.kind is SceneKind.NIFTI

    @property
    def info(self) -> RasterInfo:
        assert self.ingest is not None, "ingest stage has not run"
        return self.ingest.info

    @property
    def infer_store(self) -> Path:
        """The group the model runs on (a NIfTI scene's resampled ``model`` subgroup)."""
        if self.volume is not None:
            from pipeline.formats.nifti_volume import inference_store

            return inference_store(self.workspace.store, self.volume)
        return self.workspace.store

    @property
    def infer_shape(self) -> tuple[int, ...]:
        if self.volume is not None:
            return self.volume.model_shape
        return self.info.shape


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _check_dimensions(state: SceneState) -> None:
    spec, path = state.bundle.spec, str(state.workspace.scene.path)
    want = 3 if state.is_volume else 2
    if spec.ndim != want:
        what = "a NIfTI volume needs a 3-D model" if state.is_volume else \
            "a GeoTIFF scene needs a 2-D model"
        raise InputError(path, f"model '{spec.name}' is {spec.ndim}-D; {what}")


def _ingest_volume(state: SceneState, attrs: dict) -> None:
    from pipeline.io.nifti import open_volume
    from pipeline.formats.nifti_volume import ingest_volume

    ws, spec, opts = state.workspace, state.bundle.spec, state.options
    info = open_volume(ws.scene.path)
    decision = decide_spacing(str(ws.scene.path), info.spacing, spec.spacing,
                              policy=opts.spacing, tolerance=spec.spacing_tolerance,
                              model_name=spec.name)
    channels = opts.bands or state.bundle.default_bands(info.channels)
    scale = spec.input.value_scale
    if decision.resample and scale.get(info.dtype) != scale.get("float32"):
        raise InputError(
            str(ws.scene.path),
            f"needs resampling to {decision.target} mm, which makes it float32, but model "
            f"'{spec.name}' scales {info.dtype} ({scale.get(info.dtype)}) and float32 "
            f"({scale.get('float32')}) samples differently; use --spacing ignore or refuse")
    state.volume = ingest_volume(info, ws.store, channels=channels, needed=spec.input.channels,
                                 chunk=opts.volume_chunk, attrs=attrs, spacing=decision,
                                 copy=not state.resumed)
    state.timings["read"] = state.volume.seconds


def _prepare_partial(state: SceneState) -> None:
    """Reuse a killed run's partial directory when its ingest matches; else start clean."""
    ws = state.workspace
    state.resumed = state.options.resume and partial_matches(ws.partial, state.fingerprint)
    if not state.resumed:
        if ws.partial.exists():
            shutil.rmtree(ws.partial)
        ws.partial.mkdir(parents=True)


def stage_ingest(state: SceneState) -> None:
    """Validate the input and copy its bands (channels) into ``scene.zarr/image``.

    A killed run's ingest is reused when its fingerprint matches (``resume``).
    """
    ws, spec = state.workspace, state.bundle.spec
    _check_dimensions(state)
    attrs = {"scene_id": ws.scene.scene_id, "input": str(ws.scene.path), "model": spec.name,
             "classes": [c.model_dump() for c in spec.classes]}
    if state.is_volume:
        _prepare_partial(state)
        _ingest_volume(state, attrs)
    else:
        info = open_raster(ws.scene.path)
        bands = state.options.bands or state.bundle.default_bands(info.count)
        _prepare_partial(state)
        if state.resumed:
            state.ingest = IngestResult(info=info, bands=tuple(bands), seconds=0.0)
        else:
            state.ingest = ingest_geotiff(
                ws.scene.path, ws.store, bands=bands, needed=spec.input.channels,
                image_chunk=state.options.image_chunk, attrs=attrs, info=info,
            )
        state.timings["read"] = state.ingest.seconds
    if not state.resumed:
        mark_ingested(ws.partial, state.fingerprint)


@lru_cache(maxsize=16)
def _measured_receptive_field(path: str, mtime_ns: int) -> int:
    bundle = load_bundle(path)
    net = bundle.build()
    declared = int(getattr(net, "receptive_field", 0) or 0)
    if declared or bundle.spec.format is ModelFormat.STATE_DICT:
        return declared
    try:  # TorchScript / torch.export: structure unknown, probe it
        return int(measure(net, bundle.spec.input.channels, ndim=bundle.spec.ndim) or 0)
    except Exception:  # noqa: BLE001 - a model that cannot be probed gets the default halo
        return 0


def receptive_field_of(bundle: ModelBundle) -> int:
    """The bundle's receptive field: declared in ``model.yaml``, else the architecture's
    analytic value, else measured by a gradient probe (0 = unknown or global)."""
    if bundle.spec.receptive_field is not None:
        return bundle.spec.receptive_field
    weights = bundle.weights_path
    return _measured_receptive_field(str(bundle.path), weights.stat().st_mtime_ns)


def plan_tiles(shape: tuple[int, ...], bundle: ModelBundle, options: RunOptions) -> TilePlan:
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
    elif (rf := receptive_field_of(bundle)) > 0:
        halo = halo_for(rf, stride)
    else:  # global models (attention): no finite receptive field
        halo = tile // 4
    halo = _round_up(halo, stride)
    grid = TileGrid.create(shape, tile, halo, align=stride)
    return TilePlan(grid=grid, halo=halo, tile=tile)


def _label_array(group, name: str, *, reuse: bool, **kwargs):
    """The existing array when resuming (its finished tiles are kept), else a new one."""
    if reuse and name in group:
        return group[name]
    return create_label_array(group, name, **kwargs)


def stage_infer(state: SceneState, pool: WorkerPool) -> None:
    """Run the model actors over every tile; each writes its own core chunks.

    Tiles with a completion record from a killed run are reused (``resume``);
    their records feed the instance stitcher as if they had just finished.
    """
    start = time.perf_counter()
    state.plan = plan_tiles(state.infer_shape, state.bundle, state.options)
    grid = state.plan.grid
    dtype, nodata = semantic_dtype(state.bundle.spec.num_classes)
    group = open_store(state.infer_store, mode="r+")
    reuse = state.resumed
    _label_array(group, SEMANTIC, reuse=reuse, dtype=dtype, fill_value=nodata,
                 chunks=grid.chunks)
    if "instance" in state.bundle.spec.heads:
        raw = _label_array(group, INSTANCE_RAW, reuse=reuse, dtype=np.dtype("uint64"),
                           fill_value=0, chunks=grid.chunks)
        state.stitcher = InstanceStitcher(raw)
    records_dir = state.workspace.partial / TILE_RECORDS
    if not reuse:
        shutil.rmtree(records_dir, ignore_errors=True)
    records_dir.mkdir(exist_ok=True)
    flats = {int(np.ravel_multi_index(t.index, grid.grid_shape)): t.index for t in grid}
    reused = {f: o for f, o in read_records(records_dir).items()
              if reuse and f in flats and o.index == flats[f]}
    if state.stitcher is not None and reused:
        state.stitcher.add(list(reused.values()))
    sid = state.workspace.scene.scene_id
    start_progress(sid, "infer", len(grid))
    advance_progress(sid, "infer", len(reused))
    todo = [index for f, index in flats.items() if f not in reused]
    outcomes = pool.run(str(state.infer_store), nodata, grid,
                        progress=lambda n: advance_progress(sid, "infer", n),
                        on_outcomes=state.stitcher.add if state.stitcher else None,
                        indices=todo, records=str(records_dir), scene_id=sid)
    state.tiles_reused = len(reused)
    state.tiles_done = len({o.index for o in outcomes})
    state.tiles_retried = sum(o.retried for o in outcomes)
    state.tiles_skipped = sum(o.skipped for o in outcomes)
    state.timings["infer"] = time.perf_counter() - start


def stage_stitch(state: SceneState) -> None:
    """Check the mosaic is complete, stitch instances across tiles, total the classes.

    Semantic tiles need no merging (each worker wrote its own cores). Instances
    are matched in the halo overlaps and renumbered 1..M scene-wide, chunk by chunk.
    """
    start = time.perf_counter()
    assert state.plan is not None
    expected = len(state.plan.grid)
    if state.tiles_done + state.tiles_reused != expected:
        raise RuntimeError(
            f"{state.workspace.scene.path}: only {state.tiles_done + state.tiles_reused} of "
            f"{expected} tiles finished"
        )
    group = open_store(state.infer_store, mode="r+")
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
    group = open_store(state.workspace.store, mode="r+")
    names = state.bundle.spec.class_names
    k = state.bundle.spec.num_classes
    if state.volume is not None:
        if state.volume.resampled:
            from pipeline.formats.nifti_volume import resample_back

            native_chunks = group[VALID].chunks
            for name in (SEMANTIC, INSTANCE):
                resample_back(group, name, chunks=native_chunks)
        totals = summarise_volume(group[SEMANTIC], state.volume.info.spacing, k)
        classes = totals.to_dict(names, unit="volume_ml")
    else:
        totals = summarise_semantic(group[SEMANTIC], state.info, k)
        classes = totals.to_dict(names)
    state.summary = {"classes": classes, "instances": {}, "nodata_pixels": totals.nodata_pixels}
    state.timings["stitch"] = time.perf_counter() - start


def _class_rows(spec) -> list[tuple[int, str, bool]]:
    return [(c.id, c.name, c.isthing) for c in sorted(spec.classes, key=lambda c: c.id)]


def stage_panoptic(state: SceneState) -> None:
    """Fuse semantic + instance into ``panoptic`` and ``segments.json``."""
    start = time.perf_counter()
    spec = state.bundle.spec
    group = open_store(state.workspace.store, mode="r+")
    _, nodata = semantic_dtype(spec.num_classes)
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


def _seam_tile(state: SceneState) -> tuple[int, ...]:
    """Tile-core size on the stored grid (a resampled volume's tiles scaled back)."""
    assert state.plan is not None
    tile = state.plan.grid.tile
    if state.volume is not None and state.volume.resampled:
        native = state.volume.info.shape
        return tuple(max(1, round(t * n / m))
                     for t, n, m in zip(tile, native, state.volume.model_shape))
    return tile


def _volume_metrics(state: SceneState, labels: Path) -> dict:
    from pipeline.streaming.metrics import label_metrics, unlabelled_value
    from pipeline.streaming.surface import surface_distances
    from pipeline.formats.nifti_volume import TRUTH_INSTANCE, TRUTH_SEMANTIC, ingest_label_volume

    assert state.plan is not None and state.volume is not None
    group = open_store(state.workspace.store, mode="r+")
    chunks = group[SEMANTIC].chunks
    dtype = ingest_label_volume(labels, state.volume.info, group, chunks=chunks)
    ignore = unlabelled_value(dtype)
    classes = _class_rows(state.bundle.spec)
    metrics = label_metrics(
        group[SEMANTIC], group[PANOPTIC], group[VALID], group[TRUTH_SEMANTIC],
        group[TRUTH_INSTANCE], ignore=ignore, classes=classes,
        pred_categories=state.categories, seam_tile=_seam_tile(state),
        seam_width=max(state.plan.halo, 1), source=str(labels))
    # HD95 for every class but the background (class 0)
    metrics["surface"] = surface_distances(
        group[SEMANTIC], group[TRUTH_SEMANTIC], group[VALID],
        classes=[(c[0], c[1]) for c in classes if c[0] != 0],
        spacing=state.volume.info.spacing, ignore=ignore,
        chunks=tuple(2 * c for c in chunks))  # blocks of 2^3 chunks: fewer margin re-reads
    return metrics


def stage_metrics(state: SceneState) -> None:
    """Metrics against the scene's label file, when there is one."""
    start = time.perf_counter()
    labels = state.workspace.labels
    if labels is not None:
        assert state.plan is not None
        if state.volume is not None:
            metrics = _volume_metrics(state, labels)
        else:
            info = open_labels(labels, state.info)
            group = open_store(state.workspace.store)
            metrics = scene_metrics(
                group[SEMANTIC], group[PANOPTIC], group, info,
                classes=_class_rows(state.bundle.spec), pred_categories=state.categories,
                seam_tile=state.plan.grid.tile, seam_width=max(state.plan.halo, 1),
            )
        state.seams["metrics"] = metrics.pop("seams")
        state.metrics = {**metrics, "labels": str(labels)}
    state.timings["metrics"] = time.perf_counter() - start


def stage_export(state: SceneState) -> None:
    """Exports on the input's grid: COGs for GeoTIFF scenes, ``.nii.gz`` for volumes."""
    start = time.perf_counter()
    group = open_store(state.workspace.store)
    _, nodata = semantic_dtype(state.bundle.spec.num_classes)
    names = [SEMANTIC, INSTANCE, PANOPTIC]
    if state.volume is not None:
        from pipeline.formats.nifti_volume import export_volumes

        state.exports = export_volumes(group, names, state.volume.info, state.workspace.partial)
    else:
        state.exports = export_cogs(group, names, state.info, state.workspace.partial,
                                    {SEMANTIC: nodata, INSTANCE: 0, PANOPTIC: 0})
    state.timings["export"] = time.perf_counter() - start


def _grid_fields(state: SceneState) -> dict:
    """Where the scene sits in the world: CRS + transform, or the NIfTI grid."""
    if state.volume is not None:
        v = state.volume
        info = v.info
        return {
            "shape": list(info.disk_shape) + ([info.channels] if info.channels > 1 else []),
            "canonical_shape": list(info.shape), "affine": [list(r) for r in info.affine],
            "orientation": "".join(info.axcodes), "spacing_mm": list(info.zooms),
            "qform_code": info.qform_code, "sform_code": info.sform_code,
            "nifti_version": info.version, "channels": list(v.channels),
            "model_grid": {"spacing_mm": list(v.spacing.target), "shape": list(v.model_shape),
                           "resampled": v.resampled, "policy": state.options.spacing.value},
        }
    return {"shape": list(state.info.shape),
            "bands": list(state.ingest.bands) if state.ingest else None,
            "crs": state.info.crs_wkt, "transform": list(state.info.transform)}


def build_report(state: SceneState) -> dict:
    ws, plan = state.workspace, state.plan
    assert plan is not None
    timings = {k: round(state.timings.get(k, 0.0), 4)
               for k in ("read", "infer", "stitch", "panoptic", "metrics", "export")}
    timings["total"] = round(time.perf_counter() - state.started, 4)
    report = {
        "scene_id": ws.scene.scene_id, "input": str(ws.scene.path), "kind": ws.scene.kind.value,
        "shape": None, "model": state.bundle.name,
        "tiles": {"total": len(plan.grid), "computed": state.tiles_done,
                  "reused": state.tiles_reused, "retried": state.tiles_retried,
                  "skipped_empty": state.tiles_skipped, "tile": plan.tile, "halo": plan.halo},
        "fingerprint": state.fingerprint,
        "timings_s": timings,
        "summary": state.summary,
        "metrics": state.metrics,
        "seams": state.seams,
        "outputs": {**state.exports, "zarr": "scene.zarr"},
    }
    report.update(_grid_fields(state))
    return report


def stage_report(state: SceneState) -> dict:
    """Quicklooks, ``report.html``, then ``report.json`` (last, atomically)."""
    ws, spec = state.workspace, state.bundle.spec
    group = open_store(ws.store)
    colors = [c.color for c in sorted(spec.classes, key=lambda c: c.id)]
    if state.volume is not None:
        from pipeline.report.volume_quicklook import write_volume_quicklooks

        images = write_volume_quicklooks(group, group[SEMANTIC], colors, ws.partial,
                                         spacing=state.volume.info.spacing,
                                         max_size=min(state.options.quicklook_size, 512))
    else:
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
    On an error the partial work is discarded and the error propagates; an
    interrupt (Ctrl-C) or a kill leaves it for the next run to resume. With
    ``options.resume``, a scene already finished with the same fingerprint
    (:mod:`pipeline.run.resume`) returns its report without running.
    """
    fingerprint = run_fingerprint(workspace.scene.path, bundle, options)
    if options.resume:
        finished = finished_report(workspace.final, fingerprint)
        if finished is not None:  # same input, model and options: nothing to do
            return finished
    state = SceneState(workspace, bundle, options, fingerprint=fingerprint)
    try:
        call(stage_ingest, state)
        call(stage_infer, state, pool)
        call(stage_stitch, state)
        call(stage_panoptic, state)
        call(stage_metrics, state)
        call(stage_export, state)
        report = call(stage_report, state)
    except Exception:
        discard(workspace)
        raise
    publish(workspace)
    return report
