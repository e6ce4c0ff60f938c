"""Bottom-up instance prediction on tiles: training targets and grouping (Panoptic-DeepLab)."""

from segcore.instances.grouping import group_instances
from segcore.instances.targets import instance_targets

__all__ = ["group_instances", "instance_targets"]
