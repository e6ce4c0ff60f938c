"""DICOM image series (hospital archives): discovery in a tree, ingest, exports as NIfTI.

A scene is one image series of one folder (:mod:`pipeline.io.dicom_series`): the frames
that share SeriesInstanceUID, orientation, pixel spacing and size. ``Scene.path`` is
one file of the series; the series is found again from that file's folder, so a scene
stands for a set of files without the runner knowing it.

* **Scene ids** come from the folder's path relative to the scanned directory (the
  folder's own name for series directly in it) plus ``s<SeriesNumber>`` (a short UID
  suffix where the number is missing or shared): ``CT/s3``. A file named as an INPUT
  is a scene named after the file. No patient data (names, ids, dates, accession
  numbers) ever goes into ids, reports, logs or file names.
* **Geometry** is described as a NIfTI volume would be (:class:`VolumeInfo` with an
  exact, possibly sheared, RAS affine built from the LPS one), so everything after
  ingest is the NIfTI adapter's: model-grid resampling, labels (a NIfTI file on the
  series' grid), HD95, volumes in mL, quicklooks and the ``.nii.gz`` exports on the
  series' exact grid.
* **Ingest** streams slabs of slices (decoded and rescaled, e.g. CT in HU) into
  ``scene.zarr``; memory is bounded by one slab.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from nibabel.nifti1 import Nifti1Header
from nibabel.orientations import aff2axcodes

from pipeline.blockmap import BlockMap, serial
from pipeline.bundle import ModelBundle
from pipeline.formats.base import Scene, safe_id, scene_id_for
from pipeline.formats.nifti import (
    NiftiFormat,
    VolumeScene,
    check_channels,
    model_spacing,
    resample_to_model,
)
from pipeline.io.dicom_series import (
    DicomSeries,
    FolderScan,
    SeriesGroup,
    Skipped,
    build_series,
    looks_like_dicom,
    scan_folder,
    walk_folders,
)
from pipeline.io.nifti import VolumeInfo
from pipeline.options import RunOptions
from pipeline.store import IMAGE, VALID, create_store
from pipeline.streaming.resample import MODEL_GROUP
from segcore.errors import InputError
from segcore.geometry.resample import resampled_shape

SUFFIXES = (".dcm", ".dicom", ".ima")
"""Name endings stripped from a scene id when a single file is the INPUT."""
MAX_NOTES = 20
"""Most skipped files listed in a report."""


@dataclass(frozen=True)
class DicomVolume:
    """An opened series: the checked geometry, its NIfTI-style description, notes."""

    series: DicomSeries
    volume: VolumeInfo
    skipped: tuple[Skipped, ...] = ()

    @property
    def shape(self) -> tuple[int, int, int]:
        """Canonical ``(Z, Y, X)`` shape (what the executor choice counts)."""
        return self.volume.shape


@dataclass(frozen=True)
class DicomScene(VolumeScene):
    """An ingested series: :class:`VolumeScene` plus the report's DICOM fields."""

    dicom: dict[str, Any] = field(default_factory=dict)


def volume_info(series: DicomSeries, path: str) -> VolumeInfo:
    """The series as a NIfTI volume: RAS affine (exact, sheared under gantry tilt),
    zooms ``(column, row, slice-normal)`` spacing and a matching NIfTI-1 header
    (qform kept only for an unsheared grid)."""
    ras = series.ras_affine
    hdr = Nifti1Header()
    hdr.set_data_shape(series.disk_shape)
    hdr.set_data_dtype(np.dtype(series.dtype))
    hdr.set_xyzt_units("mm")
    hdr.set_zooms(series.spacing)
    hdr.set_sform(ras, code=1)  # NIFTI_XFORM_SCANNER_ANAT
    columns = ras[:3, :3] / np.linalg.norm(ras[:3, :3], axis=0)
    if np.allclose(columns.T @ columns, np.eye(3), atol=1e-6):
        hdr.set_qform(ras, code=1)
    else:
        hdr.set_qform(None, code=0)
    axcodes = aff2axcodes(ras)
    if None in axcodes:
        raise InputError(path, f"series affine has no clear axis orientation: {ras.tolist()}")
    return VolumeInfo(
        path=path, version=1, compressed=False, disk_shape=series.disk_shape, channels=1,
        dtype=series.dtype, affine=tuple(tuple(float(v) for v in row) for row in ras),
        zooms=series.spacing, axcodes=(str(axcodes[0]), str(axcodes[1]), str(axcodes[2])),
        qform_code=int(hdr["qform_code"]), sform_code=int(hdr["sform_code"]),
        xyz_unit="mm", header=hdr.binaryblock)


def _group_of(path: Path, scan: FolderScan) -> SeriesGroup:
    """The series group holding ``path``; InputError when none or several do (a
    multi-frame file with stacks of several orientations or sizes)."""
    groups = [g for g in scan.groups if str(path) in g.files]
    if len(groups) > 1:
        raise InputError(str(path), f"one file holds {len(groups)} stacks of different "
                         "orientations or sizes; segpipe reads one stack per multi-frame file")
    if groups:
        return groups[0]
    why = next((s.reason for s in scan.skipped if s.path == path.name), "not an image series")
    raise InputError(str(path), f"no DICOM image series: {why}")


def dicom_fields(opened: DicomVolume) -> dict[str, Any]:
    """The report's ``dicom`` fields: geometry and provenance, no patient data."""
    series = opened.series
    group = series.group
    return {
        "series": group.name, "series_number": group.series_number,
        "modality": group.modality, "files": len(group.files), "slices": len(series.frames),
        "duplicates_dropped": series.duplicates, "tilt_deg": series.tilt_deg,
        "max_position_error_mm": round(series.residual_mm, 9),
        "affine_lps": [list(r) for r in series.affine], "dtype": series.dtype,
        "transfer_syntaxes": list(group.transfer_syntaxes),
        "skipped": [{"file": s.path, "reason": s.reason} for s in opened.skipped[:MAX_NOTES]],
        "skipped_total": len(opened.skipped),
    }


class DicomFormat(NiftiFormat):
    """DICOM image series; see the module docstring. Everything after ingest is the
    NIfTI adapter's, on the :class:`VolumeInfo` that describes the series."""

    name = "dicom"
    noun = "a DICOM series"
    description = "a DICOM series (a folder of DICOM files, any names)"
    suffixes: tuple[str, ...] = ()
    ndim = 3

    def identify(self, path: Any) -> bool:
        return isinstance(path, Path) and path.is_file() and looks_like_dicom(path)

    def scene(self, path: Path, root: Path | None = None) -> Scene:
        """A file named as an INPUT is named after itself; found under ``root``, it is
        named after its folder and series (:meth:`discover`)."""
        if root is None:
            return Scene(path, scene_id_for(path, None, SUFFIXES), self.name)
        return self._scene(_group_of(path, scan_folder(path.parent)), root)

    def _scene(self, group: SeriesGroup, root: Path) -> Scene:
        folder = Path(group.folder)
        rel = folder.relative_to(root).parts if folder != root else (root.resolve().name,)
        return Scene(Path(group.representative), safe_id("/".join([*rel, group.name])),
                     self.name)

    def discover(self, root: Path) -> list[Scene]:
        """One scene per image series of every folder under ``root`` (files that other
        formats claim by their names are not tried)."""
        from pipeline.formats import FORMATS  # the registry imports this module

        claimed = tuple(s for f in FORMATS.values() if f is not self for s in f.suffixes)
        return [self._scene(group, root) for folder, files in walk_folders(root)
                for group in scan_folder(folder, files, claimed=claimed).groups]

    def open(self, path: Path) -> DicomVolume:
        """Find the series of ``path`` in its folder and check its geometry (headers
        only); InputError naming the file for a non-image, a gap or uneven spacing."""
        path = Path(path)
        if not path.is_file():
            raise InputError(str(path), "file not found (expected a DICOM file)")
        scan = scan_folder(path.parent)
        series = build_series(_group_of(path, scan))
        return DicomVolume(series, volume_info(series, str(path)), scan.skipped)

    def ingest(self, info: DicomVolume, store: Path, *, bundle: ModelBundle,
               options: RunOptions, attrs: dict[str, Any], copy: bool,
               blocks: BlockMap = serial) -> DicomScene:
        """Stream slabs of slices into the store, then resample onto the model grid."""
        start = time.perf_counter()
        volume = info.volume
        spacing = model_spacing(volume, bundle, options)
        channels = options.bands or bundle.default_bands(1)
        check_channels(volume, channels, bundle.spec.input.channels)
        fields = dicom_fields(info)
        if not copy:
            shape = resampled_shape(volume.shape, spacing.source, spacing.target) \
                if spacing.resample else volume.shape
            return DicomScene(volume, tuple(channels), spacing, tuple(shape), 0.0, fields)
        group = create_store(store, bands=1, shape=volume.shape, dtype=volume.dtype,
                             image_chunk=options.volume_chunk, attrs={
                                 **attrs, **volume.to_attrs(), "channels": list(channels),
                                 "spacing_model": list(spacing.target)})
        copy_series(info.series, volume, group)
        shape = resample_to_model(group, store, volume, spacing=spacing,
                                  chunk=options.volume_chunk,
                                  blocks=blocks) if spacing.resample else volume.shape
        return DicomScene(volume, tuple(channels), spacing, tuple(shape),
                          time.perf_counter() - start, fields)

    def grid_fields(self, ingested: DicomScene, options: RunOptions) -> dict[str, Any]:
        fields = super().grid_fields(ingested, options)
        for key in ("qform_code", "sform_code", "nifti_version"):
            fields.pop(key, None)
        return {**fields, "dicom": ingested.dicom}


def copy_series(series: DicomSeries, volume: VolumeInfo, group: Any) -> None:
    """Write the series into ``image`` (channel 0) and ``valid``, one slab at a time."""
    image, valid = group[IMAGE], group[VALID]
    for k0, k1, slab in series.slabs():
        key = volume.canonical_slices((slice(None), slice(None), slice(k0, k1)))
        block = volume.to_canonical(slab)
        image[(0, *key)] = block
        valid[key] = np.isfinite(block) if block.dtype.kind == "f" else \
            np.ones(block.shape, bool)


DICOM = DicomFormat()
__all__ = ["DICOM", "MODEL_GROUP", "DicomFormat", "DicomScene", "DicomVolume", "dicom_fields",
           "volume_info"]
