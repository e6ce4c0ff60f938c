"""The Ray actor shell around :class:`~pipeline.inference.tile_worker.TileWorker`.

The actor is the worker as it runs on a cluster: one per GPU (or CPU share), its
device chosen by the GPUs Ray assigned it, and named ``pid:actor@node`` so the pool
knows which node ran each batch (:func:`pipeline.inference.placement.worker_node`).
"""

from __future__ import annotations

import os

import ray
import torch

from pipeline.inference.tile_worker import TileWorker

__all__ = ["RayTileWorker", "RemoteTileWorker"]


class RayTileWorker(TileWorker):
    """A :class:`TileWorker` inside a Ray actor."""

    def _device(self) -> str:
        return "cuda" if torch.cuda.is_available() and ray.get_gpu_ids() else "cpu"

    def _identity(self) -> tuple[str, str]:
        context = ray.get_runtime_context()
        node = context.get_node_id()
        return node, f"{os.getpid()}:{context.get_actor_id()}@{node}"

    def describe(self) -> dict:
        return {**super().describe(), "gpu_ids": [str(g) for g in ray.get_gpu_ids()]}


RemoteTileWorker = ray.remote(RayTileWorker)
