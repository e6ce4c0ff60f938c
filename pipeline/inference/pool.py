"""A pool of long-lived model actors shared by every scene of a run.

Actors are created once (the model loads once per actor) and fed batches of
tiles dynamically: whichever actor is free takes the next batch, so a slow
tile never holds up the others. Only small outcomes return to the driver.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import ray
from ray.util import ActorPool

from pipeline.inference.actor import RemoteTileWorker, TileOutcome, TileTask
from pipeline.inference.runtime import ensure_ray
from segcore.errors import ConfigError
from segcore.geometry.grid import TileGrid

ProgressCallback = Callable[[int], None]


@dataclass(frozen=True)
class PoolConfig:
    """How many actors and what each reserves."""

    workers: int
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    batch_size: int = 4

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")


def default_workers(resources: dict, gpus_per_worker: float) -> int:
    """One actor per GPU when GPUs are used, else one per CPU core."""
    if gpus_per_worker > 0:
        gpus = resources.get("GPU", 0)
        if gpus < gpus_per_worker:
            raise ConfigError(
                f"--gpus-per-worker {gpus_per_worker}: the Ray cluster has {gpus:g} GPU(s)"
            )
        return max(1, int(gpus // gpus_per_worker))
    return max(1, int(resources.get("CPU", 1)))


def tile_tasks(grid: TileGrid) -> list[TileTask]:
    """The grid's tiles as actor tasks."""
    return [
        TileTask(t.index, t.halo.start, t.halo.stop, t.core.start, t.core.stop)
        for t in grid
    ]


class WorkerPool:
    """Model actors plus dynamic scheduling of tile batches."""

    def __init__(self, bundle_path: str, config: PoolConfig) -> None:
        self.config = config
        cpus = ray.cluster_resources().get("CPU", 1)
        threads = max(1, int(cpus // config.workers)) if config.gpus_per_worker == 0 else None
        options = {"num_cpus": config.cpus_per_worker, "num_gpus": config.gpus_per_worker,
                   "max_restarts": 2, "max_task_retries": 2}
        self.actors = [
            RemoteTileWorker.options(**options).remote(bundle_path, threads=threads)
            for _ in range(config.workers)
        ]

    @classmethod
    def start(
        cls, bundle_path: str, *, workers: int | None, gpus_per_worker: float,
        batch_size: int, ray_address: str | None = None,
    ) -> WorkerPool:
        resources = ensure_ray(ray_address)
        n = workers or default_workers(resources, gpus_per_worker)
        return cls(bundle_path, PoolConfig(n, gpus_per_worker, 1.0, batch_size))

    def describe(self, timeout: float = 120.0) -> list[dict]:
        """Per-actor device info (waits until every actor has loaded its model)."""
        return ray.get([a.describe.remote() for a in self.actors], timeout=timeout)

    def run(
        self, store_path: str, output: str, nodata: int, tasks: Sequence[TileTask],
        progress: ProgressCallback | None = None,
    ) -> list[TileOutcome]:
        """Process ``tasks`` of one store; returns one outcome per tile."""
        size = self.config.batch_size
        # Small scenes: spread tiles over all actors rather than one big batch.
        size = max(1, min(size, math.ceil(len(tasks) / len(self.actors))))
        batches = [list(tasks[i : i + size]) for i in range(0, len(tasks), size)]
        outcomes: list[TileOutcome] = []
        pool = ActorPool(self.actors)
        for result in pool.map_unordered(
            lambda actor, batch: actor.run.remote(store_path, output, nodata, batch), batches
        ):
            outcomes.extend(result)
            if progress is not None:
                progress(len(result))
        for actor in self.actors:
            actor.forget.remote(store_path)
        return outcomes

    def shutdown(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    start = time.perf_counter()
    return fn(), time.perf_counter() - start
