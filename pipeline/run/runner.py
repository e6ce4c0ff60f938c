"""Run one scene end to end: every stage, then publish (or discard on error).

:func:`run_scene` is the one per-scene runner: ``segpipe run``, the batch, archive and
nightly flows all call it (the flows pass ``call`` to run each stage as a task). It
decides reuse once: a scene already finished with the same run fingerprint is not
run again, and the :class:`SceneResult` says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.bundle import ModelBundle
from pipeline.inference.tile_pool import TilePool
from pipeline.options import RunOptions
from pipeline.report.model import SceneReport
from pipeline.run.resume import finished_report, run_fingerprint
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
from pipeline.run.workspace import REPORT, Workspace, discard, publish
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
    """
    fingerprint = run_fingerprint(workspace.scene.path, bundle, options)
    report_path = workspace.final / REPORT
    if options.resume:
        finished = finished_report(workspace.final, fingerprint)
        if finished is not None:  # same input, model and options: nothing to do
            return SceneResult(finished, report_path, reused=True)
    state = SceneState(workspace, bundle, options, fingerprint=fingerprint,
                       blocks=pool.blocks)
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
