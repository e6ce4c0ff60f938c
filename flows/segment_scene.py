"""Prefect flows: ``segment_scene`` (one task per stage) and ``segment_batch``.

The flows are thin: each task calls one stage of :mod:`pipeline.run.stages`.
``segment_batch`` starts one pool of model actors for all scenes and records
every scene's outcome; one failing scene never stops the others.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from pipeline.report.batch import SceneOutcome, write_batch
from pipeline.bundle import ModelBundle
from pipeline.options import RunOptions
from pipeline.inference.pool import WorkerPool
from pipeline.run.resume import will_reuse
from pipeline.run.stages import (
    Workspace, run_scene, stage_export, stage_infer, stage_ingest, stage_metrics, stage_panoptic,
    stage_report, stage_stitch,
)
from pipeline.discovery import Scene

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


def _as_task(stage, *args):
    return STAGE_TASKS[stage](*args)


def start_pool(bundle: ModelBundle, options: RunOptions) -> WorkerPool:
    return WorkerPool.start(
        str(bundle.path), workers=options.workers, gpus_per_worker=options.gpus_per_worker,
        batch_size=options.batch_size, ray_address=options.ray_address,
    )


@flow(name="segment_scene", validate_parameters=False, persist_result=False)
def segment_scene(workspace: Workspace, bundle: ModelBundle, options: RunOptions,
                  pool: WorkerPool | None = None) -> dict:
    """Segment one scene end to end; returns its report (``report.json`` content)."""
    active = start_pool(bundle, options) if pool is None else pool
    try:
        return run_scene(workspace, bundle, options, active, call=_as_task)
    finally:
        if pool is None:
            active.shutdown()


@dataclass(frozen=True)
class BatchResult:
    outcomes: list[SceneOutcome]
    errors: dict[str, BaseException]

    @property
    def failed(self) -> int:
        return sum(o.status != "ok" for o in self.outcomes)


def failure_reason(exc: BaseException) -> str:
    """One line for a failed scene (Ray wraps worker errors; unwrap them)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        exc = cause
    from segcore.errors import SegpipeError

    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text if isinstance(exc, SegpipeError) else f"{type(exc).__name__}: {text}"


@flow(name="segment_batch", validate_parameters=False, persist_result=False)
def segment_batch(scenes: list[Scene], bundle: ModelBundle, options: RunOptions, out_dir: Path,
                  labels: dict[str, Path] | None = None,
                  pool: WorkerPool | None = None) -> BatchResult:
    """Segment several scenes in one Ray session; write ``batch.json``/``batch.csv``.

    ``pool``: model actors to use (kept running); by default a pool is started for the
    batch and shut down after it.
    """
    out_dir = Path(out_dir).resolve()  # actors on other nodes/cwds need an absolute store path
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = labels or {}
    own_pool = pool is None
    pool = start_pool(bundle, options) if pool is None else pool
    errors: dict[str, BaseException] = {}

    def one(scene: Scene) -> SceneOutcome:
        ws = Workspace(scene, out_dir, labels.get(scene.scene_id))
        reused = will_reuse(scene.path, ws.final, bundle, options)
        state = segment_scene(ws, bundle, options, pool, return_state=True)
        if state.is_completed():
            return SceneOutcome.from_report(state.result(), ws.final / "report.json",
                                            reused=reused)
        exc = state.result(raise_on_failure=False)
        exc = exc if isinstance(exc, BaseException) else RuntimeError(str(state.message))
        errors[scene.scene_id] = exc
        return SceneOutcome(scene.scene_id, str(scene.path), "failed", reason=failure_reason(exc),
                            kind=scene.kind.value)

    try:
        outcomes = in_flight(one, scenes, options.scenes_in_flight)
    finally:
        if own_pool:
            pool.shutdown()
    write_batch(out_dir, outcomes, model=bundle.name)
    return BatchResult(outcomes, errors)


def in_flight(work: Callable[[Scene], SceneOutcome], scenes: list[Scene],
              limit: int) -> list[SceneOutcome]:
    """Run ``work`` over the scenes with up to ``limit`` at once; results in input order.

    While one scene is being ingested, stitched or exported by the driver, the
    tiles of another keep the model actors busy (every scene submits its tile
    batches to the same actors, whose queues interleave them).
    """
    if limit <= 1 or len(scenes) <= 1:
        return [work(scene) for scene in scenes]
    with ThreadPoolExecutor(max_workers=min(limit, len(scenes)),
                            thread_name_prefix="segpipe-scene") as executor:
        futures = [executor.submit(contextvars.copy_context().run, work, scene)
                   for scene in scenes]
        return [f.result() for f in futures]
