"""NIfTI volumes in the scene store: ingest, model-grid resampling, labels, exports.

* :func:`ingest_volume` streams the selected 4th-axis channels of a ``.nii`` /
  ``.nii.gz`` file (one pass in file order, memory bounded by one slab) into
  ``scene.zarr/image`` ``(C, Z, Y, X)`` in the canonical orientation of
  :mod:`pipeline.io.nifti` (RAS+ transposed to (S, A, R)), with ``valid``
  ``(Z, Y, X)`` False where any channel is NaN/inf.
* When the volume's spacing differs from the model's (:mod:`pipeline.spacing`),
  the image and mask are resampled into the subgroup ``scene.zarr/model``;
  inference and instance stitching run there, and the labels are resampled back
  to the input's grid (nearest neighbour) before fusion, metrics and exports.
* :func:`ingest_label_volume` copies a label file (class ids, optionally instance
  ids as a 4th axis of 2) into ``truth_semantic`` / ``truth_instance``.
* :func:`export_volumes` writes ``<name>.nii.gz`` on the input's exact grid.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from pipeline.io.nifti import (
    VolumeInfo, VolumeReader, open_label_volume, write_label_volume,
)
from pipeline.streaming.resample import resample_array
from pipeline.spacing import SpacingDecision
from pipeline.store import IMAGE, VALID, create_store, open_store
from segcore.errors import InputError
from segcore.geometry.resample import resampled_affine, resampled_shape

MODEL_GROUP = "model"
TRUTH_SEMANTIC = "truth_semantic"
TRUTH_INSTANCE = "truth_instance"
_COMPRESSORS = (zarr.codecs.ZstdCodec(level=3),)


@dataclass(frozen=True)
class VolumeIngest:
    """What ingest learned: the file, the channels fed to the model, the model grid."""

    info: VolumeInfo
    channels: tuple[int, ...]  # 1-based along the 4th axis
    spacing: SpacingDecision
    model_shape: tuple[int, int, int]
    seconds: float

    @property
    def resampled(self) -> bool:
        return self.spacing.resample


def check_channels(info: VolumeInfo, channels: list[int], needed: int) -> None:
    """Raise one clear InputError when the volume cannot feed the model."""
    if len(channels) != needed:
        raise InputError(
            info.path,
            f"the model needs {needed} input channel(s), --bands selects {len(channels)} "
            f"({channels}) of the 4th axis",
        )
    missing = [c for c in channels if c > info.channels]
    if missing:
        what = "a 3-D volume (1 channel)" if info.channels == 1 else \
            f"{info.channels} channels on its 4th axis"
        raise InputError(
            info.path,
            f"has {what} but the model needs channel(s) {channels}; channel {missing[0]} "
            "does not exist (choose others with --bands)",
        )


def ingest_volume(info: VolumeInfo, store_path: Path, *, channels: list[int], needed: int,
                  chunk: int, attrs: dict, spacing: SpacingDecision,
                  copy: bool = True) -> VolumeIngest:
    """Copy ``channels`` (1-based) of the volume into a new store; resample if needed.

    ``copy=False``: the store was ingested by an earlier (killed) run; only describe it.
    """
    start = time.perf_counter()
    check_channels(info, channels, needed)
    if not copy:
        shape = resampled_shape(info.shape, spacing.source, spacing.target) \
            if spacing.resample else info.shape
        return VolumeIngest(info, tuple(channels), spacing, tuple(shape), 0.0)
    attrs = {**attrs, **info.to_attrs(), "channels": list(channels),
             "spacing_model": list(spacing.target)}
    group = create_store(store_path, bands=len(channels), shape=info.shape, dtype=info.dtype,
                         image_chunk=chunk, attrs=attrs)
    image, valid = group[IMAGE], group[VALID]
    with VolumeReader(info, [c - 1 for c in channels]) as reader:
        for position, key, block in reader.blocks():
            image[(position, *key)] = block
            finite = np.isfinite(block) if block.dtype.kind == "f" else np.ones(block.shape, bool)
            valid[key] = finite if position == 0 else (valid[key] & finite)
    model_shape = info.shape
    if spacing.resample:
        model_shape = resampled_shape(info.shape, spacing.source, spacing.target)
        model = create_store(store_path / MODEL_GROUP, bands=len(channels), shape=model_shape,
                             dtype="float32",
                             image_chunk=chunk, mode="w", attrs={
                                 "spacing": list(spacing.target),
                                 "canonical_affine": resampled_affine(
                                     info.canonical_affine, info.shape, model_shape).tolist()})
        resample_array(image, model[IMAGE], mode="linear", spatial_dims=3)
        resample_array(valid, model[VALID], mode="nearest", spatial_dims=3)
    return VolumeIngest(info, tuple(channels), spacing, tuple(model_shape),
                        time.perf_counter() - start)


def inference_store(store_path: Path, ingest: VolumeIngest) -> Path:
    """The group inference runs on: the scene store, or its resampled ``model`` subgroup."""
    return store_path / MODEL_GROUP if ingest.resampled else store_path


def resample_back(group: zarr.Group, name: str, *, chunks: tuple[int, ...]) -> zarr.Array:
    """``model/<name>`` -> ``<name>`` on the input grid, nearest neighbour."""
    src = group[f"{MODEL_GROUP}/{name}"]
    dst = group.create_array(name, shape=group[VALID].shape, chunks=chunks, dtype=src.dtype,
                             fill_value=src.fill_value, compressors=_COMPRESSORS, overwrite=True)
    resample_array(src, dst, mode="nearest", spatial_dims=3)
    return dst


def ingest_label_volume(path: Path, scene: VolumeInfo, group: zarr.Group, *,
                        chunks: tuple[int, ...]) -> str:
    """Copy class ids (and instance ids) of a label file into the store; returns its dtype."""
    info = open_label_volume(path, scene)
    sem = group.create_array(TRUTH_SEMANTIC, shape=scene.shape, chunks=chunks, dtype=info.dtype,
                             fill_value=0, compressors=_COMPRESSORS, overwrite=True)
    inst = group.create_array(TRUTH_INSTANCE, shape=scene.shape, chunks=chunks, dtype="uint32",
                              fill_value=0, compressors=_COMPRESSORS, overwrite=True)
    with VolumeReader(info, list(range(min(info.channels, 2)))) as reader:
        for position, key, block in reader.blocks():
            if position == 0:
                sem[key] = block
            else:
                if block.min(initial=0) < 0:
                    raise InputError(str(path), "instance ids must be >= 0")
                inst[key] = block.astype(np.uint32)
    return info.dtype


def export_volumes(group: zarr.Group, names: list[str], info: VolumeInfo,
                   out_dir: Path) -> dict[str, str]:
    """Write ``<name>.nii.gz`` for each label array on the input's grid."""
    written = {}
    for name in names:
        array = group[name]
        dst = out_dir / f"{name}.nii.gz"
        write_label_volume(dst, info, array.__getitem__, array.dtype)
        written[name] = dst.name
    return written


def open_model_group(store_path: Path, ingest: VolumeIngest, mode: str = "r") -> zarr.Group:
    return open_store(inference_store(store_path, ingest), mode=mode)
