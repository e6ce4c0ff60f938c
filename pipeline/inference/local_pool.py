"""The model in the command's own process: small runs without a Ray runtime.

Starting a local Ray runtime and its actors costs several seconds (12-14 s on two
cores, measured in ``bench/startup.py``), more than a small scene takes. A
:class:`LocalPool` runs the same :class:`~pipeline.inference.tile_worker.TileWorker`
in this process instead and hands the block passes to threads
(:class:`~pipeline.blockmap.ThreadBlocks`). Tiles, chunks, completion records and
resume are the same as with actors, so outputs are byte-identical; only where the
work runs differs. :mod:`pipeline.executor` decides which a run gets.

On the CPU the pool runs one batch per core at once, each model call on one torch
thread (torch releases the GIL), as the actors of a local Ray runtime do: one call
on every core's threads was 2.5x slower per tile for a small model here. On a GPU
it runs one batch at a time (the device does the parallel work).

A local pool has no fault domain of its own: a crash of the model kills the command
(what a crashed actor costs the pool is one batch); the completion records let the
next run resume, as after any kill.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import replace

from pipeline.blockmap import BlockMap, ThreadBlocks
from pipeline.inference.scene_intensity import SceneNormalisation
from pipeline.inference.tile_pool import split_batches
from pipeline.inference.tile_worker import TileWorker, injected_faults
from pipeline.streaming.tile_outcome import TileOutcome
from pipeline.streaming.tile_stats import TileStatsSpec
from segcore.errors import ConfigError
from segcore.geometry.grid import TileGrid

ProgressCallback = Callable[[int], None]


class LocalPool:
    """One :class:`TileWorker` in this process, fed ``lanes`` batches at once; the
    interface of :class:`~pipeline.inference.pool.WorkerPool` the scene runner uses.

    ``gpus_per_worker`` > 0 runs the model on this process's GPU (ConfigError when it
    has none); otherwise on the CPU with one lane per core (``cores``).
    """

    requeued = 0

    def __init__(self, bundle_path: str, *, batch_size: int = 4, gpus_per_worker: float = 0.0,
                 cores: int | None = None) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        import torch

        cuda = gpus_per_worker > 0 and torch.cuda.is_available()
        if gpus_per_worker > 0 and not cuda:
            raise ConfigError(f"--gpus-per-worker {gpus_per_worker:g} needs a GPU, but this "
                              "machine has none visible to torch; leave it out to run on the CPU")
        cores = max(1, cores or os.cpu_count() or 1)
        self.batch_size = batch_size
        self.lanes = 1 if cuda else cores
        self.worker = TileWorker(bundle_path, threads=None if cuda else 1,
                                 device="cuda" if cuda else "cpu", io_threads=2 * self.lanes)
        self.blocks: BlockMap = ThreadBlocks(cores)
        self._lanes = ThreadPoolExecutor(max_workers=self.lanes, thread_name_prefix="segpipe-model")

    @property
    def actors(self) -> list[TileWorker]:
        """One entry per lane (the scene runner counts workers to plan tiles)."""
        return [self.worker] * self.lanes

    def describe(self, timeout: float = 0.0, *, at_least: int | None = None) -> list[dict]:
        return [self.worker.describe()]

    def run(
        self, store_path: str, nodata: int, grid: TileGrid,
        progress: ProgressCallback | None = None,
        on_outcomes: Callable[[list[TileOutcome]], None] | None = None, *,
        indices: list[tuple[int, ...]] | None = None, records: str | None = None,
        scene_id: str = "", stats: TileStatsSpec | None = None,
        normalisation: SceneNormalisation | None = None,
    ) -> list[TileOutcome]:
        """Process the tiles ``indices`` (default: all); one outcome per tile.

        The contract of :meth:`WorkerPool.run`: ``on_outcomes`` and ``progress`` see each
        finished batch (in this thread); an error of a batch fails the run once the
        batches already running have finished (none is left writing into the store).
        """
        indices = [t.index for t in grid] if indices is None else list(indices)
        faults = injected_faults()
        batches = split_batches(indices, self.batch_size, self.lanes)
        outcomes: list[TileOutcome] = []

        def one(batch: list[tuple[int, ...]]) -> list[TileOutcome]:
            return self.worker.run(store_path, nodata, grid, batch, records=records,
                                   scene_id=scene_id, faults=faults, stats=stats,
                                   normalisation=normalisation)

        pending: set[Future] = set()
        queue = iter(batches)
        try:
            for batch in queue:
                pending.add(self._lanes.submit(one, batch))
                if len(pending) < self.lanes:
                    continue
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                self._finished(done, outcomes, on_outcomes, progress)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                self._finished(done, outcomes, on_outcomes, progress)
        except BaseException:
            wait(pending)  # drain: nothing may write into the store after the error
            raise
        finally:
            self.worker.forget(store_path)
        return outcomes

    @staticmethod
    def _finished(done: set[Future], outcomes: list[TileOutcome],
                  on_outcomes: Callable[[list[TileOutcome]], None] | None,
                  progress: ProgressCallback | None) -> None:
        for future in done:
            result = future.result()  # a batch's own error fails the run
            if on_outcomes is not None:
                on_outcomes(result)
            outcomes.extend(replace(o, centres=None, scores=None) for o in result)
            if progress is not None:
                progress(len(result))

    def shutdown(self) -> None:
        """Nothing runs outside this process; the model and I/O threads stop."""
        self._lanes.shutdown(wait=True)
        self.worker.close()
