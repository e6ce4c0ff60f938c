"""Run one scene end to end: every stage, then publish (or discard on error).

:func:`run_scene` is the one per-scene runner: ``segpipe run``, the batch, archive and
nightly flows all call it (the flows pass ``call`` to run each stage as a task). It
decides reuse once: a scene already finished with the same run fingerprint is not
run again, and the :class:`SceneResult` says so; when only its label file is new or
changed, its metrics alone are made again (:mod:`pipeline.run.remeasure`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.bundle import ModelBundle
from pipeline.formats import format_of
from pipeline.inference.tile_pool import TilePool
from pipeline.options import RunOptions
from pipeline.report.model import SceneReport
from pipeline.run.remeasure import has_segmentation, reopen_finished
from pipeline.run.resume import (
    finished_report,
    metrics_current,
    run_fingerprint,
    try_labels_digest,
)
from pipeline.run.stages import (
    SceneState,
    stage_export,
    stage_infer,
    stage_ingest,
    stage_metrics,
    stage_panoptic,
    stage_report,
    stage_stitch,
)
from pipeline.run.workspace import REPORT, Workspace, discard, publish, scene_lock
from pipeline.storage.location import Location

StageCall = Callable[..., Any]


@dataclass(frozen=True)
class SceneResult:
    """A finished scene: its report, where it lies, and whether it was reused as it was."""

    report: SceneReport
    path: Location  # the scene's report.json (a local path or an s3:// URI)
    reused: bool


def _direct(stage: Callable[..., Any], *args: Any) -> Any:
    return stage(*args)


def run_scene(workspace: Workspace, bundle: ModelBundle, options: RunOptions,
              pool: TilePool, *, call: StageCall = _direct) -> SceneResult:
    """Run every stage, then publish the scene.

    ``call(stage, *args)`` runs one stage: directly in plain Python, or as an
    orchestrator's task (the Prefect flow passes one that maps stages to tasks).
    On an error the partial work is discarded and the error propagates; an
    interrupt (Ctrl-C) or a kill leaves it for the next run to resume. With
    ``options.resume``, a scene already finished with the same fingerprint
    (:mod:`pipeline.run.resume`) is returned without running (``reused``).

    The scene's lock is held throughout (:func:`~pipeline.run.workspace.scene_lock`):
    a scene another run is working on raises
    :class:`~pipeline.run.lock.SceneLockedError` and nothing of it is touched.
    """
    with scene_lock(workspace):
        return _run_locked(workspace, bundle, options, pool, call)


def _run_locked(workspace: Workspace, bundle: ModelBundle, options: RunOptions,
                pool: TilePool, call: StageCall) -> SceneResult:
    scene = workspace.scene
    fingerprint = run_fingerprint(scene.path, bundle, options,
                                  identity=format_of(scene).input_identity(scene))
    digest = try_labels_digest(workspace.labels)
    report_path = workspace.final / REPORT
    if options.resume:
        finished = finished_report(workspace.final, fingerprint)
        if finished is not None and metrics_current(finished, digest):
            return SceneResult(finished, report_path, reused=True)  # nothing to do
        if finished is not None and has_segmentation(workspace):  # new labels only
            return _remeasure(workspace, bundle, options, pool, call, finished,
                              fingerprint=fingerprint, digest=digest)
    state = SceneState(workspace, bundle, options, fingerprint=fingerprint,
                       labels_digest=digest, blocks=pool.blocks)
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
    return SceneResult(report, report_path, reused=False)


def _remeasure(workspace: Workspace, bundle: ModelBundle, options: RunOptions,
               pool: TilePool, call: StageCall, finished: SceneReport, *,
               fingerprint: str, digest: str | None) -> SceneResult:
    """Metrics and report of a finished scene against a new label file; no inference
    (every tile counts as reused). The old result stays until the new one is published."""
    try:
        state = reopen_finished(workspace, bundle, options, finished,
                                fingerprint=fingerprint, labels_digest=digest,
                                blocks=pool.blocks)
        call(stage_metrics, state)
        report = call(stage_report, state)
    except Exception:
        discard(workspace)
        raise
    publish(workspace)
    return SceneResult(report, workspace.final / REPORT, reused=False)
