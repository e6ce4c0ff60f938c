"""``kind: zarr``: user scenes or volumes as Zarr groups, loaded whole into memory."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from pipeline.bundle import ClassSpec
from pipeline.training.data.base import DataKind, ignore_unlabelled
from pipeline.training.scenes import Scenes, in_memory
from segcore.errors import InputError


class ZarrData(DataKind):
    """Zarr groups with ``image`` ``(C, *S)``, ``labels`` ``(*S)`` and optionally
    ``instances`` ``(*S)`` (e.g. ``scene.zarr`` stores with labels added).

    Images keep their stored dtype and are normalised like the pipeline's input
    (uint8 / 255, uint16 / 65535); labels follow the pipeline's label convention
    (unlabelled 255 / 65535 ignored).
    """

    kind: Literal["zarr"] = "zarr"
    train: list[Path]
    heldout: list[Path]
    classes: list[ClassSpec]

    def class_table(self) -> list[ClassSpec]:
        return list(self.classes)

    def load(self, *, heldout: bool, instances: bool = False) -> Scenes:
        import zarr

        images, labels, inst = [], [], []
        for path in self.heldout if heldout else self.train:
            try:
                group = zarr.open_group(str(path), mode="r")
                image, lab = group["image"][:], group["labels"][:]
            except Exception as exc:  # any reader failure: one clear line per bad store
                raise InputError(str(path), f"expected a Zarr group with arrays 'image' and "
                                 f"'labels': {exc}") from exc
            if image.shape[1:] != lab.shape:
                raise InputError(str(path), f"image {image.shape} and labels {lab.shape} differ")
            images.append(np.nan_to_num(image))
            labels.append(ignore_unlabelled(lab, str(lab.dtype)))
            if instances:
                if "instances" not in group:
                    raise InputError(str(path), "instance_head: true needs an 'instances' array")
                inst.append(group["instances"][:].astype(np.int64))
        return in_memory(images, labels, inst if instances else None)
