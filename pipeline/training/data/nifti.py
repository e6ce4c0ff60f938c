"""``kind: nifti``: user volumes as NIfTI image + label pairs.

Volumes are read whole, in the canonical orientation, into memory (training sets
are crops of modest volumes; inference is where volumes are huge). Labels follow
the pipeline's label convention (docs/label-files.md): class ids, the unlabelled value
(255 / 65535) ignored, instance ids as a 4th axis of length 2.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np

from pipeline.bundle import ClassSpec
from pipeline.training.data.base import DataKind, ignore_unlabelled
from pipeline.training.data.geotiff import ImagePair
from pipeline.training.scenes import IGNORE, Scenes, in_memory
from segcore.errors import InputError


class NiftiData(DataKind):
    """NIfTI image + label volumes (any orientation: read in the canonical one).

    Intensities are physical units; the bundle records the first training
    volume's spacing. ``channels`` are 1-based along the image's 4th axis (None: all).
    """

    physical_units: ClassVar[bool] = True

    kind: Literal["nifti"] = "nifti"
    train: list[ImagePair]
    heldout: list[ImagePair]
    channels: list[int] | None = None  # 1-based along the 4th axis; None = all
    classes: list[ClassSpec]

    def class_table(self) -> list[ClassSpec]:
        return list(self.classes)

    def load(self, *, heldout: bool, instances: bool = False) -> Scenes:
        from pipeline.io.nifti import open_label_volume, open_volume

        images, labels, inst, spacing = [], [], [], ()
        for pair in self.heldout if heldout else self.train:
            info = open_volume(pair.image)
            spacing = spacing or info.spacing
            chosen = [c - 1 for c in (self.channels or range(1, info.channels + 1))]
            images.append(np.nan_to_num(_canonical(info, chosen).astype(np.float32)))
            linfo = open_label_volume(pair.labels, info)
            truth = _canonical(linfo, list(range(min(linfo.channels, 2))))
            labels.append(ignore_unlabelled(truth[0], linfo.dtype))
            if instances:
                if truth.shape[0] < 2:
                    raise InputError(str(pair.labels), "instance_head: true needs instance ids "
                                     "as a 4th axis of 2 in the label file; this file has one volume")
                inst.append(np.where(labels[-1] == IGNORE, 0, truth[1]).astype(np.int64))
        return in_memory(images, labels, inst if instances else None, spacing=spacing)


def _canonical(info, channels: list[int]) -> np.ndarray:
    """The whole volume ``(C, Z, Y, X)`` in canonical orientation."""
    from pipeline.io.nifti import VolumeReader

    out = np.zeros((len(channels), *info.shape), dtype=np.dtype(info.dtype))
    with VolumeReader(info, channels) as reader:
        for position, key, block in reader.blocks():
            out[(position, *key)] = block
    return out
