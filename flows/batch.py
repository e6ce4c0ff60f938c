"""The one batch loop, in plain Python: scenes in flight, one row per scene, batch files.

:func:`run_batch` runs each scene by a given ``submit``, up to ``scenes_in_flight``
at once, turns every end into one :class:`~pipeline.report.batch.BatchRow` and
writes ``batch.json`` / ``batch.csv`` (with a ``skipped`` row for each file discovery
left out: :func:`pipeline.report.batch.skipped_rows`; they do not count as scenes and
never change the exit code). One failing scene never stops the others.
``submit`` returns the scene's :class:`~pipeline.run.SceneResult` or raises its
error: :func:`segment_scenes` (``segpipe run``, ``segpipe demo``) calls
:func:`pipeline.run.run_scene` directly, with no orchestrator and no Prefect server
to start; the Prefect flows (:mod:`flows.segment_scene`, :mod:`flows.archive`) pass a
``submit`` that runs the scene as a subflow or task and unwraps its final state.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.bundle import ModelBundle
from pipeline.formats import Scene
from pipeline.inference.tile_pool import TilePool
from pipeline.options import RunOptions
from pipeline.report.batch import BatchRow, skipped_rows, write_batch
from pipeline.run import SceneResult, Workspace, run_scene
from pipeline.run.workspace import out_location
from segcore.errors import SegpipeError

Submit = Callable[[Workspace], SceneResult]
"""Runs one scene's workspace: its result, or the scene's error raised."""


def start_pool(bundle: ModelBundle, options: RunOptions) -> TilePool:
    """Join/start Ray and start the model actors ``options`` ask for."""
    from pipeline.distributed.ray_blocks import INSTANCE_PASS_MODULES  # imports Ray too
    from pipeline.inference.pool import WorkerPool  # imports Ray: only runs that use it

    return WorkerPool.start(
        str(bundle.path), workers=options.workers, gpus_per_worker=options.gpus_per_worker,
        batch_size=options.batch_size, ray_address=options.ray_address,
        warm_modules=INSTANCE_PASS_MODULES if "instance" in bundle.spec.heads else (),
    )


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
    """One row per scene, in input order, the error of every failed scene, and the
    ``skipped`` rows of the files discovery left out (not scenes: no count, no exit code)."""

    outcomes: list[BatchRow]
    errors: dict[str, BaseException]
    skipped: list[BatchRow] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(not o.ok for o in self.outcomes)

    def counts(self) -> dict[str, int]:
        """``scenes``, ``computed``, ``reused`` and ``failed``."""
        ok = [o for o in self.outcomes if o.ok]
        return {"scenes": len(self.outcomes), "computed": sum(not o.reused for o in ok),
                "reused": sum(o.reused for o in ok), "failed": self.failed}


def _row(scene: Scene, submit: Submit, workspace: Workspace,
         errors: dict[str, BaseException]) -> BatchRow:
    try:
        result = submit(workspace)
    except Exception as exc:  # noqa: BLE001 - a failed scene is a row, not the batch's end
        errors[scene.scene_id] = exc
        return BatchRow.failed(scene.scene_id, str(scene.path), reason=failure_reason(exc),
                               kind=scene.kind)
    return BatchRow.from_report(result.report, result.path, reused=result.reused)


def run_batch(scenes: list[Scene], out_dir: Path, labels: dict, *,
              submit: Submit, model: str, limit: int,
              skipped: Sequence[Any] = ()) -> BatchResult:
    """Run every scene through ``submit`` (up to ``limit`` at once); write the batch files
    (``skipped``: the files discovery left out, :class:`pipeline.discovery.Found`)."""
    errors: dict[str, BaseException] = {}
    left_out = skipped_rows(skipped)

    def one(scene: Scene) -> BatchRow:
        workspace = Workspace(scene, out_dir, labels.get(scene.scene_id))
        return _row(scene, submit, workspace, errors)

    rows = in_flight(one, scenes, limit)
    write_batch(out_dir, rows, model=model, skipped=left_out)
    if any(row.kind == "stac" for row in rows):  # catalog.json: STAC scenes only
        from pipeline.formats.stac import write_run_catalog  # imports the GeoTIFF reader

        write_run_catalog(out_dir, rows, model=model)
    return BatchResult(rows, errors, left_out)


def segment_scenes(scenes: list[Scene], bundle: ModelBundle, options: RunOptions, out_dir,
                   labels: dict | None = None, *, pool: TilePool,
                   skipped: Sequence[Any] = ()) -> BatchResult:
    """Segment several scenes with ``pool``'s actors, in plain Python (no orchestrator).

    Each scene runs :func:`pipeline.run.run_scene` (resume, publish, discard on error);
    ``batch.json`` / ``batch.csv`` are written in ``out_dir`` (a local directory,
    created if missing, or an ``s3://`` prefix), with a row for each file of
    ``skipped`` (discovery's left-out files).
    """
    out = out_location(out_dir)  # absolute: actors on other nodes/cwds need it

    def submit(workspace: Workspace) -> SceneResult:
        return run_scene(workspace, bundle, options, pool)

    return run_batch(scenes, out, labels or {}, submit=submit, model=bundle.name,
                     limit=options.scenes_in_flight, skipped=skipped)


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
