"""Cross-tile instance stitching over the Zarr store (segcore.labels does the math).

As tiles finish, their boundary records arrive (:meth:`InstanceStitcher.add`):
a tile's own global ids over each neighbour's core. As soon as the neighbour's
core is stored too, the pair is reduced to a small overlap table and the
patch is dropped, so the driver holds only the records of the tiles in flight.
After the last tile, :meth:`InstanceStitcher.plan` merges matched ids with
union-find and numbers the objects 1..M; :func:`relabel_instances` applies
that lookup table chunk by chunk. No scene-sized label array is ever in memory.
"""

from __future__ import annotations

import numpy as np
import zarr

from pipeline.blockmap import BlockMap, serial
from pipeline.store import iter_blocks
from pipeline.streaming.tile_outcome import TileOutcome, unpack_patch
from segcore.labels.stitch import (
    IdRange,
    OverlapTable,
    StitchPlan,
    overlap_table,
    stitch_plan,
)


class InstanceStitcher:
    """Collects boundary records while tiles finish; builds the stitch plan."""

    def __init__(self, instance_raw: zarr.Array) -> None:
        self.raw = instance_raw
        self.done: set[tuple[int, ...]] = set()
        self.pending: dict[tuple[int, ...], list[tuple[tuple[slice, ...], bytes]]] = {}
        self.tables: list[OverlapTable] = []
        self.ranges: list[IdRange] = []
        self.cut: list[np.ndarray] = []

    def add(self, outcomes: list[TileOutcome]) -> None:
        for o in outcomes:
            self.done.add(o.index)
            self.ranges.append(IdRange(o.id_offset, o.id_count))
            if o.cut_ids is not None:
                self.cut.append(o.cut_ids)
            for neighbour, start, stop, packed in o.patches:
                window = tuple(slice(a, b) for a, b in zip(start, stop))
                self.pending.setdefault(neighbour, []).append((window, packed))
        for index in [i for i in self.pending if i in self.done]:
            for window, packed in self.pending.pop(index):
                stored = self.raw[window]
                self.tables.append(overlap_table(unpack_patch(packed, stored.shape), stored))

    def plan(self) -> StitchPlan:
        """Merge every matched pair; final ids 1..M in uint32."""
        if self.pending:
            missing = sorted(self.pending)[:3]
            raise RuntimeError(f"stitching: tiles {missing} never reported their cores")
        return stitch_plan(self.tables, self.ranges, cut_ids=self.cut, dtype=np.uint32)


def _relabel_block(key: tuple[slice, ...], raw: zarr.Array, out: zarr.Array,
                   label_map: object) -> None:
    out[key] = label_map.apply(raw[key])


def relabel_instances(raw: zarr.Array, out: zarr.Array, plan: StitchPlan,
                      blocks: BlockMap = serial) -> None:
    """Write ``out = plan(raw)``, one block pass over the chunks (the lookup table is
    sent to each worker once)."""
    blocks.map(_relabel_block, list(iter_blocks(raw.shape, raw.chunks)), raw, out,
               plan.label_map, label="relabel")
