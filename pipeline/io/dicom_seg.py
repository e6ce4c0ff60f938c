"""DICOM-SEG for a DICOM series: written with highdicom from the semantic labels, and read
back onto the series' grid as labels for metrics.

Writing
-------
:func:`write_dicom_seg` writes one BINARY Segmentation (the type every SEG reader
understands; bit-packed frames, empty frames omitted) for one series:

* **source images**: the series' files read header-only (``stop_before_pixels``), in
  slice order; a series stored as one enhanced multi-frame file is referenced frame by
  frame in that file's own frame order. Every SEG frame copies its source frame's
  ImagePositionPatient, ImageOrientationPatient and PixelSpacing and references its
  SOPInstanceUID (DerivationImageSequence), so frames lie on the source slices, gantry
  tilt included (each frame keeps its own source position; no even step is assumed).
* **segments**: one per class but the background, numbered by class id, labelled with
  the class name, coloured with the class colour; the segmented property category and
  type come from the class's ``dicom:`` codes in ``model.yaml``, else generic SNOMED CT
  codes (:func:`class_codes`).
* **new UIDs** for the SEG series and instance (in the source's study and frame of
  reference); the patient and study modules are copied from the source by highdicom, as
  DICOM requires (the SEG is a clinical object: it carries the patient's identity;
  segpipe's own files never do). Type 2 attributes missing from the source are left
  empty, never invented.

Memory: bounded by one slab of ``max_voxels`` plus the per-frame metadata. A first pass
over the slabs finds the kept frames (which class occurs in which slice); highdicom
builds the whole dataset but the Pixel Data from the source headers and a stand-in of
one pixel a kept frame, so its functional groups, references, dimension index and frame
order are its own; a second pass streams the bit-packed frames into the file
(:mod:`pipeline.io.dicom_seg_stream`). The result equals highdicom's encoding of the
whole array (:func:`write_dicom_seg_whole`, kept as the reference: about 1.7 bytes a
voxel) element for element, Pixel Data included (but an odd length's pad byte: zero, as
DICOM says; highdicom writes an ASCII "0").

Reading
-------
:func:`read_seg_slab` returns a window of slices of a SEG on a series' grid (class ids
= segment numbers, 0 where no segment is set), matched by referenced SOPInstanceUID
(and frame); :func:`check_seg` validates a SEG against a series header-only.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

from pipeline.io.dicom_seg_stream import (
    PIXEL_DATA,
    LabelFrames,
    append_pixel_data,
    frame_plan,
)
from pipeline.io.dicom_series import DicomSeries, looks_like_dicom
from segcore.errors import InputError

SEG_FILE = "segmentation.dcm"
"""The DICOM-SEG export's file name (beside the NIfTI exports)."""
SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
"""Segmentation Storage SOP Class UID."""
SEG_SERIES_NUMBER = 9901
"""SeriesNumber of the SEG series (a number the scanner rarely uses)."""

TISSUE = ("85756007", "SCT", "Tissue")
"""Default category and type of a stuff class (SNOMED CT)."""
ABNORMAL = ("49755003", "SCT", "Morphologically Altered Structure")
LESION = ("52988006", "SCT", "Lesion")
"""Default category and type of a thing class (an instance class, e.g. lesions)."""


@dataclass(frozen=True)
class SegmentClass:
    """One segment: class id (= segment number), name, colour, codes ``(value, scheme,
    meaning)``."""

    id: int
    name: str
    color: tuple[int, int, int]
    category: tuple[str, str, str]
    type: tuple[str, str, str]


def class_codes(classes: Sequence[dict[str, Any]]) -> list[SegmentClass]:
    """Segments of a class table (``ClassSpec.model_dump()`` rows), background (id 0) left
    out; missing codes get :data:`TISSUE` (stuff) or :data:`ABNORMAL`/:data:`LESION`
    (things)."""
    out = []
    for row in sorted(classes, key=lambda c: int(c["id"])):
        if int(row["id"]) == 0:
            continue
        codes = row.get("dicom") or {}
        thing = bool(row.get("isthing", False))

        def code(key: str, default: tuple[str, str, str], codes: dict = codes) -> tuple:
            given = codes.get(key)
            return (str(given["value"]), str(given["scheme"]), str(given["meaning"])) \
                if given else default

        out.append(SegmentClass(
            int(row["id"]), str(row["name"]),
            tuple(int(v) for v in row.get("color", (128, 128, 128))),  # type: ignore[arg-type]
            code("category", ABNORMAL if thing else TISSUE),
            code("type", LESION if thing else TISSUE)))
    return out


def _version() -> str:
    try:
        return importlib.metadata.version("segpipe")
    except importlib.metadata.PackageNotFoundError:
        return "0"


_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
          "StudyTime", "StudyID", "ReferringPhysicianName", "AccessionNumber")
"""Type 2 attributes of the patient and study modules (present, possibly empty) that
highdicom copies into the SEG; a source without them gets them empty, never invented."""


def _complete(ds: pydicom.Dataset) -> pydicom.Dataset:
    for key in _TYPE2:
        if key not in ds:
            setattr(ds, key, None)
    return ds


def source_headers(series: DicomSeries) -> tuple[list[pydicom.Dataset], list[int]]:
    """The series' source datasets (header only) and, for each SEG frame in order, the
    slice ``k`` it holds.

    Single-frame files: one dataset per slice, in slice order (frame ``i`` = slice
    ``i``). One enhanced multi-frame file: that dataset, frames in its own order.
    """
    paths = {f.path for f in series.frames}
    multi = [f for f in series.frames if f.index is not None]
    if multi and (len(paths) > 1 or len(multi) != len(series.frames)):
        raise InputError(series.group.representative, "a series mixing multi-frame and "
                         "single-frame files cannot be referenced by one DICOM-SEG")
    if multi:
        ds = _complete(pydicom.dcmread(multi[0].path, stop_before_pixels=True, force=True))
        n = int(ds.get("NumberOfFrames", 1) or 1)
        if n != len(series.frames):
            raise InputError(multi[0].path, f"a multi-frame file of {n} frames of which the "
                             f"series uses {len(series.frames)}: cannot reference it whole")
        order = [0] * n
        for k, frame in enumerate(series.frames):
            order[int(frame.index)] = k  # type: ignore[arg-type]
        return [ds], order
    datasets = [_complete(pydicom.dcmread(f.path, stop_before_pixels=True, force=True))
                for f in series.frames]
    for ds in datasets:  # type 2, may be empty: the SEG's pixel measures need a value
        if ds.get("SliceThickness") in (None, ""):
            ds.SliceThickness = round(series.spacing[2], 6)
    return (datasets,
            list(range(len(series.frames))))


def write_dicom_seg(path: str | Path, series: DicomSeries,
                    slab: Callable[[int, int], np.ndarray], classes: Sequence[dict[str, Any]],
                    *, model: str, nodata: int | None = None,
                    max_voxels: int = 8 * 2**20) -> Path:
    """Write the series' class ids as a BINARY DICOM-SEG, holding one slab at a time.

    Two passes over the slabs: the first finds which classes occur in which slice (the
    frames the SEG keeps) and checks the class ids; highdicom then builds the dataset
    from the source headers and a stand-in of one pixel a kept frame (its own functional
    groups, references, dimension index and segments); the second pass streams the
    bit-packed frames into its Pixel Data (:mod:`pipeline.io.dicom_seg_stream`).

    Parameters
    ----------
    path : str or Path
        Output file (written to a temporary name beside it, then renamed).
    series : DicomSeries
        The source series (its files are read header-only).
    slab : callable
        ``slab(k0, k1)`` returns the class ids of slices ``k0:k1`` in the stored axis
        order ``(columns, rows, k1 - k0)``.
    classes : sequence of dict
        The class table (``ClassSpec.model_dump()`` rows, ids 0..n-1).
    model : str
        The model's name (the segments' algorithm name).
    nodata : int, optional
        Class id of voxels outside the valid region: written as background.
    max_voxels : int
        Most voxels read from ``slab`` at a time.

    Returns
    -------
    Path
    """
    segments = class_codes(classes)
    datasets, order = source_headers(series)
    columns, rows, n = series.disk_shape
    labels = LabelFrames(slab, (columns, rows, n), top=max((s.id for s in segments), default=0),
                         nodata=nodata, max_voxels=max_voxels, where=str(path))
    present = labels.presence()  # (slices, top + 1)
    stand_in = _stand_in(present, order)
    for ds in datasets:  # frames of the stand-in's shape; the spatial metadata is the source's
        ds.Rows, ds.Columns = stand_in.shape[1:]
    seg = _segmentation(datasets, stand_in, segments, model=model)
    del datasets
    seg.Rows, seg.Columns = rows, columns
    del seg.PixelData
    if max(seg.keys()) > PIXEL_DATA:
        raise ValueError("highdicom wrote elements after Pixel Data: cannot append it")
    plan = frame_plan(seg, {(f.sop_uid, f.index): k for k, f in enumerate(series.frames)})
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        seg.save_as(tmp, enforce_file_format=True)
        del seg
        with open(tmp, "r+b") as fh:
            fh.seek(0, 2)
            append_pixel_data(fh, plan, labels, present)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _stand_in(present: np.ndarray, order: Sequence[int]) -> np.ndarray:
    """``(source frames, 1, top)`` class ids with the kept frames of the real labels: pixel
    ``s - 1`` of source frame ``i`` is ``s`` where segment ``s`` occurs in its slice."""
    top = present.shape[1] - 1
    stand_in = np.zeros((len(order), 1, max(top, 1)), np.uint8 if top < 256 else np.uint16)
    ids = np.arange(1, top + 1, dtype=stand_in.dtype)
    stand_in[:, 0, :top] = np.where(present[np.asarray(order, int), 1:], ids, 0)
    return stand_in


def _segmentation(datasets: Sequence[pydicom.Dataset], pixel_array: np.ndarray,
                  segments: Sequence[SegmentClass], *, model: str) -> Any:
    """highdicom's BINARY Segmentation of ``pixel_array`` ``(source frames, rows,
    columns)`` class ids (source frame order), new series and instance UIDs."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algorithm = hd.AlgorithmIdentificationSequence(
        name=model, family=codes.cid7162.ArtificialIntelligence, version=_version(),
        source="segpipe")
    descriptions = [hd.seg.SegmentDescription(
        segment_number=s.id, segment_label=s.name[:64],
        segmented_property_category=hd.sr.CodedConcept(*s.category),
        segmented_property_type=hd.sr.CodedConcept(*s.type),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        display_color=hd.color.CIELabColor.from_rgb(*s.color)) for s in segments]
    return hd.seg.Segmentation(
        source_images=datasets, pixel_array=pixel_array,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(),
        series_number=SEG_SERIES_NUMBER, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="segpipe", manufacturer_model_name=model[:64],
        software_versions=_version(), device_serial_number="0",
        content_label="SEGPIPE", content_description=f"segpipe {model}"[:64],
        series_description=f"segpipe {model}"[:64])


def write_dicom_seg_whole(path: str | Path, series: DicomSeries,
                          slab: Callable[[int, int], np.ndarray],
                          classes: Sequence[dict[str, Any]], *, model: str,
                          nodata: int | None = None, max_voxels: int = 32 * 2**20) -> Path:
    """The same SEG as :func:`write_dicom_seg`, built by highdicom from the whole label
    array ``(slices, rows, columns)``: memory grows with the series (about 1.7 bytes a
    voxel). The reference the streamed writer is checked and measured against; same
    parameters."""
    segments = class_codes(classes)
    datasets, order = source_headers(series)
    columns, rows, n = series.disk_shape
    labels = LabelFrames(slab, (columns, rows, n), top=max((s.id for s in segments), default=0),
                         nodata=nodata, max_voxels=max_voxels, where=str(path))
    whole = np.zeros((n, rows, columns), np.uint8 if labels.top < 256 else np.uint16)
    for k0, frames in labels.groups():
        whole[k0: k0 + len(frames)] = frames
    seg = _segmentation(datasets, whole[order], segments, model=model)
    del whole
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        seg.save_as(tmp, enforce_file_format=True)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


# --------------------------------------------------------------------------- reading


def is_seg(path: str | Path) -> bool:
    """Whether ``path`` is a DICOM Segmentation (header only)."""
    if not Path(path).is_file() or not looks_like_dicom(path):
        return False
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True,
                             specific_tags=["SOPClassUID"])
    except Exception:  # noqa: BLE001 - anything unreadable is not a SEG
        return False
    return str(ds.get("SOPClassUID", "")) == SEG_CLASS


def referenced_series(path: str | Path) -> set[str]:
    """The SeriesInstanceUIDs a DICOM-SEG says it segments (header only; empty for a file
    that is no SEG)."""
    if not is_seg(path):
        return set()
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True,
                             specific_tags=["ReferencedSeriesSequence"])
    except Exception:  # noqa: BLE001 - an unreadable SEG references nothing
        return set()
    return {str(item.SeriesInstanceUID) for item in ds.get("ReferencedSeriesSequence") or []
            if "SeriesInstanceUID" in item}


def _references(ds: pydicom.Dataset) -> set[tuple[str, int | None]]:
    """``(SOPInstanceUID, frame index or None)`` of every source frame the SEG's frames
    derive from."""
    out = set()
    for item in ds.get("PerFrameFunctionalGroupsSequence") or []:
        for derivation in item.get("DerivationImageSequence") or []:
            for source in derivation.get("SourceImageSequence") or []:
                frames = source.get("ReferencedFrameNumber")
                uid = str(source.ReferencedSOPInstanceUID)
                if frames is None:
                    out.add((uid, None))
                else:
                    for f in (frames if isinstance(frames, Sequence) and
                              not isinstance(frames, str) else [frames]):
                        out.add((uid, int(f) - 1))
    return out


def check_seg(path: str | Path, series: DicomSeries) -> None:
    """Refuse a SEG that does not lie on ``series`` (header only): a BINARY or LABELMAP
    segmentation of the same frame of reference and frame size whose frames reference
    the series' instances. InputError naming the file otherwise."""
    where = str(path)
    ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    if str(ds.get("SOPClassUID", "")) != SEG_CLASS:
        raise InputError(where, f"SOPClassUID {ds.get('SOPClassUID', '')}: expected a DICOM "
                         f"Segmentation ({SEG_CLASS})")
    kind = str(ds.get("SegmentationType", ""))
    if kind not in ("BINARY", "LABELMAP"):
        raise InputError(where, f"SegmentationType {kind!r}: expected BINARY or LABELMAP "
                         "(class ids, not fractions)")
    group = series.group
    if (int(ds.Rows), int(ds.Columns)) != (group.rows, group.columns):
        raise InputError(where, f"frames of {int(ds.Rows)} x {int(ds.Columns)} (rows x "
                         f"columns); expected {group.rows} x {group.columns} (the series)")
    refs = _references(ds)
    ours = {(f.sop_uid, f.index) for f in series.frames}
    stray = {r for r in refs if r not in ours}
    if not refs or stray:
        raise InputError(where, f"{len(stray) if refs else 'no'} referenced source frame(s) "
                         f"not in the series {group.name} (expected frames derived from "
                         "its instances)")


def read_seg_slab(seg: Any, series: DicomSeries, k0: int, k1: int, *,
                  dtype: np.dtype | str = np.uint16) -> np.ndarray:
    """Slices ``k0:k1`` of a SEG (a :class:`highdicom.seg.Segmentation`) on the series'
    grid, ``(columns, rows, k1 - k0)`` class ids (segment numbers; 0 = none)."""
    frames = series.frames[k0:k1]
    rows, columns = series.group.rows, series.group.columns
    out = np.zeros((len(frames), rows, columns), dtype)
    if frames and frames[0].index is None:
        pixels = seg.get_pixels_by_source_instance(
            [f.sop_uid for f in frames], combine_segments=True,
            skip_overlap_checks=True, dtype=dtype)
        out[:] = pixels
    elif frames:
        pixels = seg.get_pixels_by_source_frame(
            frames[0].sop_uid, [int(f.index) + 1 for f in frames],  # type: ignore[arg-type]
            combine_segments=True, skip_overlap_checks=True, dtype=dtype)
        out[:] = pixels
    return np.transpose(out, (2, 1, 0))


__all__ = ["SEG_FILE", "SegmentClass", "check_seg", "class_codes", "is_seg", "read_seg_slab",
           "source_headers", "write_dicom_seg", "write_dicom_seg_whole"]
