"""NIfTI volumes (``.nii``, ``.nii.gz``): ingest, model-grid resampling, labels, exports.

* **Ingest** streams the selected 4th-axis channels of the file (one pass in file order,
  memory bounded by one slab) into ``scene.zarr/image`` ``(C, Z, Y, X)`` in the canonical
  orientation of :mod:`pipeline.io.nifti` (RAS+ transposed to (S, A, R)), with ``valid``
  ``(Z, Y, X)`` False where any channel is NaN/inf.
* When the volume's spacing differs from the model's (:mod:`pipeline.spacing`), the image
  and mask are resampled into the subgroup ``scene.zarr/model``; inference and instance
  stitching run there, and the runner resamples the labels back to the input's grid
  (nearest neighbour) before fusion, metrics and exports.
* **Labels** (class ids, optionally instance ids as a 4th axis of 2) are copied into
  ``truth_semantic`` / ``truth_instance`` (a ``.nii.gz`` can only be read from its start,
  so it is streamed once rather than re-read per block).
* **Sizes** are volumes in mL; **extra metrics** are HD95 per class but the background.
* **Exports** are ``<name>.nii.gz`` on the input's exact grid.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from pipeline.blockmap import BlockMap, serial
from pipeline.bundle import ModelBundle
from pipeline.formats.base import SuffixFormat, Truth
from pipeline.io.nifti import (
    VolumeInfo,
    VolumeReader,
    open_label_volume,
    open_volume,
    write_label_volume,
)
from pipeline.options import RunOptions, band_numbers
from pipeline.report.volume_quicklook import write_volume_quicklooks
from pipeline.spacing import SpacingDecision, decide_spacing
from pipeline.store import IMAGE, SEMANTIC, VALID, create_store
from pipeline.streaming.metrics import unlabelled_value
from pipeline.streaming.resample import MODEL_GROUP, resample_array
from pipeline.streaming.summary import ClassTotals, SizeUnit, summarise
from pipeline.streaming.surface import surface_distances
from segcore.errors import InputError
from segcore.geometry.resample import resampled_affine, resampled_shape

TRUTH_SEMANTIC = "truth_semantic"
TRUTH_INSTANCE = "truth_instance"
_COMPRESSORS = (zarr.codecs.ZstdCodec(level=3),)


@dataclass(frozen=True)
class VolumeScene:
    """An ingested volume: the file, the channels fed to the model, the model grid."""

    info: VolumeInfo
    channels: tuple[int, ...]  # 1-based along the 4th axis
    spacing: SpacingDecision
    model_shape: tuple[int, int, int]
    seconds: float

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.info.shape

    @property
    def resampled(self) -> bool:
        return self.spacing.resample

    @property
    def model_group(self) -> str | None:
        return MODEL_GROUP if self.resampled else None


def check_channels(info: VolumeInfo, channels: list[int], needed: int) -> None:
    """Raise one clear InputError when the volume cannot feed the model."""
    channels = band_numbers(channels, path=info.path, noun="a NIfTI volume")
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


def model_spacing(info: VolumeInfo, bundle: ModelBundle, options: RunOptions) -> SpacingDecision:
    """The spacing inference runs at (:mod:`pipeline.spacing`), checked against the bundle's
    value scaling: resampling makes samples float32."""
    spec, path = bundle.spec, str(info.path)
    decision = decide_spacing(path, info.spacing, spec.spacing, policy=options.spacing,
                              tolerance=spec.spacing_tolerance, model_name=spec.name)
    scale = spec.input.value_scale
    if decision.resample and scale.get(info.dtype) != scale.get("float32"):
        raise InputError(
            path,
            f"needs resampling to {decision.target} mm, which makes it float32, but model "
            f"'{spec.name}' scales {info.dtype} ({scale.get(info.dtype)}) and float32 "
            f"({scale.get('float32')}) samples differently; use --spacing ignore or refuse")
    return decision


def copy_channels(info: VolumeInfo, store_path: Path, *, channels: list[int], chunk: int,
                  attrs: dict) -> zarr.Group:
    """Stream ``channels`` (1-based) of the volume into a new store, slab by slab."""
    group = create_store(store_path, bands=len(channels), shape=info.shape, dtype=info.dtype,
                         image_chunk=chunk, attrs=attrs)
    image, valid = group[IMAGE], group[VALID]
    with VolumeReader(info, [c - 1 for c in channels]) as reader:
        for position, key, block in reader.blocks():
            image[(position, *key)] = block
            finite = np.isfinite(block) if block.dtype.kind == "f" else np.ones(block.shape, bool)
            valid[key] = finite if position == 0 else (valid[key] & finite)
    return group


def resample_to_model(group: zarr.Group, store_path: Path, info: VolumeInfo, *,
                      spacing: SpacingDecision, chunk: int,
                      blocks: BlockMap = serial) -> tuple[int, int, int]:
    """Resample image (linear) and valid mask (nearest) into ``store/model``; its shape."""
    shape = resampled_shape(info.shape, spacing.source, spacing.target)
    model = create_store(store_path / MODEL_GROUP, bands=group[IMAGE].shape[0], shape=shape,
                         dtype="float32", image_chunk=chunk, mode="w", attrs={
                             "spacing": list(spacing.target),
                             "canonical_affine": resampled_affine(
                                 info.canonical_affine, info.shape, shape).tolist()})
    resample_array(group[IMAGE], model[IMAGE], mode="linear", spatial_dims=3, blocks=blocks)
    resample_array(group[VALID], model[VALID], mode="nearest", spatial_dims=3, blocks=blocks)
    return tuple(shape)


def copy_label_volume(path: Path, scene: VolumeInfo, group: zarr.Group, *,
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


def copied_truth(path: Path, group: zarr.Group, copy: Callable[[], np.dtype]) -> Truth:
    """The label arrays ``copy()`` writes into ``group`` (it returns the labels' dtype), as a
    :class:`Truth`; a copy that fails leaves no half-copied arrays behind."""
    try:
        dtype = copy()
    except BaseException:
        for name in (TRUTH_SEMANTIC, TRUTH_INSTANCE):
            if name in group:
                del group[name]
        raise
    return Truth(group[TRUTH_SEMANTIC], group[TRUTH_INSTANCE], unlabelled_value(dtype),
                 str(path))


class NiftiFormat(SuffixFormat):
    """NIfTI-1/-2 volumes; see the module docstring."""

    name = "nifti"
    noun = "a NIfTI volume"
    description = "a NIfTI file (.nii, .nii.gz)"
    suffixes = (".nii", ".nii.gz")
    ndim = 3

    def open(self, path: Path) -> VolumeInfo:
        return open_volume(path)

    def ingest(self, info: VolumeInfo, store: Path, *, bundle: ModelBundle,
               options: RunOptions, attrs: dict[str, Any], copy: bool,
               blocks: BlockMap = serial) -> VolumeScene:
        """Stream the channels into the store (gzip decompresses from the start: one
        reader), then resample onto the model grid as a block pass."""
        start = time.perf_counter()
        spacing = model_spacing(info, bundle, options)
        channels = options.bands or bundle.default_bands(info.channels)
        check_channels(info, channels, bundle.spec.input.channels)
        if not copy:
            shape = resampled_shape(info.shape, spacing.source, spacing.target) \
                if spacing.resample else info.shape
            return VolumeScene(info, tuple(channels), spacing, tuple(shape), 0.0)
        attrs = {**attrs, **info.to_attrs(), "channels": list(channels),
                 "spacing_model": list(spacing.target)}
        group = copy_channels(info, store, channels=channels, chunk=options.volume_chunk,
                              attrs=attrs)
        shape = resample_to_model(group, store, info, spacing=spacing,
                                  chunk=options.volume_chunk,
                                  blocks=blocks) if spacing.resample else info.shape
        return VolumeScene(info, tuple(channels), spacing, tuple(shape),
                           time.perf_counter() - start)

    def grid_fields(self, ingested: VolumeScene, options: RunOptions) -> dict[str, Any]:
        info = ingested.info
        return {
            "shape": list(info.disk_shape) + ([info.channels] if info.channels > 1 else []),
            "canonical_shape": list(info.shape), "affine": [list(r) for r in info.affine],
            "orientation": "".join(info.axcodes), "spacing_mm": list(info.zooms),
            "qform_code": info.qform_code, "sform_code": info.sform_code,
            "nifti_version": info.version, "channels": list(ingested.channels),
            "model_grid": {"spacing_mm": list(ingested.spacing.target),
                           "shape": list(ingested.model_shape),
                           "resampled": ingested.resampled, "policy": options.spacing.value},
        }

    def check_labels(self, path: Path, ingested: VolumeScene) -> None:
        open_label_volume(path, ingested.info)

    @contextmanager
    def open_labels(self, path: Path, ingested: VolumeScene,
                    group: zarr.Group) -> Iterator[Truth]:
        yield copied_truth(path, group, lambda: copy_label_volume(
            path, ingested.info, group, chunks=group[SEMANTIC].chunks))

    def extra_metrics(self, group: zarr.Group, truth: Truth, ingested: VolumeScene, *,
                      classes: list[tuple[int, str]],
                      blocks: BlockMap = serial) -> dict[str, Any]:
        """HD95 in mm for every class but the background (class 0)."""
        chunks = group[SEMANTIC].chunks
        return {"surface": surface_distances(
            group[SEMANTIC], truth.semantic, group[VALID],
            classes=[c for c in classes if c[0] != 0], spacing=ingested.info.spacing,
            ignore=truth.ignore,
            chunks=tuple(2 * c for c in chunks),  # blocks of 2^3 chunks: fewer margin re-reads
            blocks=blocks)}

    def summarise(self, semantic: zarr.Array, ingested: VolumeScene, num_classes: int,
                  blocks: BlockMap = serial) -> ClassTotals:
        unit, sizes = self.sizes(ingested)
        return summarise(semantic, num_classes, unit=unit, sizes=sizes, blocks=blocks)

    def sizes(self, ingested: VolumeScene) -> tuple[SizeUnit, functools.partial]:
        voxel_ml = float(np.prod(ingested.info.spacing)) / 1000.0
        return SizeUnit.VOLUME_ML, functools.partial(_voxel_volume, voxel_ml)

    def export(self, group: zarr.Group, names: list[str], ingested: VolumeScene,
               out_dir: Path, nodata: dict[str, int], blocks: BlockMap = serial) -> dict[str, str]:
        """One ``.nii.gz`` per array, each written by its own block task."""
        files = blocks.map(_export_volume, names, group, ingested.info, out_dir, label="export")
        return dict(zip(names, files))

    def quicklooks(self, group: zarr.Group, semantic: zarr.Array, ingested: VolumeScene, *,
                   colors: list[tuple[int, int, int]], out_dir: Path,
                   options: RunOptions, blocks: BlockMap = serial) -> dict[str, str]:
        """Three orthogonal mid-planes (a few slices: read here, not as a block pass)."""
        return write_volume_quicklooks(group, semantic, colors, out_dir,
                                       spacing=ingested.info.spacing,
                                       max_size=min(options.quicklook_size, 512))


def _voxel_volume(voxel_ml: float, key: tuple[slice, ...]) -> np.float64:
    return np.float64(voxel_ml)


def _export_volume(name: str, group: zarr.Group, info: VolumeInfo, out_dir: Path) -> str:
    array = group[name]
    dst = Path(out_dir) / f"{name}.nii.gz"
    write_label_volume(dst, info, array.__getitem__, array.dtype)
    return dst.name


NIFTI = NiftiFormat()
