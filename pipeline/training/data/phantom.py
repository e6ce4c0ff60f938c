"""``kind: synthetic-phantom``: seeded synthetic 3-D phantoms, rendered in memory."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field

from pipeline.bundle import ClassSpec, InstanceSpec
from pipeline.training.data.base import DataKind
from pipeline.training.scenes import IGNORE, Normalisation, Scenes, Volumes
from segcore.synthetic.phantom import (
    LESION,
    PHANTOM_CLASSES,
    PhantomSpec,
    render_phantom,
)


class PhantomData(DataKind):
    """Seeded synthetic 3-D phantoms (``segcore.synthetic.phantom``): an organ as
    stuff, lesions as things, intensities in raw physical units.

    ``shape`` is ``(Z, Y, X)`` voxels and ``spacing`` ``(z, y, x)`` mm (the
    bundle records it); the anatomy is in mm. ``lesion_crops`` is the
    fraction of training crops centred on a random lesion voxel. Held-out
    figures add ``organ_dice`` and, with an instance head, ``lesion_pq``.

    Examples
    --------
    >>> data = PhantomData(volumes=1, shape=(16, 16, 16), spacing=(3.0, 2.0, 2.0))
    >>> vols = data.load(heldout=False)
    >>> vols.images[0].shape, vols.spacing, data.physical_units
    ((1, 16, 16, 16), (3.0, 2.0, 2.0), True)
    """

    physical_units: ClassVar[bool] = True

    kind: Literal["synthetic-phantom"] = "synthetic-phantom"
    volumes: int = Field(default=8, ge=1)
    shape: tuple[int, int, int] = (96, 96, 96)
    spacing: tuple[float, float, float] = (2.0, 2.0, 2.0)
    seed: int = 0
    lesions: tuple[int, int] = (3, 7)
    lesion_radius_mm: tuple[float, float] = (4.0, 10.0)
    noise: float = Field(default=40.0, ge=0)
    bias: float = Field(default=0.15, ge=0, lt=1)
    lesion_crops: float = Field(default=0.5, ge=0, le=1)
    heldout_volumes: int = Field(default=2, ge=1)
    heldout_shape: tuple[int, int, int] | None = None  # None: as `shape`
    heldout_seed: int = 100_000

    def phantom_spec(self, seed: int, *, heldout: bool = False) -> PhantomSpec:
        """The :class:`PhantomSpec` of one training (or held-out) volume."""
        shape = (self.heldout_shape or self.shape) if heldout else self.shape
        return PhantomSpec(shape=shape, spacing=self.spacing, seed=seed, lesions=self.lesions,
                           lesion_radius_mm=self.lesion_radius_mm, noise=self.noise, bias=self.bias)

    def load(self, *, heldout: bool, instances: bool = False) -> Volumes:
        n, seed = (self.heldout_volumes, self.heldout_seed) if heldout else (self.volumes, self.seed)
        images, labels, inst = [], [], []
        for i in range(n):
            ph = render_phantom(self.phantom_spec(seed + i, heldout=heldout))
            images.append(ph.image[None])
            labels.append(ph.semantic.astype(np.int64))
            inst.append(ph.instance.astype(np.int64))
        return Volumes(images, labels, IGNORE, inst if instances else None,
                       focus=0.0 if heldout else self.lesion_crops, focus_class=LESION,
                       spacing=self.spacing)

    def class_table(self) -> list[ClassSpec]:
        return [ClassSpec(id=c.id, name=c.name, isthing=c.isthing, color=c.color)
                for c in PHANTOM_CLASSES]

    def heldout_figures(self, net: torch.nn.Module, scenes: Scenes, norm: Normalisation, *,
                        classes: list[ClassSpec], grouping: InstanceSpec) -> dict[str, Any]:
        figures = super().heldout_figures(net, scenes, norm, classes=classes, grouping=grouping)
        figures["organ_dice"] = figures["per_class"]["organ"]["dice"]
        if "per_class_pq" in figures:
            figures["lesion_pq"] = figures["per_class_pq"]["lesion"]
        return figures
