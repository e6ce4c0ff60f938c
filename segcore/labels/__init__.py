"""Instance label math: union-find, sequential relabelling, cross-tile stitching.

Pure numpy; the pipeline applies the resulting :class:`LabelMap` chunk by
chunk over the stored label array.
"""

from segcore.labels.relabel import LabelMap, label_dtype, relabel_sequential
from segcore.labels.stitch import (
    IdRange,
    MatchRule,
    OverlapTable,
    StitchPlan,
    StitchStats,
    core_instances,
    halo_cut_ids,
    match_overlaps,
    neighbour_overlaps,
    offset_ids,
    overlap_table,
    stitch_plan,
)
from segcore.labels.union_find import UnionFind

__all__ = [
    "IdRange",
    "LabelMap",
    "MatchRule",
    "OverlapTable",
    "StitchPlan",
    "StitchStats",
    "UnionFind",
    "core_instances",
    "halo_cut_ids",
    "label_dtype",
    "match_overlaps",
    "neighbour_overlaps",
    "offset_ids",
    "overlap_table",
    "relabel_sequential",
]
