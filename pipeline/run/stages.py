"""The stages of one scene, as plain functions over a :class:`SceneState`.

ingest -> infer -> stitch -> panoptic -> metrics -> export -> report. Prefect tasks
(``flows/segment_scene.py``) call these one per task; plain Python calls
:func:`pipeline.run.runner.run_scene`. Every stage reads and writes the scene's Zarr
store; only small results move between stages. Whatever differs between kinds of
input is asked of the scene's format (:class:`pipeline.formats.SceneFormat`): no
stage knows which format it runs.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zarr

from pipeline.atomic import write_json_atomic, write_text_atomic
from pipeline.blockmap import BlockMap, serial
from pipeline.bundle import ModelBundle
from pipeline.formats import IngestedScene, SceneFormat, format_of
from pipeline.inference.records import prepare_records, read_records
from pipeline.inference.scene_intensity import SceneNormalisation, scene_normalisation
from pipeline.inference.tile_pool import TilePool
from pipeline.options import RunOptions
from pipeline.progress import advance_progress, start_progress
from pipeline.report.model import (
    MetricsError,
    SceneMetrics,
    SceneReport,
    SceneSummary,
    Seams,
    TileCounts,
    Timings,
)
from pipeline.report.writer import render_html
from pipeline.run.plan import TilePlan, fits_store, plan_tiles
from pipeline.run.resume import mark_ingested, partial_matches
from pipeline.run.workspace import Workspace, start_partial
from pipeline.storage.staging import local_dir
from pipeline.store import (
    INSTANCE,
    OFFSETS,
    PANOPTIC,
    SEMANTIC,
    VALID,
    create_label_array,
    create_offsets_array,
    open_store,
    semantic_dtype,
)
from pipeline.streaming.centres import CentreCollector, assign_instances
from pipeline.streaming.metrics import label_metrics
from pipeline.streaming.panoptic import fuse_scene, fusion_stats
from pipeline.streaming.resample import resample_back
from pipeline.streaming.summary import ClassTotals
from pipeline.streaming.tile_stats import TileStatsSpec, merge_tiles
from segcore.errors import InputError, SegpipeError
from segcore.panoptic.fusion import FusionStats, PanopticPlan, decide

STAGE_TIMINGS = ("read", "infer", "stitch", "panoptic", "metrics", "export")


@dataclass(frozen=True)
class TileWork:
    """What inference did with the plan's tiles."""

    computed: int = 0
    reused: int = 0
    retried: int = 0
    skipped: int = 0


@dataclass
class SceneState:
    """What the stages learn about a scene (small: no pixels), filled stage by stage."""

    workspace: Workspace
    bundle: ModelBundle
    options: RunOptions
    fingerprint: str = ""
    resumed: bool = False  # a killed run's ingest and finished tiles are reused
    ingested: IngestedScene | None = None
    plan: TilePlan | None = None
    work: TileWork = TileWork()
    centres: CentreCollector | None = None  # instance models: the tiles' centre peaks
    seams: Seams = Seams()
    segments: PanopticPlan | None = None  # the predicted panoptic segments (small table)
    summary: SceneSummary | None = None
    # tiles all computed now: the class totals the tile workers counted
    # (pipeline.streaming.tile_stats), and the fusion's statistics they counted
    # (semantic-only models) or the centre pass gathered (instances), so no pass reads
    # the labels back for them
    tile_totals: ClassTotals | None = None
    tile_stuff: FusionStats | None = None
    metrics: SceneMetrics | MetricsError | None = None
    labels_digest: str | None = None  # SHA-256 of the label file's content
    labels_error: str | None = None  # why the label file is unusable (one line)
    # a finished scene whose metrics alone are made again (pipeline.run.remeasure): its
    # report gives the plan's figures, summary and outputs; nothing else is rewritten
    previous: SceneReport | None = None
    exports: dict[str, str] = field(default_factory=dict)
    quicklooks: dict[str, str] | None = None  # written beside the export (stage_export)
    timings: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    blocks: BlockMap = serial  # where block passes run (the pool's: Ray tasks or threads)

    @property
    def format(self) -> SceneFormat:
        return format_of(self.workspace.scene)

    @property
    def scene(self) -> IngestedScene:
        assert self.ingested is not None, "ingest stage has not run"
        return self.ingested

    @property
    def has_instances(self) -> bool:
        """Whether the model has an instance head (else no instance/panoptic outputs)."""
        return "instance" in self.bundle.spec.heads

    @property
    def label_names(self) -> list[str]:
        """The label arrays this model produces (and the run exports)."""
        return [SEMANTIC, INSTANCE, PANOPTIC] if self.has_instances else [SEMANTIC]

    @property
    def infer_store(self) -> Path:
        """The group the model runs on (the scene's model-grid subgroup, if it has one)."""
        group = self.scene.model_group
        return self.workspace.store / group if group else self.workspace.store

    def group(self, mode: str = "r") -> zarr.Group:
        return open_store(self.workspace.store, mode=mode)


def _check_dimensions(state: SceneState) -> None:
    spec, fmt = state.bundle.spec, state.format
    if spec.ndim != fmt.ndim:
        raise InputError(str(state.workspace.scene.path),
                         f"model '{spec.name}' is {spec.ndim}-D; {fmt.noun} needs a "
                         f"{fmt.ndim}-D model")


def stage_ingest(state: SceneState) -> None:
    """Validate the input and copy its bands (channels) into ``scene.zarr/image``.

    A killed run's ingest is reused when its fingerprint matches (``resume``).
    """
    ws, spec, fmt = state.workspace, state.bundle.spec, state.format
    _check_dimensions(state)
    info = fmt.open(ws.scene.path)
    state.resumed = state.options.resume and partial_matches(ws.partial, state.fingerprint)
    start_partial(ws, keep=state.resumed)
    attrs = {"scene_id": ws.scene.scene_id, "input": str(ws.scene.path), "model": spec.name,
             "classes": [c.model_dump() for c in spec.classes]}
    state.ingested = fmt.ingest(info, ws.store, bundle=state.bundle, options=state.options,
                                attrs=attrs, copy=not state.resumed, blocks=state.blocks)
    state.timings["read"] = state.ingested.seconds
    if not state.resumed:
        mark_ingested(ws.partial, state.fingerprint)
    check_labels(state)


def check_labels(state: SceneState) -> None:
    """Validate the label file's header against the ingested grid, before inference.

    An unusable label file does not fail the scene: ``state.labels_error`` says why,
    the segmentation goes on and ``metrics`` becomes ``{"error": ...}``.
    """
    labels = state.workspace.labels
    if labels is None or state.labels_error is not None:
        return
    try:
        state.format.check_labels(labels, state.scene)
    except (SegpipeError, OSError) as exc:
        state.labels_error = labels_failure(labels, exc)


def labels_failure(labels: object, exc: BaseException) -> str:
    """One line naming the label file: why it could not be used.

    Examples
    --------
    >>> labels_failure("t.tif", InputError("t.tif", "labels must hold integer class ids"))
    't.tif: labels must hold integer class ids'
    >>> labels_failure("t.tif", OSError("read failed\\nat byte 12"))
    't.tif: cannot read the labels: OSError: read failed'
    """
    for _ in range(8):  # Ray's task errors carry the worker's error as ``cause``
        if not isinstance(getattr(exc, "cause", None), BaseException):
            break
        exc = exc.cause
    if isinstance(exc, SegpipeError):
        text = " ".join(str(exc).split())
    else:  # the innermost message: GDAL's decoder error sits below rasterio's "Read failed"
        seen = [exc]
        while (nxt := seen[-1].__cause__ or seen[-1].__context__) is not None \
                and nxt not in seen:
            seen.append(nxt)
        inner = seen[-1]
        text = f"cannot read the labels: {type(inner).__name__}: " + \
            (str(inner).strip().splitlines() or [""])[0]
    return text if str(labels) in text else f"{labels}: {text}"


def _label_array(group: zarr.Group, name: str, *, reuse: bool, **kwargs) -> zarr.Array:
    """The existing array when resuming (its finished tiles are kept), else a new one."""
    if reuse and name in group:
        return group[name]
    return create_label_array(group, name, **kwargs)


def _start_arrays(state: SceneState, group: zarr.Group) -> None:
    """Label arrays on the model grid; for instance models the offsets array and the
    collector of the tiles' centre peaks."""
    chunks, reuse = state.plan.grid.chunks, state.resumed
    dtype, nodata = semantic_dtype(state.bundle.spec.num_classes)
    _label_array(group, SEMANTIC, reuse=reuse, dtype=dtype, fill_value=nodata, chunks=chunks)
    if state.has_instances:
        create_offsets_array(group, chunks=chunks, reuse=reuse)
        state.centres = CentreCollector(len(chunks))


def _reusable_records(state: SceneState) -> dict[int, object]:
    """Completion records of a killed run's tiles that belong to this plan."""
    records = state.workspace.records
    prepare_records(records, keep=state.resumed)
    grid = state.plan.grid
    flats = {grid.flat_index(t.index): t.index for t in grid}
    return {f: o for f, o in read_records(records).items()
            if state.resumed and f in flats and o.index == flats[f]}


def stage_infer(state: SceneState, pool: TilePool) -> None:
    """Run the model actors over every tile; each writes its own core chunks.

    Tiles with a completion record from a killed run are reused (``resume``);
    their records feed the scene's centre list as if they had just finished.
    """
    start = time.perf_counter()
    state.plan = plan_tiles(state.scene.model_shape, state.bundle, state.options,
                            workers=max(1, len(pool.actors)))
    grid = state.plan.grid
    group = open_store(state.infer_store, mode="r+")
    state.resumed = state.resumed and fits_store(state.plan, group)  # else recompute tiles
    _start_arrays(state, group)
    reused = _reusable_records(state)
    if state.centres is not None and reused:
        state.centres.add(list(reused.values()))
    sid = state.workspace.scene.scene_id
    start_progress(sid, "infer", len(grid))
    advance_progress(sid, "infer", len(reused))
    todo = [t.index for t in grid if grid.flat_index(t.index) not in reused]
    _, nodata = semantic_dtype(state.bundle.spec.num_classes)
    stats = _tile_stats_spec(state, nodata) if not reused else None
    normalisation = _scene_normalisation(state, group) if todo else None
    outcomes = pool.run(str(state.infer_store), nodata, grid,
                        progress=lambda n: advance_progress(sid, "infer", n),
                        on_outcomes=state.centres.add if state.centres else None,
                        indices=todo, records=str(state.workspace.records), scene_id=sid,
                        stats=stats, normalisation=normalisation)
    state.work = TileWork(computed=len({o.index for o in outcomes}), reused=len(reused),
                          retried=sum(o.retried for o in outcomes),
                          skipped=sum(o.skipped for o in outcomes))
    if stats is not None:
        _keep_tile_stats(state, stats, outcomes)
    state.timings["infer"] = time.perf_counter() - start


def _scene_normalisation(state: SceneState, group) -> SceneNormalisation | None:
    """The scene's own mean and std for a model normalised per scene (``input.scene``:
    MONAI's ``NormalizeIntensityd`` / ``ScaleIntensityd``), from one block pass over the
    image the model reads; None for other models."""
    spec = state.bundle.spec.input.scene
    if spec is None:
        return None
    return scene_normalisation(group, spec, blocks=state.blocks)


def _tile_stats_spec(state: SceneState, nodata: int) -> TileStatsSpec | None:
    """Counting in the tile workers, for models on the stored grid (a model grid is
    resampled first): the class totals, and for a semantic-only model the stuff
    statistics too (an instance model's need the scene's instances: the centre pass
    gathers them)."""
    if state.scene.model_group is not None:
        return None
    unit, sizes = state.format.sizes(state.scene)
    return TileStatsSpec(state.bundle.spec.num_classes, unit, sizes, nodata,
                         stuff=not state.has_instances)


def _keep_tile_stats(state: SceneState, spec: TileStatsSpec, outcomes: list) -> None:
    """The merged tables, when every tile of the plan sent its own (once each)."""
    grid = state.plan.grid
    parts = {o.index: o for o in outcomes if o.totals is not None}
    if len(parts) != len(grid):
        return
    ordered = [(tuple(s.start for s in grid.tile_at(i).core.slices), o.totals, o.stuff)
               for i, o in parts.items()]
    state.tile_totals, state.tile_stuff = merge_tiles(ordered, spec.num_classes, spec.unit,
                                                      len(grid.shape), spec.nodata)


def _stitch_instances(state: SceneState) -> None:
    """The scene's instances from its centre list: one block pass over the cores
    (:mod:`pipeline.streaming.centres`), the same result for any tiling."""
    if not state.has_instances:
        return
    group = open_store(state.infer_store, mode="r+")
    instance = create_label_array(group, INSTANCE, dtype=np.dtype("uint32"), fill_value=0,
                                  chunks=state.plan.grid.chunks)
    if state.centres is not None:
        spec = state.bundle.spec
        centres = state.centres.centres(top_k=spec.instances.top_k)
        # on the stored grid the same pass gathers the panoptic fusion's statistics
        stored = state.scene.model_group is None
        _, nodata = semantic_dtype(spec.num_classes)
        counts = assign_instances(group[SEMANTIC], group[OFFSETS], instance, centres,
                                  [c.id for c in spec.classes if c.isthing],
                                  blocks=state.blocks, valid=group[VALID] if stored else None,
                                  nodata=nodata)
        state.tile_stuff = counts.stats
        state.centres = None
        state.seams = Seams(instances_merged_across_tiles=counts.across_tiles,
                            merges=counts.tile_pieces - counts.instances,
                            instances_cut_at_halo=0, tile_pieces=counts.tile_pieces)


def stage_stitch(state: SceneState) -> None:
    """Check the mosaic is complete, stitch instances across tiles, total the classes.

    Semantic tiles need no merging (each worker wrote its own cores). Labels made on a
    model grid are resampled back to the stored grid (nearest neighbour) here.
    """
    start = time.perf_counter()
    expected, done = len(state.plan.grid), state.work.computed + state.work.reused
    if done != expected:
        raise RuntimeError(f"{state.workspace.scene.path}: only {done} of {expected} tiles "
                           "finished")
    _stitch_instances(state)
    group = state.group("r+")
    if (model_group := state.scene.model_group) is not None:
        for name in (SEMANTIC, INSTANCE) if state.has_instances else (SEMANTIC,):
            resample_back(group, name, model_group=model_group, chunks=group[VALID].chunks,
                          blocks=state.blocks)
    spec = state.bundle.spec
    totals = state.tile_totals
    if totals is None:  # a model grid, or tiles reused from a killed run
        totals = state.format.summarise(group[SEMANTIC], state.scene, spec.num_classes,
                                        blocks=state.blocks)
    state.summary = SceneSummary(classes=totals.to_dict(spec.class_names), instances={},
                                 nodata_pixels=totals.nodata_pixels)
    state.timings["stitch"] = time.perf_counter() - start


def stage_panoptic(state: SceneState) -> None:
    """Fuse semantic + instance into ``panoptic`` and ``segments.json`` (a model without
    instances gets its stuff segments in ``segments.json`` and no ``panoptic`` array)."""
    start = time.perf_counter()
    spec = state.bundle.spec
    _, nodata = semantic_dtype(spec.num_classes)
    plan, segments = fuse_scene(state.group("r+"), SEMANTIC,
                                INSTANCE if state.has_instances else None, spec.class_rows,
                                nodata=nodata, min_stuff_area=spec.min_stuff_area,
                                blocks=state.blocks, stats=state.tile_stuff)
    state.segments, state.tile_stuff = plan, None
    write_json_atomic(state.workspace.partial / "segments.json",
                      {"segments_info": segments, "categories": [
                          {"id": c.id, "name": c.name, "isthing": int(c.isthing)}
                          for c in spec.classes]})
    counts = {c.name: 0 for c in spec.classes if c.isthing}
    for seg in segments:
        if seg["isthing"]:
            counts[seg["category"]] = counts.get(seg["category"], 0) + 1
    state.summary = state.summary.model_copy(update={"instances": counts})
    state.timings["panoptic"] = time.perf_counter() - start


def _plan_tiles(state: SceneState) -> tuple[tuple[int, ...], int]:
    """Tile core (per axis, model grid) and halo of the plan the labels were made with."""
    if state.plan is not None:
        return state.plan.grid.tile, state.plan.halo
    tiles = state.previous.tiles  # a finished scene: its report's plan
    core = tiles.core or [tiles.tile] * len(state.scene.model_shape)
    return tuple(core), tiles.halo


def _seam_tile(state: SceneState, tile: tuple[int, ...]) -> tuple[int, ...]:
    """Tile-core size on the stored grid (tiles of a model grid scaled back)."""
    scene = state.scene
    if scene.model_group is None:
        return tile
    return tuple(max(1, round(t * n / m))
                 for t, n, m in zip(tile, scene.shape, scene.model_shape))


def _predicted_segments(state: SceneState, group: zarr.Group) -> PanopticPlan:
    """The prediction's segment plan: the panoptic stage's, or (a finished scene) the
    same plan decided again from the stored labels (one read pass, nothing written)."""
    if state.segments is not None:
        return state.segments
    spec = state.bundle.spec
    _, nodata = semantic_dtype(spec.num_classes)
    sem = group[SEMANTIC]
    stats = fusion_stats(sem, group[INSTANCE] if state.has_instances else None, group[VALID],
                         nodata=nodata, block=sem.chunks, blocks=state.blocks)
    return decide(stats, spec.class_rows, min_stuff_area=spec.min_stuff_area)


def _metrics(state: SceneState, labels: Path) -> dict:
    """Semantic, panoptic and the format's own metrics against one label file."""
    group, rows = state.group("r+"), state.bundle.spec.class_rows
    tile, halo = _plan_tiles(state)
    pred_plan = _predicted_segments(state, group)
    with state.format.open_labels(labels, state.scene, group) as truth:
        metrics = label_metrics(
            group[SEMANTIC], group[PANOPTIC] if state.has_instances else None, group[VALID],
            truth.semantic, truth.instance, ignore=truth.ignore, classes=rows,
            pred_plan=pred_plan, seam_tile=_seam_tile(state, tile),
            seam_width=max(halo, 1), source=truth.source, blocks=state.blocks)
        metrics.update(state.format.extra_metrics(group, truth, state.scene,
                                                  classes=[(c.id, c.name) for c in rows],
                                                  blocks=state.blocks))
    return metrics


def stage_metrics(state: SceneState) -> None:
    """Metrics against the scene's label file, when there is one.

    A label file that is unusable (refused before inference by :func:`check_labels`,
    or failing while its pixels are read) never fails the scene: ``metrics`` is then
    a :class:`MetricsError` naming the file, and the segmentation is published.
    """
    start = time.perf_counter()
    labels = state.workspace.labels
    if labels is not None:
        state.metrics = _label_metrics(state, labels)
    state.timings["metrics"] = time.perf_counter() - start


def _label_metrics(state: SceneState, labels: Path) -> SceneMetrics | MetricsError:
    ident = {"labels": str(labels), "labels_digest": state.labels_digest}
    if state.labels_error is None:
        try:
            metrics = _metrics(state, labels)
        except Exception as exc:  # noqa: BLE001 - the segmentation is kept whatever the labels
            state.labels_error = labels_failure(labels, exc)
        else:
            state.seams = Seams.model_validate({**state.seams.model_dump(),
                                                "metrics": metrics.pop("seams")})
            return SceneMetrics.model_validate({**metrics, **ident})
    return MetricsError(error=state.labels_error, **ident)


def stage_export(state: SceneState) -> None:
    """Exports of the label arrays on the input's own grid (the format decides how).

    The quicklooks are drawn in a thread of this process meanwhile: the export's COG
    copy leaves cores idle while it builds overviews, and the quicklooks are small
    arrays (strided reads, a few PNGs) that fill them. ``stage_report`` uses them.
    """
    start = time.perf_counter()
    _, nodata = semantic_dtype(state.bundle.spec.num_classes)
    with ThreadPoolExecutor(1, thread_name_prefix="segpipe-quicklooks") as side:
        looks = side.submit(_quicklooks, state) if state.previous is None else None
        with local_dir(state.workspace.partial) as out_dir:  # uploaded when out is s3://
            state.exports = state.format.export(state.group(), state.label_names, state.scene,
                                                out_dir,
                                                {SEMANTIC: nodata, INSTANCE: 0, PANOPTIC: 0},
                                                blocks=state.blocks)
    # (a failed export raises above, once the quicklooks have finished)
    if looks is not None:
        state.quicklooks = looks.result()
    state.timings["export"] = time.perf_counter() - start


def _quicklooks(state: SceneState) -> dict[str, str]:
    """Write the scene's quicklook PNGs; their names by kind."""
    group = state.group()
    with local_dir(state.workspace.partial) as out_dir:  # uploaded when out is s3://
        return state.format.quicklooks(group, group[SEMANTIC], state.scene,
                                       colors=state.bundle.spec.colors, out_dir=out_dir,
                                       options=state.options, blocks=state.blocks)


def _tile_counts(state: SceneState) -> TileCounts:
    """The plan's tiles and what this run did with them (a finished scene whose metrics
    alone are made again: every tile reused)."""
    plan, work = state.plan, state.work
    if plan is None:
        total = state.previous.tiles.total
        return state.previous.tiles.model_copy(update={
            "computed": 0, "reused": total, "retried": 0, "skipped_empty": 0})
    return TileCounts(total=len(plan.grid), computed=work.computed, reused=work.reused,
                      retried=work.retried, skipped_empty=work.skipped, tile=plan.tile,
                      halo=plan.halo, **plan.report_fields())


def build_report(state: SceneState, outputs: dict[str, str | dict[str, str]]) -> SceneReport:
    """The scene's :class:`SceneReport` from what the stages learned."""
    ws = state.workspace
    timings = {k: round(state.timings.get(k, 0.0), 4) for k in STAGE_TIMINGS}
    grid = state.format.grid_fields(state.scene, state.options)
    return SceneReport(
        scene_id=ws.scene.scene_id, input=str(ws.scene.path), kind=ws.scene.kind,
        shape=grid.pop("shape"), model=state.bundle.name, tiles=_tile_counts(state),
        fingerprint=state.fingerprint,
        timings_s=Timings(**timings, total=round(time.perf_counter() - state.started, 4)),
        summary=state.summary, metrics=state.metrics, seams=state.seams, outputs=outputs,
        **grid)


def stage_report(state: SceneState) -> SceneReport:
    """Quicklooks, ``report.html``, then ``report.json`` (last, atomically).

    A finished scene whose metrics alone are made again keeps its quicklooks and
    outputs (``state.previous``).
    """
    ws, spec = state.workspace, state.bundle.spec
    if state.previous is not None:
        outputs = dict(state.previous.outputs)
        images = dict(outputs.get("quicklooks") or {})
    else:
        images = state.quicklooks if state.quicklooks is not None else _quicklooks(state)
        outputs = {**state.exports, "zarr": "scene.zarr", "segments": "segments.json",
                   "quicklooks": images}
    report = build_report(state, outputs)
    write_text_atomic(ws.partial / "report.html",
                      render_html(report, dict(zip(spec.class_names, spec.colors)), images))
    write_json_atomic(ws.partial / "report.json", report.to_json())
    return report
