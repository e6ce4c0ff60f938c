"""Prefect flows: ``segment_scene`` (one task per stage) and ``segment_batch``.

The flows are thin: each task calls one stage of :mod:`pipeline.run.stages`, and
:func:`pipeline.run.run_scene` decides reuse and publishes. :func:`run_batch` is the
one batch loop of every flow (``segment_batch`` here, ``archive_batch`` and, through
``segment_batch``, ``nightly_pass``): it runs each scene by a given ``submit`` (a
subflow, or a task with retries), up to ``scenes_in_flight`` at once, turns every end
into one :class:`~pipeline.report.batch.BatchRow` and writes ``batch.json`` /
``batch.csv``. One failing scene never stops the others.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from pipeline.bundle import ModelBundle
from pipeline.formats import Scene
from pipeline.inference.pool import WorkerPool
from pipeline.options import RunOptions
from pipeline.report.batch import BatchRow, write_batch
from pipeline.run import SceneResult, Workspace, run_scene
from pipeline.run.stages import (
    stage_export, stage_infer, stage_ingest, stage_metrics, stage_panoptic, stage_report,
    stage_stitch,
)
from segcore.errors import SegpipeError

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


def start_pool(bundle: ModelBundle, options: RunOptions) -> WorkerPool:
    return WorkerPool.start(
        str(bundle.path), workers=options.workers, gpus_per_worker=options.gpus_per_worker,
        batch_size=options.batch_size, ray_address=options.ray_address,
    )


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


def root_cause(exc: BaseException) -> BaseException:
    """The error a Ray task raised, unwrapped from ``RayTaskError`` (``.cause``)."""
    seen = 0
    while isinstance(getattr(exc, "cause", None), BaseException) and seen < 8:
        exc, seen = exc.cause, seen + 1  # type: ignore[assignment]
    return exc


def failure_reason(exc: BaseException) -> str:
    """One line for a failed scene: segpipe's own errors as they are, others with their type.

    Examples
    --------
    >>> failure_reason(OSError("stale NFS handle\\nmore"))
    'OSError: stale NFS handle'
    """
    exc = root_cause(exc)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text if isinstance(exc, SegpipeError) else f"{type(exc).__name__}: {text}"


@dataclass(frozen=True)
class BatchResult:
    """One row per scene, in input order, and the error of every failed scene."""

    outcomes: list[BatchRow]
    errors: dict[str, BaseException]

    @property
    def failed(self) -> int:
        return sum(not o.ok for o in self.outcomes)

    def counts(self) -> dict[str, int]:
        """``scenes``, ``computed``, ``reused`` and ``failed``."""
        ok = [o for o in self.outcomes if o.ok]
        return {"scenes": len(self.outcomes), "computed": sum(not o.reused for o in ok),
                "reused": sum(o.reused for o in ok), "failed": self.failed}


Submit = Callable[[Workspace], Any]
"""Runs one scene's workspace and returns the Prefect state of that run."""


def _row(scene: Scene, state: Any, errors: dict[str, BaseException]) -> BatchRow:
    if state.is_completed():
        result: SceneResult = state.result()
        return BatchRow.from_report(result.report, result.path, reused=result.reused)
    exc = state.result(raise_on_failure=False)
    exc = exc if isinstance(exc, BaseException) else RuntimeError(str(state.message))
    errors[scene.scene_id] = exc
    return BatchRow.failed(scene.scene_id, str(scene.path), reason=failure_reason(exc),
                           kind=scene.kind)


def run_batch(scenes: list[Scene], out_dir: Path, labels: dict[str, Path], *,
              submit: Submit, model: str, limit: int) -> BatchResult:
    """Run every scene through ``submit`` (up to ``limit`` at once); write the batch files."""
    errors: dict[str, BaseException] = {}

    def one(scene: Scene) -> BatchRow:
        return _row(scene, submit(Workspace(scene, out_dir, labels.get(scene.scene_id))),
                    errors)

    rows = in_flight(one, scenes, limit)
    write_batch(out_dir, rows, model=model)
    return BatchResult(rows, errors)


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
    own_pool = pool is None
    active = start_pool(bundle, options) if pool is None else pool

    def submit(ws: Workspace) -> Any:
        return segment_scene(ws, bundle, options, active, return_state=True)

    try:
        return run_batch(scenes, out_dir, labels or {}, submit=submit, model=bundle.name,
                         limit=options.scenes_in_flight)
    finally:
        if own_pool:
            active.shutdown()


def in_flight(work: Callable[[Scene], BatchRow], scenes: list[Scene],
              limit: int) -> list[BatchRow]:
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
