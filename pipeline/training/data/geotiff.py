"""``kind: geotiff``: user scenes as GeoTIFF image + label pairs.

Label files follow the pipeline's label convention (docs/label-files.md): band 1
holds class ids, the unlabelled value (255 for 8-bit files, 65535 for 16-bit
ones) is ignored, and band 2, when present, instance ids (0 = no instance).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from pipeline.bundle import ClassSpec
from pipeline.training.data.base import DataKind, ignore_unlabelled
from pipeline.training.scenes import IGNORE, Scenes
from segcore.errors import InputError


class ImagePair(BaseModel):
    """An image file and its label file on the same grid (GeoTIFF or NIfTI)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    image: Path
    labels: Path


class GeoTiffData(DataKind):
    """User scenes: GeoTIFF image + label pairs, read whole.

    ``bands`` (1-based) choose the image bands (None: all) and become the bundle's
    default input bands.
    """

    kind: Literal["geotiff"] = "geotiff"
    train: list[ImagePair]
    heldout: list[ImagePair]
    bands: list[int] | None = None
    classes: list[ClassSpec]

    @property
    def input_bands(self) -> list[int] | None:
        return self.bands

    def class_table(self) -> list[ClassSpec]:
        return list(self.classes)

    def load(self, *, heldout: bool, instances: bool = False) -> Scenes:
        images, labels, inst = [], [], []
        for pair in self.heldout if heldout else self.train:
            image, lab, ids = self._read_pair(pair, instances=instances)
            images.append(image)
            labels.append(lab)
            if ids is not None:
                inst.append(ids)
        return Scenes(images, labels, IGNORE, inst if instances else None)

    def _read_pair(self, pair: ImagePair, *, instances: bool
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Image ``(C, H, W)``, labels ``(H, W)`` int64 and instance ids (or None)."""
        from pipeline.io.geotiff import GeoTiffReader, open_raster

        info = open_raster(pair.image, require_crs=False)
        linfo = open_raster(pair.labels, require_crs=False)
        if linfo.shape != info.shape:
            raise InputError(str(pair.labels), f"labels {linfo.shape} do not match image {info.shape}")
        window = (slice(0, info.height), slice(0, info.width))
        with GeoTiffReader(pair.image, bands=self.bands or list(range(1, info.count + 1))) as r:
            image = r.read(window)
        with GeoTiffReader(pair.labels, bands=[1]) as r:
            lab = ignore_unlabelled(r.read(window)[0], linfo.dtype)
        if not instances:
            return image, lab, None
        if linfo.count < 2:
            raise InputError(str(pair.labels), "instance_head: true needs instance ids in band 2 "
                             "of the label file (0 = no instance); this file has one band")
        with GeoTiffReader(pair.labels, bands=[2]) as r:
            ids = r.read(window)[0].astype(np.int64)
        ids[(lab == IGNORE) | (ids < 0)] = 0
        return image, lab, ids
