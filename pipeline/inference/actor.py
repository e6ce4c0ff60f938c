"""The Ray actor shell: load the model once, then read tiles + halo from the
Zarr store, predict, and write only the tile cores back.

Each core is exactly one chunk of the output array, so no two actors ever write
the same chunk; pixels never travel through the driver or Ray's object store.
"""

from __future__ import annotations

import ctypes
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import ray
import torch

from pipeline.bundle import load_bundle
from pipeline.inference.predictor import TilePredictor
from pipeline.store import IMAGE, VALID, open_store


@dataclass(frozen=True)
class TileTask:
    """A tile as the actor needs it: halo window to read, core to write (2-D)."""

    index: tuple[int, ...]
    halo_start: tuple[int, ...]
    halo_stop: tuple[int, ...]
    core_start: tuple[int, ...]
    core_stop: tuple[int, ...]

    def halo_slices(self) -> tuple[slice, ...]:
        return tuple(slice(a, b) for a, b in zip(self.halo_start, self.halo_stop))

    def core_slices(self) -> tuple[slice, ...]:
        return tuple(slice(a, b) for a, b in zip(self.core_start, self.core_stop))

    def core_in_halo(self) -> tuple[slice, ...]:
        return tuple(
            slice(c0 - h0, c1 - h0)
            for c0, c1, h0 in zip(self.core_start, self.core_stop, self.halo_start)
        )


@dataclass(frozen=True)
class TileOutcome:
    index: tuple[int, ...]
    seconds: float
    worker: str


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

    def run(self, store_path: str, output: str, nodata: int, tasks: list[TileTask]) -> list[TileOutcome]:
        group = self._stores.get(store_path)
        if group is None:
            group = self._stores[store_path] = open_store(Path(store_path), mode="r+")
        image, valid, out = group[IMAGE], group[VALID], group[output]
        start = time.perf_counter()
        images = [image[(slice(None), *t.halo_slices())] for t in tasks]
        valids = [np.asarray(valid[t.halo_slices()], dtype=bool) for t in tasks]
        labels = self.predictor.predict(images, valids, nodata=nodata)
        for t, lab in zip(tasks, labels):
            out[t.core_slices()] = lab[t.core_in_halo()]
        per_tile = (time.perf_counter() - start) / max(len(tasks), 1)
        _release_free_memory()
        return [TileOutcome(t.index, per_tile, self.worker_id) for t in tasks]

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
