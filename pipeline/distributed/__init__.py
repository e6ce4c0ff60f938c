"""Block passes as Ray tasks spread over the cluster (:class:`RayBlocks`)."""

from __future__ import annotations

import ray

from pipeline.blockmap import BlockMap, serial
from pipeline.distributed.ray_blocks import RayBlocks, nodes_seen, warm_up

__all__ = ["RayBlocks", "default_blocks", "nodes_seen", "warm_up"]


def default_blocks() -> BlockMap:
    """Ray tasks when this process is connected to Ray, else a loop in this process."""
    return RayBlocks() if ray.is_initialized() else serial
