"""Prefect flows: ``segment_scene`` (one task per stage) and ``segment_batch``.

The flows are thin: each task calls one stage of :mod:`pipeline.run.stages`, and
:func:`pipeline.run.run_scene` decides reuse and publishes. The batch loop is
:func:`flows.batch.run_batch`, shared by ``segment_batch`` here, ``archive_batch``
and, through ``segment_batch``, ``nightly_pass``: each scene runs by a ``submit``
that starts a subflow (or a task with retries) and unwraps its final state
(:func:`scene_of_state`). ``segpipe run`` uses the same loop without Prefect
(:func:`flows.batch.segment_scenes`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.batch import (
    BatchResult,
    failure_reason,
    in_flight,
    root_cause,
    run_batch,
    start_pool,
)
from pipeline.bundle import ModelBundle
from pipeline.formats import Scene
from pipeline.inference.pool import WorkerPool
from pipeline.options import RunOptions
from pipeline.run import SceneResult, Workspace, run_scene
from pipeline.run.stages import (
    stage_export,
    stage_infer,
    stage_ingest,
    stage_metrics,
    stage_panoptic,
    stage_report,
    stage_stitch,
)
from pipeline.run.workspace import out_location

__all__ = [
    "STAGE_TASKS",
    "BatchResult",
    "failure_reason",
    "in_flight",
    "root_cause",
    "run_batch",
    "scene_of_state",
    "segment_batch",
    "segment_scene",
    "stage_as_task",
    "start_pool",
]

_TASK = {"cache_policy": NO_CACHE, "persist_result": False}
# one Prefect task per stage of pipeline.run.stages
STAGE_TASKS = {
    stage: task(stage, name=name, **_TASK)
    for stage, name in (
        (stage_ingest, "ingest"), (stage_infer, "infer"), (stage_stitch, "stitch"),
        (stage_panoptic, "panoptic"), (stage_metrics, "metrics"), (stage_export, "export"),
        (stage_report, "report"),
    )
}


def stage_as_task(stage: Callable[..., Any], *args: Any) -> Any:
    """``run_scene``'s ``call``: each stage runs as its Prefect task."""
    return STAGE_TASKS[stage](*args)


def scene_of_state(state: Any) -> SceneResult:
    """The result of a scene's final Prefect state, or its error raised."""
    if state.is_completed():
        return state.result()
    exc = state.result(raise_on_failure=False)
    raise exc if isinstance(exc, Exception) else RuntimeError(str(state.message))


@flow(name="segment_scene", validate_parameters=False, persist_result=False)
def segment_scene(workspace: Workspace, bundle: ModelBundle, options: RunOptions,
                  pool: WorkerPool | None = None) -> SceneResult:
    """Segment one scene end to end; returns its :class:`~pipeline.run.SceneResult`."""
    active = start_pool(bundle, options) if pool is None else pool
    try:
        return run_scene(workspace, bundle, options, active, call=stage_as_task)
    finally:
        if pool is None:
            active.shutdown()


@flow(name="segment_batch", validate_parameters=False, persist_result=False)
def segment_batch(scenes: list[Scene], bundle: ModelBundle, options: RunOptions, out_dir: Path,
                  labels: dict[str, Path] | None = None,
                  pool: WorkerPool | None = None, skipped: Sequence[Any] = ()) -> BatchResult:
    """Segment several scenes in one Ray session; write ``batch.json``/``batch.csv``.

    ``pool``: model actors to use (kept running); by default a pool is started for the
    batch and shut down after it. ``skipped``: the files discovery left out (batch
    ``skipped`` rows, :class:`pipeline.discovery.Found`).
    """
    out_dir = out_location(out_dir)  # absolute local path (actors elsewhere) or s3:// prefix
    own_pool = pool is None
    active = start_pool(bundle, options) if pool is None else pool

    def submit(ws: Workspace) -> SceneResult:
        return scene_of_state(segment_scene(ws, bundle, options, active, return_state=True))

    try:
        return run_batch(scenes, out_dir, labels or {}, submit=submit, model=bundle.name,
                         limit=options.scenes_in_flight, skipped=skipped)
    finally:
        if own_pool:
            active.shutdown()
