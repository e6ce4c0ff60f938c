"""Bottom-up instance prediction on tiles: training targets and grouping (Panoptic-DeepLab).

The torch-based members load on first use, so that ``segcore.instances.centres`` (numpy
and scipy only, used by the block passes after the model) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["group_instances", "instance_targets"]

_HOMES = {"group_instances": "segcore.instances.grouping",
          "instance_targets": "segcore.instances.targets"}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
