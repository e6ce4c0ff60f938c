"""A pool of long-lived model actors shared by every scene of a run.

Actors are created once (the model loads once per actor) and fed batches of
tiles dynamically: whichever actor is free takes the next batch, so a slow
tile never holds up the others. Only small outcomes return to the driver.

The pool is elastic (:mod:`pipeline.inference.members`): on a cluster it asks the
autoscaler for what it needs, starts the actors that fit now and adds actors on
nodes that join; actors on nodes that leave are dropped and their batches run
elsewhere (:mod:`pipeline.inference.dispatch`); dead actors are replaced. On a
local runtime, which cannot grow, a pool that cannot place one actor is refused.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import ray

from pipeline.blockmap import ThreadBlocks
from pipeline.distributed import RayBlocks, warm_up
from pipeline.inference.actor import RemoteTileWorker
from pipeline.inference.dispatch import dispatch
from pipeline.inference.members import ActorSet, Member
from pipeline.inference.placement import (
    default_cpus_per_worker,
    request_capacity,
    runtime_is_local,
    shared_path,
    worker_demand,
    worker_node,
    workers_that_fit,
)
from pipeline.inference.runtime import ensure_ray
from pipeline.inference.scene_intensity import SceneNormalisation
from pipeline.inference.tile_pool import split_batches
from pipeline.inference.tile_worker import injected_faults
from pipeline.streaming.tile_outcome import TileOutcome
from pipeline.streaming.tile_stats import TileStatsSpec
from segcore.errors import ConfigError
from segcore.geometry.grid import TileGrid

CLUSTER_WAIT_S = 600.0  # how long a cluster may take to offer a node for the first actor
SAME_AS_WORKERS = -1  # PoolConfig.max_workers: a pool that keeps its size
# Longest wait at the pool's start for the block-pass workers' imports (ray_blocks.warm_up).
# Measured at 8192² with the near-free model, 2 cores, two runs each: waiting took the
# first scene's inference from 4.1-4.4 s to 3.5 s, the command's wall time unchanged.
WARM_UP_WAIT_S = 60.0
ProgressCallback = Callable[[int], None]


@dataclass(frozen=True)
class PoolConfig:
    """How many actors and what each reserves.

    ``workers``: actors started now. ``max_workers``: the most the pool grows to when
    nodes join (None: as many as fit); by default the pool keeps ``workers``.
    """

    workers: int
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    batch_size: int = 4
    max_workers: int | None = SAME_AS_WORKERS

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_workers not in (None, SAME_AS_WORKERS) and self.max_workers < 1:
            raise ConfigError(f"max_workers must be >= 1 or None, got {self.max_workers}")

    @property
    def cap(self) -> int | None:
        """The most actors the pool holds at once (None: no limit)."""
        return self.workers if self.max_workers == SAME_AS_WORKERS else self.max_workers

    @property
    def demand(self) -> dict[str, float]:
        return worker_demand(self.gpus_per_worker, self.cpus_per_worker)


def _available_resources(count: int, demand: dict[str, float], settle_s: float = 10.0) -> dict:
    """Free resources; waits briefly for actors killed a moment ago to release theirs."""
    deadline = time.monotonic() + settle_s
    while True:
        available = ray.available_resources()
        if workers_that_fit(available, demand) >= count or time.monotonic() > deadline:
            return available
        time.sleep(0.2)


def _describe_demand(gpus_per_worker: float, cpus_per_worker: float) -> str:
    if gpus_per_worker > 0:
        return f"--gpus-per-worker {gpus_per_worker:g} needs {gpus_per_worker:g} GPU and " \
               f"{cpus_per_worker:g} CPU per worker"
    return f"a CPU worker needs {cpus_per_worker:g} CPU"


def _amounts(resources: dict, demand: dict) -> str:
    return " and ".join(f"{resources.get(k, 0.0):g} {k}" for k in demand)


def local_workers(workers: int | None, gpus_per_worker: float, cpus_per_worker: float) -> int:
    """Actors to start on a local runtime: ``workers`` at most, as many as fit now.

    Raises
    ------
    ConfigError
        When not one actor fits: the runtime lacks the resource (it cannot grow), or
        other actors hold it.
    """
    demand = worker_demand(gpus_per_worker, cpus_per_worker)
    total = ray.cluster_resources()
    ever = workers_that_fit(total, demand)
    if ever == 0:
        short = next(k for k, v in demand.items() if total.get(k, 0.0) + 1e-9 < v)
        raise ConfigError(
            f"{_describe_demand(gpus_per_worker, cpus_per_worker)}, but this local Ray "
            f"runtime has {total.get(short, 0.0):g} {short} (0 free) and cannot grow; lower "
            "--gpus-per-worker, or join a cluster that has them with --ray-address")
    want = min(workers or ever, ever)
    available = _available_resources(want, demand)
    now = min(want, workers_that_fit(available, demand))
    if now == 0:
        raise ConfigError(
            f"{_describe_demand(gpus_per_worker, cpus_per_worker)}, but none of the local Ray "
            f"runtime's {_amounts(total, demand)} is free (other actors hold it)")
    return now


class WorkerPool:
    """Model actors plus dynamic scheduling of tile batches.

    ``actors``: the actors now in the pool (it changes when nodes join or leave);
    ``requeued``, ``members.replaced``/``grown``/``dropped_with_node``: what happened.
    """

    def __init__(self, bundle_path: str, config: PoolConfig, *,
                 wait_s: float = CLUSTER_WAIT_S, warm_modules: tuple[str, ...] = ()) -> None:
        self.config, self.wait_s = config, wait_s
        cpus = ray.cluster_resources().get("CPU", 1)
        threads = max(1, int(cpus // config.workers)) if config.gpus_per_worker == 0 else None
        options = {"num_cpus": config.cpus_per_worker, "num_gpus": config.gpus_per_worker,
                   "max_restarts": 2, "max_task_retries": 2}

        def spawn(strategy):
            return RemoteTileWorker.options(**options, scheduling_strategy=strategy).remote(
                bundle_path, threads=threads)

        self.members = ActorSet(spawn, config.demand, cap=config.cap)
        # one actor per node before any node gets a second (multi-node runs)
        self.members.spawn(config.workers)
        # block-pass workers import their modules (and ``warm_modules``) while the models load
        self._warming = warm_up(warm_modules)
        self.requeued = 0
        self._requested = False
        # block passes: Ray tasks over the cluster; on a runtime started here, ingest
        # in this process's threads (pipeline.distributed.ray_blocks)
        self.blocks = RayBlocks(local=ThreadBlocks(max(1, int(cpus))) if runtime_is_local()
                                else None)

    @property
    def actors(self) -> list:
        return self.members.actors

    @classmethod
    def start(
        cls, bundle_path: str, *, workers: int | None, gpus_per_worker: float,
        batch_size: int, ray_address: str | None = None,
        cpus_per_worker: float | None = None, wait_s: float = CLUSTER_WAIT_S,
        warm_modules: tuple[str, ...] = (),
    ) -> WorkerPool:
        """Join/start Ray and place the actors: ``workers`` at most, None: as many as fit.

        A local runtime (started here) starts the actors that fit now and refuses a
        pool of which not one fits (ConfigError). On a cluster the pool asks the
        autoscaler for ``workers`` actors' resources (one actor's without ``workers``),
        starts those that fit now (at least one, waiting up to ``wait_s`` for a node)
        and grows as nodes join. ``cpus_per_worker`` defaults to 1 on CPU and
        ``min(1, gpus_per_worker)`` with GPUs (placement.default_cpus_per_worker).
        ``warm_modules``: what the block-pass workers import besides their own modules
        before the first scene (``ray_blocks.INSTANCE_PASS_MODULES`` for a model with
        instances).
        """
        ensure_ray(ray_address)
        cpus = (default_cpus_per_worker(gpus_per_worker) if cpus_per_worker is None
                else cpus_per_worker)
        local = runtime_is_local()
        demand = worker_demand(gpus_per_worker, cpus)
        if local:
            n = local_workers(workers, gpus_per_worker, cpus)
        else:
            request_capacity([demand] * (workers or 1))
            fit = workers_that_fit(ray.available_resources(), demand)
            n = max(1, min(workers or fit, fit))
        config = PoolConfig(n, gpus_per_worker, cpus, batch_size, max_workers=workers)
        pool = cls(shared_path(bundle_path), config, wait_s=wait_s, warm_modules=warm_modules)
        pool._requested = not local
        try:  # every actor placed and its model loaded (local), or the first one (cluster)
            pool.describe(timeout=300.0 if local else wait_s, at_least=None if local else 1)
            # and the block-pass workers have imported their modules: on few cores their
            # imports would otherwise share the CPUs with the first scene's passes
            ray.wait(pool._warming, num_returns=len(pool._warming), timeout=WARM_UP_WAIT_S)
        except BaseException:
            pool.shutdown()
            raise
        return pool

    def describe(self, timeout: float = 300.0, *, at_least: int | None = None) -> list[dict]:
        """Per-actor device info of the ready actors; waits (up to ``timeout`` s) until
        every actor (or ``at_least`` of them) has loaded its model."""
        deadline = time.monotonic() + timeout
        want = len(self.members.members) if at_least is None else at_least
        while len(ready := self.members.ready()) < min(want, len(self.members.members) or want):
            if time.monotonic() > deadline:
                raise ConfigError(
                    f"{want - len(ready)} of {want} model workers did not start within "
                    f"{timeout:g} s; the Ray cluster lacks the resources each reserves "
                    f"({self.config.demand})")
            self.members.wait_for_probe(timeout=min(1.0, max(deadline - time.monotonic(), 0.01)))
        return [m.info for m in ready]

    def run(
        self, store_path: str, nodata: int, grid: TileGrid,
        progress: ProgressCallback | None = None,
        on_outcomes: Callable[[list[TileOutcome]], None] | None = None, *,
        indices: list[tuple[int, ...]] | None = None, records: str | None = None,
        scene_id: str = "", stats: TileStatsSpec | None = None,
        normalisation: SceneNormalisation | None = None,
    ) -> list[TileOutcome]:
        """Process the tiles ``indices`` (default: all) of ``grid`` for one store; returns one
        outcome per tile.

        ``on_outcomes`` sees each finished batch as it arrives (the centre collector
        keeps each tile's centre peaks there).
        ``records``: directory for tile completion records (resume). Fault-injection
        variables (``SEGPIPE_FAULT_*``) of the driver's environment are passed on.
        A batch whose actor dies runs again on another actor (each tile once in the
        result); a batch that raises an error of its own fails the run.
        """
        indices = [t.index for t in grid] if indices is None else list(indices)
        if not indices:
            return []
        batches = split_batches(indices, self.config.batch_size, len(self.members.members))
        outcomes: list[TileOutcome] = []
        grid_ref = ray.put(grid)
        faults = injected_faults()

        def submit(actor, batch):
            return actor.run.remote(store_path, nodata, grid_ref, batch, records=records,
                                    scene_id=scene_id, faults=faults, stats=stats,
                                    normalisation=normalisation)

        def finished(member: Member, result: list[TileOutcome]) -> None:
            if result:
                member.node = worker_node(result[0].worker)  # moves if Ray restarted it
            if on_outcomes is not None:
                on_outcomes(result)
            outcomes.extend(replace(o, centres=None, scores=None) for o in result)
            if progress is not None:
                progress(len(result))

        try:
            self.requeued += dispatch(batches, self.members, submit, finished,
                                      wait_s=self.wait_s)
        finally:  # the actors' handles of this store (its arrays) end with the run
            for actor in self.actors:
                actor.forget.remote(store_path)
        return outcomes

    def shutdown(self) -> None:
        self.members.shutdown()
        if self._requested:
            request_capacity([])  # withdraw the autoscaler request
            self._requested = False
