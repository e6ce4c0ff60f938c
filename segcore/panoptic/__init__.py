"""Panoptic fusion (semantic + instance -> segment ids) and streamed panoptic quality."""

from segcore.panoptic.fusion import (
    FusionStats,
    PanopticPlan,
    Segment,
    apply_plan,
    decide,
    segments_table,
)
from segcore.panoptic.quality import (
    ClassQuality,
    PanopticAccumulator,
    PanopticScores,
    panoptic_quality,
)

__all__ = [
    "ClassQuality",
    "PanopticAccumulator",
    "PanopticScores",
    "panoptic_quality",
    "FusionStats",
    "PanopticPlan",
    "Segment",
    "apply_plan",
    "decide",
    "segments_table",
]
