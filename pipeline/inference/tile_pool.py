"""What the scene runner needs of a pool of model workers, wherever they run.

Two pools implement it: :class:`~pipeline.inference.pool.WorkerPool` (Ray actors on
a local runtime or a cluster) and :class:`~pipeline.inference.local_pool.LocalPool`
(one model in the command's own process, for small runs). Each brings the
:class:`~pipeline.blockmap.BlockMap` its block passes run on: Ray tasks beside the
actors, or threads beside the local model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from pipeline.blockmap import BlockMap
from pipeline.inference.scene_intensity import SceneNormalisation
from pipeline.streaming.tile_outcome import TileOutcome
from pipeline.streaming.tile_stats import TileStatsSpec
from segcore.geometry.grid import TileGrid


class TilePool(Protocol):
    """Model workers that run tiles of a scene's store, and where block passes run."""

    blocks: BlockMap
    requeued: int

    @property
    def actors(self) -> Sequence[Any]:
        """The workers now in the pool (their count plans the tiles)."""

    def describe(self, timeout: float = ..., *, at_least: int | None = ...) -> list[dict]:
        """Per-worker device information."""

    def run(self, store_path: str, nodata: int, grid: TileGrid,
            progress: Callable[[int], None] | None = None,
            on_outcomes: Callable[[list[TileOutcome]], None] | None = None, *,
            indices: list[tuple[int, ...]] | None = None, records: str | None = None,
            scene_id: str = "", stats: TileStatsSpec | None = None,
            normalisation: SceneNormalisation | None = None) -> list[TileOutcome]:
        """Process tiles of ``grid`` for one store; one outcome per tile (``normalisation``:
        the scene's own per-channel mean and std, for models normalised per scene)."""

    def shutdown(self) -> None:
        """Stop the workers."""


def split_batches(indices: list[tuple[int, ...]], batch_size: int,
                  workers: int) -> list[list[tuple[int, ...]]]:
    """``indices`` in batches of at most ``batch_size``, and at least one per worker while
    there are tiles enough: few tiles (a volume in two windows) run on every worker at
    once, not as one batch on one.

    Examples
    --------
    >>> split_batches([(0,), (1,)], 4, 2)
    [[(0,)], [(1,)]]
    >>> [len(b) for b in split_batches([(i,) for i in range(10)], 4, 2)]
    [4, 4, 2]
    """
    size = max(1, min(batch_size, math.ceil(len(indices) / max(workers, 1))))
    return [indices[i : i + size] for i in range(0, len(indices), size)]
