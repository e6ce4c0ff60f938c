"""The tile worker: load the model once, then read tiles + halo from the Zarr
store, predict, and write only the tile cores back.

A :class:`TileWorker` runs inside a Ray actor (:mod:`pipeline.inference.actor`, what
a cluster run uses) or in the command's own process (:mod:`pipeline.inference.local_pool`,
small runs without Ray); it imports no Ray itself.

Each core is exactly one chunk of every output array, so no two actors ever
write the same chunk; pixels never travel through the driver or Ray's object
store. For instance models the actor also returns what cross-tile stitching
needs: its id range, the ids cut at its halo limit, and its own labels over
For instance models the worker also writes the thing pixels' offsets of its core and
returns the centre peaks found in its core (scene coordinates), from which the scene's
instances are made once every tile has finished (:mod:`pipeline.streaming.centres`).

Keeping the model fed: a batch is split into two or more model calls; two I/O
threads read the next tiles while the model runs and write finished ones
behind it, so reads and writes overlap compute. A tile whose core holds no
valid pixel is not run through the model at all (its core stays nodata).
After a tile's chunks are written its completion record is written
(:mod:`pipeline.inference.records`), which is what a resumed run trusts.
"""

from __future__ import annotations

import math
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import zarr

from pipeline.bundle import load_bundle
from pipeline.heap import release_free_memory
from pipeline.inference import records as rec
from pipeline.inference.predictor import TilePrediction, TilePredictor
from pipeline.inference.scene_intensity import SceneNormalisation
from pipeline.storage.chunk_io import read_region, write_region
from pipeline.store import IMAGE, OFFSETS, SEMANTIC, VALID, open_store
from pipeline.streaming.tile_outcome import TileOutcome
from pipeline.streaming.tile_stats import TileStatsSpec, count_core
from segcore.errors import ModelError
from segcore.geometry.grid import Tile, TileGrid


def injected_faults() -> dict[str, str]:
    """``SEGPIPE_FAULT_*`` settings of this process (tests; docs/how-it-works.md, "Faults")."""
    env = {"crash": rec.FAULT_CRASH, "fail": rec.FAULT_FAIL, "delay_s": "SEGPIPE_FAULT_DELAY_S"}
    return {k: os.environ[v] for k, v in env.items() if os.environ.get(v)}


class OpenStore:
    """A store's arrays as one run opens them: ``store[name]`` reads an array's metadata
    once (about 0.4 ms a read, three or four a tile otherwise). A run's arrays do not
    change while it runs; :meth:`TileWorker.forget` drops them after it."""

    def __init__(self, path: str) -> None:
        self.group = open_store(path, mode="r+")
        self._arrays: dict[str, zarr.Array] = {}

    def __getitem__(self, name: str) -> zarr.Array:
        array = self._arrays.get(name)
        if array is None:
            array = self._arrays[name] = self.group[name]
        return array


class TileWorker:
    """Holds one model; processes batches of tiles of one store at a time."""

    def __init__(self, bundle_path: str, *, threads: int | None = None,
                 device: str | None = None, io_threads: int = 2) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.predictor = TilePredictor(load_bundle(bundle_path), device=device or self._device())
        self.node_id, self.worker_id = self._identity()
        self._stores: dict[str, OpenStore] = {}
        self._io = ThreadPoolExecutor(max_workers=io_threads, thread_name_prefix="tile-io")

    def _device(self) -> str:
        """The device when none is given: this process's GPU if it has one."""
        return "cuda" if torch.cuda.is_available() else "cpu"

    def _identity(self) -> tuple[str, str]:
        """``(node, worker)``: this host, and ``pid:local@host`` for the worker."""
        host = socket.gethostname()
        return host, f"{os.getpid()}:local@{host}"

    def describe(self) -> dict:
        return {
            "worker": self.worker_id,
            "node": self.node_id,
            "device": str(self.predictor.device),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
        }

    def run(self, store_path: str, nodata: int, grid: TileGrid,
            indices: list[tuple[int, ...]], *, records: str | None = None,
            scene_id: str = "", faults: dict[str, str] | None = None,
            stats: TileStatsSpec | None = None,
            normalisation: SceneNormalisation | None = None) -> list[TileOutcome]:
        """Predict and write the tiles ``indices``; one outcome per tile, in order.

        ``records``: directory for completion records (None: no records).
        ``faults``: ``SEGPIPE_FAULT_*`` values from the driver (tests only).
        ``stats``: count each written core (semantic-only models; outcome ``totals``
        and ``stuff``, :mod:`pipeline.streaming.tile_stats`).
        ``normalisation``: the scene's own mean and std, for a model normalised per
        scene (``input.scene``; computed by the driver's block pass, once per scene).
        """
        group = self._stores.get(store_path)
        if group is None:
            group = self._stores[store_path] = OpenStore(store_path)
        start = time.perf_counter()
        if normalisation is None and self.predictor.bundle.spec.input.scene is not None:
            raise ModelError(f"model '{self.predictor.bundle.name}' is normalised per scene "
                             "(input.scene) but no scene normalisation was given")
        scene = normalisation.arrays() if normalisation is not None else None
        tiles = [grid.tile_at(i) for i in indices]
        faults = faults or {}
        step = max(1, math.ceil(len(tiles) / 2))  # two model calls: one computes, one loads
        reads = [self._io.submit(self._read, group, t) for t in tiles]
        writes = []
        for first in range(0, len(tiles), step):
            part = list(range(first, min(first + step, len(tiles))))
            attempts = {i: self._begin(grid, tiles[i], records, scene_id, faults) for i in part}
            inputs = {i: reads[i].result() for i in part}
            predictions = self._predict(tiles, inputs, nodata, scene)
            for i in part:
                writes.append(self._io.submit(self._finish, group, grid, tiles[i], predictions[i],
                                              records, attempts[i], inputs[i][1], stats, nodata))
        results = [w.result() for w in writes]
        per_tile = (time.perf_counter() - start) / max(len(tiles), 1)
        release_free_memory()  # arenas of the decode threads: flat memory over many tiles
        return [TileOutcome(**{**r, "seconds": per_tile}) for r in results]

    def _begin(self, grid: TileGrid, tile: Tile, records: str | None, scene_id: str,
               faults: dict[str, str]) -> bool:
        """Mark the attempt; apply injected faults. True when this tile is being retried."""
        flat = grid.flat_index(tile.index)
        retried = rec.mark_started(records, flat) if records else False
        delay = float(faults.get("delay_s", 0) or 0)
        if delay:
            time.sleep(delay)
        if rec.fault_matches(faults.get("crash"), scene_id, flat) and records:
            rec.crash_once(records, flat)
        if rec.fault_matches(faults.get("fail"), scene_id, flat):
            raise rec.InjectedFault(f"tile {tile.index} failed: injected fault ({rec.FAULT_FAIL})")
        return retried

    @staticmethod
    def _read(group, tile: Tile) -> tuple[np.ndarray, np.ndarray]:
        image = read_region(group[IMAGE], (slice(None), *tile.halo.slices))
        valid = read_region(group[VALID], tile.halo.slices).astype(bool, copy=False)
        return image, valid

    def _predict(self, tiles: list[Tile], inputs: dict[int, tuple[np.ndarray, np.ndarray]],
                 nodata: int, scene: tuple[np.ndarray, np.ndarray] | None = None
                 ) -> dict[int, TilePrediction | None]:
        """Run the model on tiles with valid core pixels; ``None`` for the others."""
        live = [i for i, (_, valid) in inputs.items() if valid[tiles[i].core_in_halo.slices].any()]
        out: dict[int, TilePrediction | None] = dict.fromkeys(inputs)
        if live:
            preds = self.predictor.predict([inputs[i][0] for i in live],
                                           [inputs[i][1] for i in live], nodata=nodata,
                                           scene=scene)
            out.update(zip(live, preds))
        return out

    def _finish(self, group, grid: TileGrid, tile: Tile, pred: TilePrediction | None,
                records: str | None, retried: bool, valid: np.ndarray | None = None,
                stats: TileStatsSpec | None = None, nodata: int = 255) -> dict:
        """Write the core chunks, then the completion record; returns the outcome fields
        (with the core's statistics when ``stats`` is given; ``valid``: the halo's mask)."""
        outcome: dict = {"index": tile.index, "seconds": 0.0, "worker": self.worker_id,
                         "retried": retried, "skipped": pred is None}
        if pred is not None:
            write_region(group[SEMANTIC], tile.core.slices,
                         pred.semantic[tile.core_in_halo.slices])
            if pred.offsets is not None:
                outcome.update(self._write_centres(group, tile, pred))
        elif self.predictor.has_instances:
            outcome["centres"] = np.zeros((0, len(grid.shape)), np.int64)
            outcome["scores"] = np.zeros(0, np.float32)
        if records:
            flat = grid.flat_index(tile.index)
            rec.write_record(records, flat, TileOutcome(**outcome))
        if stats is not None and valid is not None:
            core = tile.core_in_halo.slices
            labels = (pred.semantic[core] if pred is not None
                      else np.full(valid[core].shape, nodata, group[SEMANTIC].dtype))
            outcome["totals"], outcome["stuff"] = count_core(stats, labels, valid[core],
                                                             tile.core.slices)
        return outcome

    @staticmethod
    def _write_centres(group, tile: Tile, pred: TilePrediction) -> dict:
        """Write the core's offsets; the peaks in the core, in scene coordinates.

        A peak is decided over the ``nms_kernel`` window around it, which the halo holds
        for every core pixel, so each of the scene's peaks is found by exactly one tile.
        """
        core = tile.core_in_halo
        write_region(group[OFFSETS], (slice(None), *tile.core.slices),
                     pred.offsets[(slice(None), *core.slices)])
        local = pred.centres
        inside = np.all((local >= np.asarray(core.start)) & (local < np.asarray(core.stop)),
                        axis=1)
        centres = local[inside] + np.asarray(tile.halo.start, np.int64)
        return {"centres": centres.astype(np.int64), "scores": pred.scores[inside]}

    def forget(self, store_path: str) -> None:
        """Drop the cached handle of a finished store."""
        self._stores.pop(store_path, None)

    def close(self) -> None:
        """Stop the I/O threads (a worker in the command's own process)."""
        self._stores.clear()
        self._io.shutdown(wait=True)
