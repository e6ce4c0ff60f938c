"""A hospital archive (a directory tree of NIfTI volumes) as one Prefect flow.

``archive_batch`` runs every volume as a Prefect task (``segment-volume``) over one
pool of model actors, with

* a limit on volumes in flight (``options["scenes_in_flight"]``, default 2), and the
  tag ``segpipe-archive`` on every task, so an operator can add a server-side limit
  (``prefect concurrency-limit create segpipe-archive 2``) across flow runs;
* retries on transient errors only (:func:`should_retry`): a volume that failed
  because it is unusable (``InputError``), the model is (``ModelError``) or the
  settings are (``ConfigError``) fails once and is reported; anything else (an
  ``OSError`` on a network share, a lost Ray worker) is retried up to ``retries``
  times. An error raised inside a Ray task or actor is judged by the worker's own error
  (``RayTaskError.cause``, :func:`flows.batch.root_cause`), which crosses Ray intact
  because every segpipe error pickles with its type, message and attributes. Finished volumes are reused on a rerun (run fingerprint), like ``segpipe run``.
"""

from __future__ import annotations

import threading
from functools import partial
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.artifacts import pass_summary
from flows.segment_scene import (
    root_cause,
    run_batch,
    scene_of_state,
    stage_as_task,
    start_pool,
)
from pipeline.bundle import load_bundle
from pipeline.discovery import find, match_labels
from pipeline.options import load_run_options
from pipeline.run import SceneResult, Workspace, run_scene
from segcore.errors import ConfigError, InputError, ModelError

DEFAULT_RETRIES = 2
ARCHIVE_TAG = "segpipe-archive"
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (InputError, ModelError, ConfigError)


def should_retry(exc: BaseException | None) -> bool:
    """Retry a failed volume? Not for bad input/model/settings; yes for anything else.

    Examples
    --------
    >>> should_retry(OSError("stale NFS handle")), should_retry(InputError("a.nii", "empty"))
    (True, False)
    """
    if exc is None or not isinstance(exc, Exception):
        return False  # no error to judge, or an interrupt: never retried
    return not isinstance(root_cause(exc), PERMANENT_ERRORS)


class AttemptLog:
    """Counts attempts per volume from the retry decisions (thread-safe).

    Prefect asks the retry condition after every failure that still has retries left;
    each "yes" starts one more attempt, so attempts = 1 + retries granted.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.granted: dict[str, int] = {}

    def decide(self, scene_id: str, task_, task_run, state) -> bool:
        exc = state.result(raise_on_failure=False)
        retry = should_retry(exc if isinstance(exc, BaseException) else None)
        if retry:
            with self._lock:
                self.granted[scene_id] = self.granted.get(scene_id, 0) + 1
        return retry

    def attempts(self, scene_id: str) -> int:
        return 1 + self.granted.get(scene_id, 0)


@task(name="segment-volume", cache_policy=NO_CACHE, persist_result=False, tags=[ARCHIVE_TAG])
def segment_volume(workspace: Workspace, bundle, options, pool) -> SceneResult:
    """One volume end to end (stages as nested tasks); returns its result."""
    return run_scene(workspace, bundle, options, pool, call=stage_as_task)


@flow(name="archive_batch", validate_parameters=False, persist_result=False)
def archive_batch(root: str, out: str, model: str, labels: str | None = None,
                  options: dict[str, Any] | None = None, retries: int = DEFAULT_RETRIES,
                  retry_delay_s: float = 0.0, pool: Any = None) -> dict[str, Any]:
    """Segment every volume under ``root``; retry transient failures only.

    Parameters
    ----------
    root : str
        Archive directory, scanned recursively (scene ids from relative paths).
    out, model, labels
        As for ``segpipe run``.
    options : dict, optional
        :class:`~pipeline.options.RunOptions` fields; ``scenes_in_flight`` limits the
        volumes processed at once.
    retries : int
        Extra attempts for a volume that failed with a transient error (default 2).
    retry_delay_s : float
        Seconds between attempts.
    pool : WorkerPool, optional
        Model actors to reuse; by default one pool is started for the archive.

    Returns
    -------
    dict
        As :func:`flows.artifacts.pass_summary` (counts, ``exit_code``, ``outcomes``, ...)
        plus ``attempts`` per scene id.
    """
    if retries < 0:
        raise ConfigError(f"retries: expected an integer >= 0, received {retries!r}")
    run_options = load_run_options(None, options or {})
    found = find([root])  # the scenes, and the files left out (batch ``skipped`` rows)
    scenes = found.scenes
    label_map = match_labels(scenes, labels)
    bundle = load_bundle(model)
    out_dir = Path(out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    log = AttemptLog()
    own_pool = pool is None
    pool = start_pool(bundle, run_options) if own_pool else pool

    def submit(ws: Workspace) -> SceneResult:
        volume_task = segment_volume.with_options(
            task_run_name=f"segment-volume-{ws.scene.scene_id}", retries=retries,
            retry_delay_seconds=retry_delay_s,
            retry_condition_fn=partial(log.decide, ws.scene.scene_id))
        return scene_of_state(volume_task(ws, bundle, run_options, pool, return_state=True))

    try:
        result = run_batch(scenes, out_dir, label_map, submit=submit, model=bundle.name,
                           limit=run_options.scenes_in_flight, skipped=found.skipped)
    finally:
        if own_pool:
            pool.shutdown()
    return {**pass_summary("segpipe-archive", f"segpipe archive {root} ({bundle.name})",
                           result, out_dir, bundle.name),
            "attempts": {s.scene_id: log.attempts(s.scene_id) for s in scenes}}
