"""Ray and the model actors start in the background while a command validates its inputs.

Starting a local Ray runtime takes seconds, and so does importing the pipeline and
checking the inputs and the model; :class:`RayStart` lets the two overlap. The
command line begins the start as soon as its options are known, hands over the
model bundle once the driver has checked and built it (the actors start as soon as
Ray is up), and waits for the pool only before the first scene. Any failure of Ray
or of the pool (an unreachable ``--ray-address``, workers the cluster cannot place)
is raised by :meth:`RayStart.pool`, before any scene work, so the command still exits
2 with one line. A command that stops before that calls :meth:`RayStart.abandon`; a
finished one calls :meth:`RayStart.close`. Both stop only what was started here.
"""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path
from typing import Any

from flows.environment import silence_library_logs
from pipeline.inference.runtime import ensure_ray, in_background, stop_local_ray


def worth_starting(inputs: list[str], out: Any) -> bool:
    """False when the command is sure to stop on its first checks (a local input that
    does not exist, ``--out`` an existing file): no Ray is started for it then.

    Examples
    --------
    >>> worth_starting(["/no/such/scene.tif"], "out")
    False
    >>> worth_starting(["s3://bucket/scene.tif"], "s3://bucket/out")
    True
    """
    def local(text: str) -> bool:
        return "://" not in text

    if any(local(str(i)) and not Path(i).exists() for i in inputs):
        return False
    return not (local(str(out)) and Path(out).exists() and not Path(out).is_dir())


def _start(address: str | None, quiet: bool) -> bool:
    """Start or join Ray; True when this call initialised it (so it may stop it).

    ``quiet``: hide Ray's log lines (its import configures its own logging).
    """
    import ray

    if quiet:
        silence_library_logs()
    started = not ray.is_initialized()
    ensure_ray(address)
    return started


def _start_pool(ray_started: Future, bundle: Any, options: Any) -> Any:
    """The model actors, once Ray is up; Ray's own failure is raised again here."""
    from flows.batch import start_pool  # imports the pipeline: on the Ray thread

    ray_started.result()
    return start_pool(bundle, options)


class RayStart:
    """Ray, then the model actors, starting on the Ray thread (:func:`in_background`).

    ``early=False``: Ray starts only with the actors (:meth:`start_pool`). ``quiet``:
    Ray's log lines are hidden.
    """

    def __init__(self, address: str | None, *, early: bool = True, quiet: bool = True) -> None:
        self._address, self._quiet = address, quiet
        self._ray: Future | None = in_background(_start, address, quiet) if early else None
        self._pool: Future | None = None

    def start_pool(self, bundle: Any, options: Any) -> None:
        """Start the model actors for ``bundle`` once Ray is up (in the background)."""
        if self._ray is None:
            self._ray = in_background(_start, self._address, self._quiet)
        self._pool = in_background(_start_pool, self._ray, bundle, options)

    def pool(self) -> Any:
        """The started :class:`~pipeline.inference.pool.WorkerPool` (waits for it).

        Raises
        ------
        ConfigError
            When Ray could not start or join, or the actors cannot be placed.
        """
        if self._pool is None:
            raise RuntimeError("RayStart.pool() before RayStart.start_pool()")
        return self._pool.result()

    def abandon(self) -> None:
        """The command stops before any scene: stop the actors and the runtime started
        here. An actor start already under way is waited for first (Ctrl-C again stops
        waiting)."""
        if self._pool is not None and not self._pool.cancel() \
                and self._pool.exception() is None:
            self._pool.result().shutdown()
        self.close()

    def close(self) -> None:
        """Stop the Ray runtime if this command started it; one that was running before
        (tests, notebooks) or a cluster that was joined is left as it was. Called by the
        command itself: Ray's own exit hook would first wait another 0.5 s."""
        if self._ray is not None and self._ray.exception() is None and self._ray.result():
            stop_local_ray()


def begin(inputs: list[str], out: Any, address: str | None, *, quiet: bool = True,
          local: bool = False) -> RayStart:
    """A :class:`RayStart` for ``address``, early unless :func:`worth_starting` says no or
    the run will ``local``-ly not need Ray (:func:`pipeline.executor.likely_local`);
    :meth:`RayStart.start_pool` still starts it when it does."""
    return RayStart(address, early=worth_starting(inputs, out) and not local, quiet=quiet)
