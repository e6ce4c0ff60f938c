"""What a finished tile sends back to the driver: timings and small per-tile results.

Only small results travel: for instance models, the centre peaks found in the tile's
core (:mod:`pipeline.streaming.centres` makes the scene's instances from them); for
semantic-only models, the core's class totals and stuff statistics
(:mod:`pipeline.streaming.tile_stats`). Pixels stay in the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TileOutcome:
    """What a tile sends back: timings and, for instance models, its core's centres."""

    index: tuple[int, ...]
    seconds: float
    worker: str
    retried: bool = False  # an earlier attempt at this tile was recorded (crash, kill)
    skipped: bool = False  # no valid pixel in the core: the model did not run
    # instance models: (n, ndim) int64 peaks in the core, scene coordinates, and their
    # (n,) float32 heatmap values; None for semantic-only models
    centres: np.ndarray | None = field(default=None, compare=False)
    scores: np.ndarray | None = field(default=None, compare=False)
    # semantic-only models: the core's class totals and stuff statistics
    # (pipeline.streaming.tile_stats); travel to the driver, never into a record
    totals: Any = field(default=None, compare=False, repr=False)
    stuff: Any = field(default=None, compare=False, repr=False)
