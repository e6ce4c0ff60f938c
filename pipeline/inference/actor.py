"""The Ray actor shell: load the model once, then read tiles + halo from the
Zarr store, predict, and write only the tile cores back.

Each core is exactly one chunk of every output array, so no two actors ever
write the same chunk; pixels never travel through the driver or Ray's object
store. For instance models the actor also returns what cross-tile stitching
needs: its id range, the ids cut at its halo limit, and its own labels over
each neighbour's core (at most halo x tile side pixels per neighbour).
"""

from __future__ import annotations

import ctypes
import os
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import ray
import torch

from pipeline.bundle import load_bundle
from pipeline.inference.predictor import TilePredictor
from pipeline.store import IMAGE, INSTANCE_RAW, SEMANTIC, VALID, open_store
from segcore.geometry.grid import Tile, TileGrid
from segcore.labels.stitch import core_instances, halo_cut_ids, neighbour_overlaps, offset_ids


def id_offset(grid: TileGrid, index: tuple[int, ...]) -> int:
    """First global instance id of a tile, minus one: ``flat index x pixels per core``.

    A core cannot hold more instances than pixels, so ranges never overlap.
    """
    flat = int(np.ravel_multi_index(index, grid.grid_shape))
    return flat * int(np.prod(grid.tile))


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
    cut_ids: np.ndarray | None = None
    # (neighbour index, window start, window stop, this tile's global ids there, packed)
    patches: list[tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], bytes]] = field(
        default_factory=list)


class TileWorker:
    """Holds one model; processes batches of tiles of one store at a time."""

    def __init__(self, bundle_path: str, *, threads: int | None = None) -> None:
        if threads:
            torch.set_num_threads(threads)
        device = "cuda" if torch.cuda.is_available() and ray.get_gpu_ids() else "cpu"
        self.predictor = TilePredictor(load_bundle(bundle_path), device=device)
        self.worker_id = f"{os.getpid()}:{ray.get_runtime_context().get_actor_id()}"
        self._stores: dict[str, object] = {}

    def describe(self) -> dict:
        return {
            "worker": self.worker_id,
            "device": str(self.predictor.device),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
        }

    def run(self, store_path: str, nodata: int, grid: TileGrid,
            indices: list[tuple[int, ...]]) -> list[TileOutcome]:
        group = self._stores.get(store_path)
        if group is None:
            group = self._stores[store_path] = open_store(Path(store_path), mode="r+")
        start = time.perf_counter()
        tiles = [grid.tile_at(i) for i in indices]
        images = [group[IMAGE][(slice(None), *t.halo.slices)] for t in tiles]
        valids = [np.asarray(group[VALID][t.halo.slices], dtype=bool) for t in tiles]
        predictions = self.predictor.predict(images, valids, nodata=nodata)
        outcomes = []
        per_tile = 0.0
        for tile, pred in zip(tiles, predictions):
            group[SEMANTIC][tile.core.slices] = pred.semantic[tile.core_in_halo.slices]
            outcome = {}
            if pred.instance is not None:
                outcome = self._write_instances(group, grid, tile, pred.instance)
            per_tile = (time.perf_counter() - start) / len(tiles)
            outcomes.append(TileOutcome(tile.index, per_tile, self.worker_id, **outcome))
        _release_free_memory()
        return outcomes

    @staticmethod
    def _write_instances(group, grid: TileGrid, tile: Tile, local: np.ndarray) -> dict:
        ids, count = core_instances(local, tile.core_in_halo)
        offset = id_offset(grid, tile.index)
        global_ids = offset_ids(ids, offset, dtype=np.uint64)
        group[INSTANCE_RAW][tile.core.slices] = global_ids[tile.core_in_halo.slices]
        patches = []
        for neighbour, window in neighbour_overlaps(grid, tile):
            patch = global_ids[window.relative_to(tile.halo).slices]
            if patch.any():
                patches.append((neighbour, window.start, window.stop, pack_patch(patch)))
        return {"id_offset": offset, "id_count": count, "patches": patches,
                "cut_ids": halo_cut_ids(global_ids, tile, grid.shape)}

    def forget(self, store_path: str) -> None:
        """Drop the cached handle of a finished store."""
        self._stores.pop(store_path, None)


def _release_free_memory() -> None:
    """Give freed heap back to the OS after each batch (glibc ``malloc_trim``).

    Zarr's decode threads and torch allocate from several malloc arenas; without
    trimming, the arenas' free space accumulates over thousands of tiles and a
    worker's resident memory creeps up with the scene size instead of staying flat.
    """
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _load_libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018 - glibc only
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _load_libc()
RemoteTileWorker = ray.remote(TileWorker)
