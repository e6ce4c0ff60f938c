"""``kind: synthetic-satellite``: seeded synthetic satellite scenes, rendered in memory."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from pipeline.bundle import ClassSpec
from pipeline.training.data.base import DataKind
from pipeline.training.scenes import IGNORE, Scenes
from segcore.geometry.window import Window
from segcore.synthetic.satellite import SATELLITE_CLASSES, SatelliteSceneSpec, render


class SyntheticData(DataKind):
    """Seeded synthetic satellite scenes (``segcore.synthetic.satellite``).

    Training scene ``i`` is rendered from seed ``seed + i``, held-out scene ``i``
    from ``heldout_seed + i``; instance maps are the rendered building ids.

    Examples
    --------
    >>> data = SyntheticData(scenes=1, size=64)
    >>> scenes = data.load(heldout=False, instances=True)
    >>> scenes.images[0].shape, scenes.instances[0].shape, len(data.class_table())
    ((3, 64, 64), (64, 64), 5)
    """

    kind: Literal["synthetic-satellite"] = "synthetic-satellite"
    bands: int = Field(default=3, ge=3, le=4)
    scenes: int = Field(default=8, ge=1)
    size: int = Field(default=512, ge=64)
    seed: int = 0
    heldout_scenes: int = Field(default=4, ge=1)
    heldout_size: int = Field(default=512, ge=64)
    heldout_seed: int = 100_000

    def load(self, *, heldout: bool, instances: bool = False) -> Scenes:
        n, size, seed = ((self.heldout_scenes, self.heldout_size, self.heldout_seed) if heldout
                         else (self.scenes, self.size, self.seed))
        images, labels, inst = [], [], []
        for i in range(n):
            spec = SatelliteSceneSpec(seed=seed + i, height=size, width=size, bands=self.bands)
            out = render(spec, Window((0, 0), (size, size)))
            images.append(out.image)
            labels.append(out.semantic.astype(np.int64))
            inst.append(out.instance.astype(np.int64))
        return Scenes(images, labels, IGNORE, inst if instances else None)

    def class_table(self) -> list[ClassSpec]:
        return [ClassSpec(id=c.id, name=c.name, isthing=c.isthing, color=c.color)
                for c in SATELLITE_CLASSES]
