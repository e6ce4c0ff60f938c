"""The scene's instances from one centre list: ids that do not depend on the tiling.

Tile workers write the offsets of their cores' thing pixels (``instance_offsets``) and
send back the centre peaks found in their cores (:mod:`pipeline.inference.tile_worker`).
After the last tile, :class:`CentreCollector` holds the scene's centre list (a few
numbers per object, never pixels), and :func:`assign_instances` runs one block pass
over the core chunks: every thing pixel joins the nearest centre of the whole scene
(:mod:`segcore.instances.centres`). Ids are the centres' ranks in row-major order,
renumbered ``1..M`` by a second pass only when some centre received no pixel.

No instance is cut into pieces that need matching, and no chain of overlap merges can
fuse neighbours: the result is the grouping the whole scene would get in one window.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import zarr

from pipeline.blockmap import BlockMap, serial
from pipeline.storage.chunk_io import read_block, write_region
from pipeline.store import iter_blocks
from pipeline.streaming.tile_outcome import TileOutcome
from segcore.instances.centres import CentreIndex, assign_to_centres, scene_centres
from segcore.labels.relabel import LabelMap
from segcore.panoptic.fusion import FusionStats

__all__ = ["CentreCollector", "InstanceCounts", "assign_instances"]


class CentreCollector:
    """The tiles' centre peaks while tiles finish (a resumed tile's record counts too)."""

    def __init__(self, ndim: int) -> None:
        self.ndim = ndim
        self.parts: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]] = {}

    def add(self, outcomes: Sequence[TileOutcome]) -> None:
        """Keep each tile's peaks (a tile reported twice, e.g. retried, counts once)."""
        for o in outcomes:
            if o.centres is not None:
                self.parts[tuple(o.index)] = (o.centres, o.scores)

    def centres(self, top_k: int | None = None) -> np.ndarray:
        """``(n, ndim)`` int64: the scene's centres, row-major (``top_k`` highest)."""
        return scene_centres(list(self.parts.values()), self.ndim, top_k=top_k)


@dataclass(frozen=True)
class InstanceCounts:
    """What the centre pass found (``report.json`` ``seams``).

    ``instances``: objects in the scene; ``tile_pieces``: (tile core, object) pairs;
    ``across_tiles``: objects with pixels in more than one core.
    """

    instances: int
    tile_pieces: int
    across_tiles: int
    stats: FusionStats | None = None
    """The panoptic fusion's pass-1 statistics of (semantic, the ids written, valid),
    gathered in the same pass when :func:`assign_instances` got ``valid``."""


_CACHE: dict[str, CentreIndex] = {}
_CACHE_LOCK = threading.Lock()


def _index(centres: np.ndarray) -> CentreIndex:
    """The k-d tree of a centre list, built once per process (block workers share it)."""
    key = hashlib.blake2b(np.ascontiguousarray(centres).tobytes(), digest_size=16).hexdigest()
    with _CACHE_LOCK:
        index = _CACHE.get(key)
        if index is None:
            _CACHE.clear()  # one scene at a time per process
            index = _CACHE[key] = CentreIndex(centres)
    return index


def _assign_block(key: tuple[slice, ...], semantic: zarr.Array, offsets: zarr.Array,
                  out: zarr.Array, centres: np.ndarray, thing_ids: np.ndarray,
                  valid: zarr.Array | None = None, nodata: int = 255
                  ) -> tuple[np.ndarray, FusionStats | None]:
    """Write one block's ids; the ids it holds, sorted (uint64), and with ``valid`` the
    block's fusion statistics (:meth:`FusionStats.add` of semantic, ids and valid)."""
    sem = read_block(semantic, key)
    things = np.isin(sem, thing_ids)  # nodata is no thing class
    stats = None if valid is None else FusionStats(ndim=sem.ndim, nodata=nodata)
    if not things.any() or len(centres) == 0:
        if stats is not None:
            stats.add(sem, np.zeros(sem.shape, out.dtype),
                      read_block(valid, key).astype(bool, copy=False),
                      offset=[s.start for s in key])
        return np.zeros(0, np.uint64), stats
    ids = assign_to_centres(things, read_block(offsets, (slice(None), *key)),
                            [s.start for s in key], _index(centres)).astype(out.dtype)
    write_region(out, key, ids)
    if stats is not None:
        stats.add(sem, ids, read_block(valid, key).astype(bool, copy=False),
                  offset=[s.start for s in key])
    return np.unique(ids[ids > 0]).astype(np.uint64), stats


def _renumber_block(key: tuple[slice, ...], out: zarr.Array, table: LabelMap) -> None:
    block = read_block(out, key)
    if block.any():
        write_region(out, key, table.apply(block))


def assign_instances(semantic: zarr.Array, offsets: zarr.Array, out: zarr.Array,
                     centres: np.ndarray, thing_ids: Sequence[int],
                     blocks: BlockMap = serial, *, valid: zarr.Array | None = None,
                     nodata: int = 255) -> InstanceCounts:
    """Write ``out`` (instance ids ``1..M``, 0 = none) from the scene's centre list.

    Parameters
    ----------
    semantic : zarr.Array
        Class ids ``(*S)``; pixels of ``thing_ids`` get an instance.
    offsets : zarr.Array
        ``(ndim, *S)`` float32 pixel-to-centre vectors (``instance_offsets``).
    out : zarr.Array
        ``(*S)`` uint32, filled with 0, chunked like ``semantic``; written block by block.
    centres : (n, ndim) ndarray of int64
        The scene's centres (:meth:`CentreCollector.centres`).
    thing_ids : sequence of int
        Thing classes.
    blocks : BlockMap
        Where the block passes run (Ray tasks, threads, or this process).
    valid, nodata : zarr.Array, int, optional
        With ``valid`` (``(*S)`` bool), the same pass gathers the panoptic fusion's
        statistics (``stats`` of the result: what :func:`~pipeline.streaming.panoptic.
        fusion_stats` of ``semantic``, the final ``out`` and ``valid`` gives), so the
        fusion need not read the arrays again.
    """
    keys = list(iter_blocks(semantic.shape, semantic.chunks))
    things = np.asarray(sorted(thing_ids), np.int64)
    parts = blocks.map(_assign_block, keys, semantic, offsets, out, centres, things, valid,
                       nodata, label="instances")
    held = [ids for ids, _ in parts]
    pieces = np.concatenate(held) if held else np.zeros(0, np.uint64)
    used, per_id = np.unique(pieces, return_counts=True)
    stats = None
    if valid is not None:
        stats = FusionStats(ndim=len(semantic.shape), nodata=nodata).merge_all(
            [part for _, part in parts])
    if len(used) < len(centres):  # a centre without pixels: ids 1..M without gaps
        table = LabelMap(used, np.arange(1, len(used) + 1, dtype=np.uint32))
        written = [k for k, ids in zip(keys, held) if len(ids)]
        blocks.map(_renumber_block, written, out, table, label="instance ids")
        if stats is not None:
            stats = stats.relabelled(table)
    return InstanceCounts(instances=len(used), tile_pieces=len(pieces),
                          across_tiles=int((per_id > 1).sum()), stats=stats)
