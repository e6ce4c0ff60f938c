"""User training data beyond GeoTIFF pairs: NIfTI image + label volumes, and Zarr stores.

Both are loaded whole into memory for training (training sets are crops of modest
scenes; inference is where scenes are huge). Label conventions are the pipeline's
(CONTRACT.md "Label files"): class ids, the unlabelled value (255 / 65535) ignored,
instance ids as a second channel (NIfTI 4th axis of 2, Zarr array ``instances``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from pipeline.bundle import ClassSpec
from segcore.errors import InputError


class ImagePair(BaseModel):
    """An image file and its label file on the same grid (GeoTIFF or NIfTI)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    image: Path
    labels: Path


class NiftiData(BaseModel):
    """NIfTI image + label volumes (any orientation: read in the canonical one)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["nifti"] = "nifti"
    train: list[ImagePair]
    heldout: list[ImagePair]
    channels: list[int] | None = None  # 1-based along the 4th axis; None = all
    classes: list[ClassSpec]


class ZarrData(BaseModel):
    """Zarr groups with ``image`` ``(C, *S)``, ``labels`` ``(*S)`` and optionally
    ``instances`` ``(*S)`` (e.g. ``scene.zarr`` stores with labels added)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["zarr"] = "zarr"
    train: list[Path]
    heldout: list[Path]
    classes: list[ClassSpec]


def _canonical(info, channels: list[int]) -> np.ndarray:
    """The whole volume ``(C, Z, Y, X)`` in canonical orientation."""
    from pipeline.io.nifti import VolumeReader

    out = np.zeros((len(channels), *info.shape), dtype=np.dtype(info.dtype))
    with VolumeReader(info, channels) as reader:
        for position, key, block in reader.blocks():
            out[(position, *key)] = block
    return out


def _ignore(labels: np.ndarray, dtype: str) -> np.ndarray:
    from pipeline.streaming.metrics import unlabelled_value

    lab = labels.astype(np.int64)
    lab[lab == unlabelled_value(dtype)] = 255
    return lab


def nifti_arrays(data: NiftiData, *, heldout: bool, instances: bool
                 ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], tuple]:
    """Images ``(C, Z, Y, X)`` float32, labels, instance maps and the first volume's spacing."""
    from pipeline.io.nifti import open_label_volume, open_volume

    images, labels, inst, spacing = [], [], [], ()
    for pair in data.heldout if heldout else data.train:
        info = open_volume(pair.image)
        spacing = spacing or info.spacing
        chosen = [c - 1 for c in (data.channels or range(1, info.channels + 1))]
        images.append(np.nan_to_num(_canonical(info, chosen).astype(np.float32)))
        linfo = open_label_volume(pair.labels, info)
        truth = _canonical(linfo, list(range(min(linfo.channels, 2))))
        labels.append(_ignore(truth[0], linfo.dtype))
        if instances:
            if truth.shape[0] < 2:
                raise InputError(str(pair.labels), "instance_head: true needs instance ids as a "
                                 "4th axis of 2 in the label file; this file has one volume")
            inst.append(np.where(labels[-1] == 255, 0, truth[1]).astype(np.int64))
    return images, labels, inst, spacing


def zarr_arrays(data: ZarrData, *, heldout: bool, instances: bool
                ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Images ``(C, *S)``, labels ``(*S)`` and instance maps from Zarr groups."""
    import zarr

    images, labels, inst = [], [], []
    for path in data.heldout if heldout else data.train:
        try:
            group = zarr.open_group(str(path), mode="r")
            image, lab = group["image"][:], group["labels"][:]
        except Exception as exc:  # noqa: BLE001 - one clear line per bad store
            raise InputError(str(path), f"expected a Zarr group with arrays 'image' and "
                             f"'labels': {exc}") from exc
        if image.shape[1:] != lab.shape:
            raise InputError(str(path), f"image {image.shape} and labels {lab.shape} differ")
        images.append(np.nan_to_num(image))  # the stored dtype: normalised like the pipeline
        labels.append(_ignore(lab, str(lab.dtype)))
        if instances:
            if "instances" not in group:
                raise InputError(str(path), "instance_head: true needs an 'instances' array")
            inst.append(group["instances"][:].astype(np.int64))
    return images, labels, inst
