"""What a finished tile sends back to the driver: timings and stitching records.

Only small results travel: for instance models, the tile's global id range, the ids
cut at its halo limit and its own labels over each neighbour's core, compressed
(:func:`pack_patch`). The instance stitcher (:mod:`pipeline.streaming.stitching`)
consumes them as tiles finish.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def pack_patch(patch: np.ndarray) -> bytes:
    """Compress a uint64 label patch (mostly zeros and runs) for the trip to the driver.

    Small results travel inline with the task reply; large ones would go through
    Ray's shared-memory object store, whose pages stay resident in every process
    that touched them, so memory would grow with the number of tiles.
    """
    return zlib.compress(np.ascontiguousarray(patch, dtype=np.uint64).tobytes(), 1)


def unpack_patch(data: bytes, shape: tuple[int, ...]) -> np.ndarray:
    return np.frombuffer(zlib.decompress(data), dtype=np.uint64).reshape(shape)


@dataclass(frozen=True)
class TileOutcome:
    """What a tile sends back: timings and, for instance models, stitching records."""

    index: tuple[int, ...]
    seconds: float
    worker: str
    id_offset: int = 0
    id_count: int = 0
    retried: bool = False  # an earlier attempt at this tile was recorded (crash, kill)
    skipped: bool = False  # no valid pixel in the core: the model did not run
    cut_ids: np.ndarray | None = None
    # (neighbour index, window start, window stop, this tile's global ids there, packed)
    patches: list[tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], bytes]] = field(
        default_factory=list)
    # semantic-only models: the core's class totals and stuff statistics
    # (pipeline.streaming.tile_stats); travel to the driver, never into a record
    totals: Any = field(default=None, compare=False, repr=False)
    stuff: Any = field(default=None, compare=False, repr=False)
