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
* **DICOM-SEG**: beside the NIfTI exports, ``segmentation.dcm`` holds the semantic
  labels as a DICOM Segmentation that references the source instances
  (:mod:`pipeline.io.dicom_seg`).
* **Labels** for metrics are a NIfTI file on the series' grid or a DICOM-SEG whose
  frames reference the series' instances (segments matched to classes by label, else
  by number).
* **Skipped files**: a scan of a tree (:meth:`DicomFormat.survey`) also returns every
  file it left out (not DICOM, unreadable, empty, a non-image object) with its reason,
  for the batch's ``skipped`` rows; a tree without any DICOM file returns none (a
  GeoTIFF folder's README is no news). The scene's report keeps the files its own
  folder left out (``dicom.skipped``).
* **Input identity** (:meth:`DicomFormat.input_identity`): every file of the series,
  so the run fingerprint changes when a slice is touched, added or removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from nibabel.nifti1 import Nifti1Header
from nibabel.orientations import aff2axcodes

from pipeline.blockmap import BlockMap, serial
from pipeline.bundle import ModelBundle
from pipeline.formats.base import (
    Scene,
    SkippedFile,
    Truth,
    file_identity,
    safe_id,
    scene_id_for,
)
from pipeline.formats.nifti import (
    _COMPRESSORS,
    TRUTH_INSTANCE,
    TRUTH_SEMANTIC,
    NiftiFormat,
    VolumeScene,
    check_channels,
    copied_truth,
    model_spacing,
    resample_to_model,
)
from pipeline.io.dicom_seg import (
    SEG_FILE,
    check_seg,
    is_seg,
    read_seg_slab,
    referenced_series,
    write_dicom_seg,
)
from pipeline.io.dicom_series import (
    DicomSeries,
    FolderScan,
    SeriesGroup,
    Skipped,
    build_series,
    looks_like_dicom,
    scan_folder,
    scan_folder_cached,
    walk_folders,
)
from pipeline.io.nifti import VolumeInfo
from pipeline.options import RunOptions
from pipeline.store import IMAGE, SEMANTIC, VALID, create_store
from pipeline.streaming.resample import MODEL_GROUP
from segcore.errors import InputError
from segcore.geometry.resample import resampled_shape

DICOM_SEG = "dicom_seg"
"""The report's ``outputs`` key of the DICOM-SEG export."""
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
    """An ingested series: :class:`VolumeScene` plus the report's DICOM fields and the
    checked series (the DICOM-SEG's source; DICOM-SEG labels are read onto it)."""

    dicom: dict[str, Any] = field(default_factory=dict)
    series: DicomSeries | None = None


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
        "series": group.name, "series_number": group.series_number, "series_uid": group.series_uid,
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
    label_suffixes = SUFFIXES  # a DICOM-SEG in a labels folder: ``<scene id>.dcm``
    ndim = 3

    def identify(self, path: Any) -> bool:
        return isinstance(path, Path) and path.is_file() and looks_like_dicom(path)

    def scene(self, path: Path, root: Path | None = None) -> Scene:
        """A file named as an INPUT is named after itself; found under ``root``, it is
        named after its folder and series (:meth:`discover`)."""
        if root is None:
            return Scene(path, scene_id_for(path, None, SUFFIXES), self.name)
        return self._scene(_group_of(path, scan_folder_cached(path.parent)), root)

    def _scene(self, group: SeriesGroup, root: Path) -> Scene:
        folder = Path(group.folder)
        rel = folder.relative_to(root).parts if folder != root else (root.resolve().name,)
        return Scene(Path(group.representative), safe_id("/".join([*rel, group.name])),
                     self.name)

    def discover(self, root: Path) -> list[Scene]:
        """One scene per image series of every folder under ``root`` (files that other
        formats claim by their names are not tried)."""
        return self.survey(root)[0]

    def survey(self, root: Path) -> tuple[list[Scene], list[SkippedFile]]:
        """:meth:`discover`'s scenes and the files the scan left out, with their reasons
        (none when no file under ``root`` is DICOM: a tree of other inputs)."""
        from pipeline.formats import FORMATS  # the registry imports this module

        claimed = tuple(s for f in FORMATS.values() if f is not self for s in f.suffixes)
        scenes: list[Scene] = []
        skipped: list[SkippedFile] = []
        dicom_seen = False
        for folder, files in walk_folders(root):
            scan = scan_folder(folder, files, claimed=claimed)
            scenes.extend(self._scene(group, root) for group in scan.groups)
            dicom_seen = dicom_seen or bool(scan.groups) or any(s.dicom for s in scan.skipped)
            skipped.extend(SkippedFile(str(Path(folder, s.path)), s.reason, self.name)
                           for s in scan.skipped)
        return scenes, skipped if dicom_seen else []

    def input_identity(self, scene: Scene) -> list:
        """``[folder, series name, files, digest]``: the digest hashes the sorted
        ``(file name, size, mtime_ns)`` of every file the series is read from (after
        repeated instances are dropped), so touching, adding or removing a slice changes
        it and a junk or non-image file beside the series does not. A file no longer in
        an image series is identified alone (opening it then fails with the reason)."""
        path = Path(scene.path)
        try:
            group = _group_of(path, scan_folder_cached(path.parent))
            rows = [[Path(f).name, (st := os.stat(f)).st_size, st.st_mtime_ns]
                    for f in group.instance_files]
        except (InputError, OSError):
            return file_identity(path)
        digest = hashlib.sha256(json.dumps(rows).encode()).hexdigest()
        return [str(path.parent.resolve()), group.name, len(rows), digest]

    def open(self, path: Path) -> DicomVolume:
        """Find the series of ``path`` in its folder and check its geometry (headers
        only); InputError naming the file for a non-image, a gap or uneven spacing."""
        path = Path(path)
        if not path.is_file():
            raise InputError(str(path), "file not found (expected a DICOM file)")
        scan = scan_folder_cached(path.parent)
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
            return DicomScene(volume, tuple(channels), spacing, tuple(shape), 0.0, fields,
                              info.series)
        group = create_store(store, bands=1, shape=volume.shape, dtype=volume.dtype,
                             image_chunk=options.volume_chunk, attrs={
                                 **attrs, **volume.to_attrs(), "channels": list(channels),
                                 "spacing_model": list(spacing.target)})
        copy_series(info.series, volume, group)
        shape = resample_to_model(group, store, volume, spacing=spacing,
                                  chunk=options.volume_chunk,
                                  blocks=blocks) if spacing.resample else volume.shape
        return DicomScene(volume, tuple(channels), spacing, tuple(shape),
                          time.perf_counter() - start, fields, info.series)

    def grid_fields(self, ingested: DicomScene, options: RunOptions) -> dict[str, Any]:
        fields = super().grid_fields(ingested, options)
        for key in ("qform_code", "sform_code", "nifti_version"):
            fields.pop(key, None)
        return {**fields, "dicom": ingested.dicom}

    def export(self, group: zarr.Group, names: list[str], ingested: DicomScene,
               out_dir: Path, nodata: dict[str, int], blocks: BlockMap = serial) -> dict[str, str]:
        """The NIfTI exports, then the semantic labels as a DICOM-SEG (``segmentation.dcm``)
        referencing the source instances."""
        files = super().export(group, names, ingested, out_dir, nodata, blocks=blocks)
        classes = group.attrs.get("classes")
        if SEMANTIC in names and ingested.series is not None and classes:
            write_dicom_seg(Path(out_dir) / SEG_FILE, ingested.series,
                            _DiskSlab(group[SEMANTIC], ingested.info), classes,
                            model=str(group.attrs.get("model", "segpipe")),
                            nodata=nodata.get(SEMANTIC))
            files[DICOM_SEG] = SEG_FILE
        return files

    def check_labels(self, path: Path, ingested: DicomScene) -> None:
        """A DICOM-SEG must reference the series' instances; else a NIfTI file on the
        series' grid."""
        if ingested.series is not None and is_seg(path):
            check_seg(path, ingested.series)
        else:
            super().check_labels(path, ingested)

    @contextmanager
    def open_labels(self, path: Path, ingested: DicomScene,
                    group: zarr.Group) -> Iterator[Truth]:
        if ingested.series is None or not is_seg(path):
            with super().open_labels(path, ingested, group) as truth:
                yield truth
            return
        yield copied_truth(path, group, lambda: copy_seg_labels(path, ingested, group))


class _DiskSlab:
    """``(k0, k1) ->`` slices ``k0:k1`` of a canonical store array in the stored
    ``(column, row, slice)`` order."""

    def __init__(self, array: Any, volume: VolumeInfo) -> None:
        self.array, self.volume = array, volume

    def __call__(self, k0: int, k1: int) -> np.ndarray:
        key = self.volume.canonical_slices((slice(None), slice(None), slice(k0, k1)))
        return self.volume.to_disk(np.asarray(self.array[key]))


def _segment_lookup(path: Path, seg: Any, classes: list[dict[str, Any]]) -> np.ndarray:
    """Segment number -> class id: by segment label when every label is a class name,
    else the number itself (InputError naming the file when a number is no class)."""
    by_name = {str(c["name"]): int(c["id"]) for c in classes}
    numbers = [int(n) for n in seg.segment_numbers]
    labels = [str(seg.get_segment_description(n).segment_label) for n in numbers]
    top = max([*numbers, 0])
    lut = np.arange(top + 1, dtype=np.int64)
    if classes and all(label in by_name for label in labels):
        for number, label in zip(numbers, labels):
            lut[number] = by_name[label]
    elif classes and top >= len(classes):
        raise InputError(str(path), f"segment numbers up to {top} and labels {labels}; "
                         f"expected segment labels among the classes {list(by_name)} or "
                         f"numbers below {len(classes)} (class ids)")
    return lut


def copy_seg_labels(path: Path, ingested: DicomScene, group: zarr.Group) -> str:
    """Copy a DICOM-SEG's classes onto the series' grid (``truth_semantic``; instance ids
    0), one slab of slices at a time; returns the class dtype."""
    import highdicom as hd

    series, volume = ingested.series, ingested.info
    if series is None:
        raise InputError(str(path), "a DICOM-SEG needs the series it was made from")
    check_seg(path, series)
    seg = hd.seg.segread(path, lazy_frame_retrieval=True)
    lut = _segment_lookup(path, seg, list(group.attrs.get("classes") or []))
    dtype = "uint8" if lut.max(initial=0) < 255 else "uint16"
    chunks = group[SEMANTIC].chunks
    sem = group.create_array(TRUTH_SEMANTIC, shape=volume.shape, chunks=chunks, dtype=dtype,
                             fill_value=0, compressors=_COMPRESSORS, overwrite=True)
    group.create_array(TRUTH_INSTANCE, shape=volume.shape, chunks=chunks, dtype="uint32",
                       fill_value=0, compressors=_COMPRESSORS, overwrite=True)
    columns, rows, n = series.disk_shape
    step = max(1, (32 * 2**20) // (rows * columns))
    for k0 in range(0, n, step):
        k1 = min(n, k0 + step)
        block = lut[read_seg_slab(seg, series, k0, k1)].astype(dtype)
        sem[volume.canonical_slices((slice(None), slice(None), slice(k0, k1)))] = \
            volume.to_canonical(block)
    return dtype


def copy_series(series: DicomSeries, volume: VolumeInfo, group: Any) -> None:
    """Write the series into ``image`` (channel 0) and ``valid``, one slab at a time."""
    image, valid = group[IMAGE], group[VALID]
    for k0, k1, slab in series.slabs():
        key = volume.canonical_slices((slice(None), slice(None), slice(k0, k1)))
        block = volume.to_canonical(slab)
        image[(0, *key)] = block
        valid[key] = np.isfinite(block) if block.dtype.kind == "f" else \
            np.ones(block.shape, bool)
        del slab, block  # freed before the next slab is decoded: one slab alive, not two


DICOM = DicomFormat()
__all__ = ["DICOM", "MODEL_GROUP", "DicomFormat", "DicomScene", "DicomVolume", "dicom_fields",
           "volume_info"]


def seg_labels_by_series(scenes: list[Scene], files: list[Path]) -> dict[str, Path]:
    """DICOM scenes paired with the DICOM-SEG files among ``files`` that reference their
    series (``ReferencedSeriesSequence``, header only), whatever the files are named: how
    a PACS export names them says nothing about the series. A series referenced by
    several SEGs takes the first in ``files``' order.

    Returns
    -------
    dict
        scene id -> SEG file, for the scenes some SEG references.
    """
    import pydicom

    owners: dict[str, Path] = {}
    for path in files:
        for uid in sorted(referenced_series(path)):
            owners.setdefault(uid, path)
    if not owners:
        return {}
    out = {}
    for scene in scenes:
        try:
            ds = pydicom.dcmread(scene.path, stop_before_pixels=True, force=True,
                                 specific_tags=["SeriesInstanceUID"])
        except Exception:  # noqa: BLE001, S112 - the scene itself reports an unreadable file
            continue
        uid = str(ds.get("SeriesInstanceUID", ""))
        if uid in owners:
            out[scene.scene_id] = owners[uid]
    return out
