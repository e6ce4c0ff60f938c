"""Panoptic fusion over the Zarr store, chunk by chunk (rules: segcore.panoptic.fusion).

Pass 1 streams (semantic, instance, valid) chunks into per-(instance, class)
pixel counts and bounding boxes; :func:`segcore.panoptic.fusion.decide` turns
them into a segment table (majority class per instance, one segment per stuff
class, stuff below ``min_stuff_area`` and nodata void); pass 2 writes the
``panoptic`` array (uint32 segment ids, 0 = void) chunk by chunk.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import zarr

from pipeline.store import PANOPTIC, VALID, create_label_array, iter_blocks
from segcore.panoptic.fusion import FusionStats, PanopticPlan, apply_plan, decide, segments_table


def fusion_stats(semantic: zarr.Array | np.ndarray, instance: zarr.Array | np.ndarray,
                 valid: zarr.Array | np.ndarray, *, nodata: int,
                 block: tuple[int, ...]) -> FusionStats:
    """Pass 1 over 2-D or 3-D arrays (anything sliceable: zarr arrays or reader views)."""
    shape = tuple(semantic.shape)
    stats = FusionStats(ndim=len(shape), nodata=nodata)
    for key in iter_blocks(shape, block):
        stats.add(np.asarray(semantic[key]), np.asarray(instance[key]),
                  np.asarray(valid[key], dtype=bool), offset=tuple(s.start for s in key))
    return stats


def fuse_scene(group: zarr.Group, semantic: str, instance: str,
               classes: Sequence[tuple[int, str, bool]], *, nodata: int,
               min_stuff_area: int) -> tuple[PanopticPlan, list[dict]]:
    """Write ``group/panoptic``; returns the plan and the ``segments.json`` table."""
    sem, inst, valid = group[semantic], group[instance], group[VALID]
    stats = fusion_stats(sem, inst, valid, nodata=nodata, block=sem.chunks)
    plan = decide(stats, classes, min_stuff_area=min_stuff_area)
    out = create_label_array(group, PANOPTIC, dtype=np.dtype("uint32"), fill_value=0,
                             chunks=sem.chunks)
    for block in iter_blocks(sem.shape, sem.chunks):
        out[block] = apply_plan(plan, sem[block], inst[block], np.asarray(valid[block], bool))
    return plan, segments_table(plan)


def segment_categories(plan: PanopticPlan) -> dict[int, int]:
    """Segment id -> category id."""
    return {int(s.id): int(s.category_id) for s in plan.segments}
