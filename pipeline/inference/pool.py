"""A pool of long-lived model actors shared by every scene of a run.

Actors are created once (the model loads once per actor) and fed batches of
tiles dynamically: whichever actor is free takes the next batch, so a slow
tile never holds up the others. Only small outcomes return to the driver.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import ray
from ray.util import ActorPool

from pipeline.inference.actor import RemoteTileWorker
from pipeline.streaming.tile_outcome import TileOutcome
from pipeline.inference.placement import (
    SCHEDULING_STRATEGY,
    default_cpus_per_worker,
    shared_path,
)
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


def injected_faults() -> dict[str, str]:
    """``SEGPIPE_FAULT_*`` settings of this process (tests; README "Faults")."""
    from pipeline.inference.records import FAULT_CRASH, FAULT_FAIL

    env = {"crash": FAULT_CRASH, "fail": FAULT_FAIL, "delay_s": "SEGPIPE_FAULT_DELAY_S"}
    return {k: os.environ[v] for k, v in env.items() if os.environ.get(v)}


def default_workers(available: dict, gpus_per_worker: float,
                    cpus_per_worker: float = 1.0) -> int:
    """As many actors as the free GPUs hold (``GPUs // gpus_per_worker``), else one per
    free CPU core; never more than the free CPUs hold at ``cpus_per_worker`` each."""
    cpus = available.get("CPU", 1) + 1e-9
    by_cpu = int(cpus // cpus_per_worker) if cpus_per_worker > 0 else None
    if gpus_per_worker > 0:
        n = int(available.get("GPU", 0) // gpus_per_worker + 1e-9)
        return max(1, min(n, by_cpu) if by_cpu is not None else n)
    return max(1, by_cpu if by_cpu is not None else int(cpus))


def _available_resources(workers: int | None, gpus_per_worker: float,
                         settle_s: float = 10.0, cpus_per_worker: float = 1.0) -> dict:
    """Free resources; waits briefly for actors killed a moment ago to release theirs."""
    deadline = time.monotonic() + settle_s
    while True:
        available = ray.available_resources()
        want = {"GPU": (workers or 1) * gpus_per_worker,
                "CPU": (workers or 1) * cpus_per_worker}
        if all(available.get(k, 0.0) + 1e-9 >= v for k, v in want.items() if v > 0):
            return available
        if time.monotonic() > deadline:
            return available
        time.sleep(0.2)


def check_capacity(available: dict, workers: int, gpus_per_worker: float,
                   cpus_per_worker: float) -> None:
    """Refuse a pool the cluster cannot place (Ray would wait for it forever)."""
    needs = {"CPU": workers * cpus_per_worker, "GPU": workers * gpus_per_worker}
    for resource, amount in needs.items():
        have = available.get(resource, 0.0)
        if amount > 0 and have + 1e-9 < amount:
            raise ConfigError(
                f"--workers {workers} with {gpus_per_worker if resource == 'GPU' else cpus_per_worker:g}"
                f" {resource} each needs {amount:g} {resource}, but the Ray cluster has "
                f"{have:g} free; lower --workers or --gpus-per-worker"
            )


class WorkerPool:
    """Model actors plus dynamic scheduling of tile batches."""

    def __init__(self, bundle_path: str, config: PoolConfig) -> None:
        self.config = config
        cpus = ray.cluster_resources().get("CPU", 1)
        threads = max(1, int(cpus // config.workers)) if config.gpus_per_worker == 0 else None
        # SPREAD: one actor per node before any node gets a second (multi-node runs).
        options = {"num_cpus": config.cpus_per_worker, "num_gpus": config.gpus_per_worker,
                   "max_restarts": 2, "max_task_retries": 2,
                   "scheduling_strategy": SCHEDULING_STRATEGY}
        self.actors = [
            RemoteTileWorker.options(**options).remote(bundle_path, threads=threads)
            for _ in range(config.workers)
        ]

    @classmethod
    def start(
        cls, bundle_path: str, *, workers: int | None, gpus_per_worker: float,
        batch_size: int, ray_address: str | None = None,
        cpus_per_worker: float | None = None,
    ) -> WorkerPool:
        """Join/start Ray and place the actors; ``workers=None``: as many as fit.

        ``cpus_per_worker`` defaults to 1 on CPU and ``min(1, gpus_per_worker)`` with
        GPUs (placement.default_cpus_per_worker), so fractional-GPU actors fit.
        """
        ensure_ray(ray_address)
        cpus = (default_cpus_per_worker(gpus_per_worker) if cpus_per_worker is None
                else cpus_per_worker)
        available = _available_resources(workers, gpus_per_worker, cpus_per_worker=cpus)
        n = workers or default_workers(available, gpus_per_worker, cpus)
        check_capacity(available, n, gpus_per_worker, cpus)
        pool = cls(shared_path(bundle_path), PoolConfig(n, gpus_per_worker, cpus, batch_size))
        pool.describe()  # every actor placed and its model loaded, or a clear error
        return pool

    def describe(self, timeout: float = 300.0) -> list[dict]:
        """Per-actor device info (waits until every actor has loaded its model)."""
        try:
            return ray.get([a.describe.remote() for a in self.actors], timeout=timeout)
        except ray.exceptions.GetTimeoutError:
            raise ConfigError(
                f"{len(self.actors)} model workers did not start within {timeout:g} s; "
                "the Ray cluster may lack the CPUs/GPUs they reserve"
            ) from None

    def run(
        self, store_path: str, nodata: int, grid: TileGrid,
        progress: ProgressCallback | None = None,
        on_outcomes: Callable[[list[TileOutcome]], None] | None = None, *,
        indices: list[tuple[int, ...]] | None = None, records: str | None = None,
        scene_id: str = "",
    ) -> list[TileOutcome]:
        """Process the tiles ``indices`` (default: all) of ``grid`` for one store; returns one
        outcome per tile.

        ``on_outcomes`` sees each finished batch as it arrives (the instance stitcher
        consumes the boundary records there, so they are not all held at once).
        ``records``: directory for tile completion records (resume). Fault-injection
        variables (``SEGPIPE_FAULT_*``) of the driver's environment are passed on.
        """
        indices = [t.index for t in grid] if indices is None else list(indices)
        if not indices:
            return []
        size = self.config.batch_size
        # Small scenes: spread tiles over all actors rather than one big batch.
        size = max(1, min(size, math.ceil(len(indices) / len(self.actors))))
        batches = [indices[i : i + size] for i in range(0, len(indices), size)]
        outcomes: list[TileOutcome] = []
        pool = ActorPool(self.actors)
        grid_ref = ray.put(grid)
        faults = injected_faults()
        for result in pool.map_unordered(
            lambda actor, batch: actor.run.remote(store_path, nodata, grid_ref, batch,
                                                  records=records, scene_id=scene_id,
                                                  faults=faults), batches
        ):
            if on_outcomes is not None:
                on_outcomes(result)
            outcomes.extend(replace(o, patches=[], cut_ids=None) for o in result)
            if progress is not None:
                progress(len(result))
        for actor in self.actors:
            actor.forget.remote(store_path)
        return outcomes

    def shutdown(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
