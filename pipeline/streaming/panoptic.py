"""Panoptic fusion over the Zarr store, block by block (rules: segcore.panoptic.fusion).

Pass 1 maps (semantic, instance, valid) chunks to per-(instance, class) pixel counts and
bounding boxes, merged into one :class:`FusionStats`; :func:`decide` turns them into a
segment table (majority class per instance, one segment per stuff class, stuff below
``min_stuff_area`` and nodata void); pass 2 writes the ``panoptic`` array (uint32 segment
ids, 0 = void) chunk by chunk. Both passes are block passes (:mod:`pipeline.blockmap`):
on a cluster each chunk group is a task and only the small statistics come back.

A model without an instance head has no ``instance`` array (``instance=None``): its
segments are the stuff segments of the semantic classes, and no ``panoptic`` array is
written (it would repeat the semantic array with other numbers).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import zarr

from pipeline.blockmap import BlockMap, serial
from pipeline.storage.chunk_io import read_block, write_region
from pipeline.store import PANOPTIC, VALID, create_label_array, iter_blocks
from segcore.panoptic.fusion import (
    FusionStats,
    PanopticPlan,
    apply_plan,
    decide,
    segments_table,
)


def _instance_block(instance, key: tuple[slice, ...], shape: tuple[int, ...]) -> np.ndarray:
    if instance is None:
        return np.zeros(shape, np.uint32)
    return read_block(instance, key)


def _block_stats(key: tuple[slice, ...], semantic, instance, valid,
                 nodata: int) -> FusionStats:
    sem = read_block(semantic, key)
    stats = FusionStats(ndim=sem.ndim, nodata=nodata)
    stats.add(sem, _instance_block(instance, key, sem.shape),
              read_block(valid, key).astype(bool, copy=False), offset=tuple(s.start for s in key))
    return stats


def fusion_stats(semantic: zarr.Array | np.ndarray, instance: zarr.Array | np.ndarray | None,
                 valid: zarr.Array | np.ndarray, *, nodata: int,
                 block: tuple[int, ...], blocks: BlockMap = serial) -> FusionStats:
    """Pass 1 over 2-D or 3-D arrays (anything sliceable that pickles: zarr arrays or
    reader views); ``instance=None`` means no instances."""
    shape = tuple(semantic.shape)
    stats = FusionStats(ndim=len(shape), nodata=nodata)
    return stats.merge_all(blocks.map(_block_stats, list(iter_blocks(shape, block)), semantic,
                                      instance, valid, nodata, label="fusion"))


def _apply_block(key: tuple[slice, ...], plan: PanopticPlan, semantic, instance, valid,
                 out) -> None:
    sem = read_block(semantic, key)
    write_region(out, key, apply_plan(plan, sem, _instance_block(instance, key, sem.shape),
                                      read_block(valid, key).astype(bool, copy=False)))


def fuse_scene(group: zarr.Group, semantic: str, instance: str | None,
               classes: Sequence[tuple[int, str, bool]], *, nodata: int,
               min_stuff_area: int, blocks: BlockMap = serial,
               stats: FusionStats | None = None) -> tuple[PanopticPlan, list[dict]]:
    """The scene's segment plan and ``segments.json`` table; writes ``group/panoptic``
    unless ``instance`` is None (a model without instances).

    ``stats``: pass 1's statistics when they are already known (a semantic-only model's
    tiles counted them, :mod:`pipeline.streaming.tile_stats`); else pass 1 runs here.
    """
    sem, valid = group[semantic], group[VALID]
    inst = group[instance] if instance is not None else None
    if stats is None:
        stats = fusion_stats(sem, inst, valid, nodata=nodata, block=sem.chunks, blocks=blocks)
    plan = decide(stats, classes, min_stuff_area=min_stuff_area)
    if inst is not None:
        out = create_label_array(group, PANOPTIC, dtype=np.dtype("uint32"), fill_value=0,
                                 chunks=sem.chunks)
        blocks.map(_apply_block, list(iter_blocks(sem.shape, sem.chunks)), plan, sem, inst,
                   valid, out, label="fusion-apply")
    return plan, segments_table(plan)


def segment_categories(plan: PanopticPlan) -> dict[int, int]:
    """Segment id -> category id."""
    return {int(s.id): int(s.category_id) for s in plan.segments}
