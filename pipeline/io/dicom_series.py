"""DICOM image series: find them in a tree, check their geometry, read them slab by slab.

Finding
-------
:func:`scan_folder` tries every visible file of one folder as DICOM, whatever its
name, with or without the 128-byte preamble and ``DICM`` prefix (:func:`looks_like_dicom`
sniffs the first bytes, then pydicom reads the header only: ``stop_before_pixels``).
Image frames are grouped into :class:`SeriesGroup` by SeriesInstanceUID and split
further where one series mixes orientations, pixel spacings or sizes. Non-image objects
(SR, RTSTRUCT, SEG, DICOMDIR, presentation states, RT dose/plan, images without
patient geometry) are skipped with a note; non-DICOM and unreadable files are listed
with a reason (:class:`Skipped`). :func:`walk_folders` yields the visible folders of a
tree (hidden files and folders skipped). :func:`scan_folder_cached` reuses a folder's scan
while its files' names, sizes and modification times (:func:`folder_state`) stay the same.

Geometry
--------
:func:`build_series` orders the frames of a group by their position along the normal of
ImageOrientationPatient (never by file name or InstanceNumber), drops duplicate
instances (same SOPInstanceUID and frame), and refuses two frames at one position or
uneven spacing (a missing slice), naming the gap. The voxel -> patient (LPS, mm)
affine of the stored axes ``(i, j, k) = (column, row, slice)`` is::

    P(i, j, k) = IPP_0 + i * PixelSpacing[1] * row_cosine
                       + j * PixelSpacing[0] * column_cosine + k * step

where ``step = (IPP_last - IPP_0) / (n - 1)``: with gantry tilt the step is not
along the normal and the grid is sheared; every frame's ImagePositionPatient lies
within :data:`POSITION_TOLERANCE_MM` of ``P(0, 0, k)`` or the series is refused.

Reading
-------
:meth:`DicomSeries.read_slab` decodes a window of frames (pydicom's pixel handlers
with pylibjpeg's JPEG, JPEG-LS, JPEG 2000 and RLE plugins; big-endian and implicit VR
included) and applies RescaleSlope/RescaleIntercept per frame (CT in HU). Enhanced
multi-frame objects are read frame by frame (per-frame and shared functional groups),
so memory is bounded by one slab, never the whole series.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from segcore.errors import InputError

POSITION_TOLERANCE_MM = 1e-3
"""Largest distance between a frame's ImagePositionPatient and the affine's voxel."""
GAP_FACTOR = 1.5
"""A step between neighbouring slices this many times the usual one is a missing slice."""
DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
_NON_IMAGE_PREFIXES = {  # SOP class UID prefix -> what it is (longest prefixes first)
    "1.2.840.10008.5.1.4.1.1.481.3": "RTSTRUCT (an RT structure set)",
    "1.2.840.10008.5.1.4.1.1.481.5": "RTPLAN (an RT plan)",
    "1.2.840.10008.5.1.4.1.1.481.2": "RTDOSE (an RT dose)",
    "1.2.840.10008.5.1.4.1.1.481.": "an RT object (RTSTRUCT, RT plan or RT dose)",
    "1.2.840.10008.5.1.4.1.1.66.4": "SEG (a segmentation)",
    "1.2.840.10008.5.1.4.1.1.66": "a segmentation/registration object (SEG, REG)",
    "1.2.840.10008.5.1.4.1.1.88.": "SR (a structured report)",
    "1.2.840.10008.5.1.4.1.1.11.": "PR (a presentation state)",
    "1.2.840.10008.5.1.4.1.1.104.": "an encapsulated document",
    "1.2.840.10008.5.1.4.1.1.9.": "a waveform",
    "1.2.840.10008.1.3.10": "DICOMDIR (a media directory)",
}
_STORAGE_PREFIX = "1.2.840.10008.5.1.4.1.1."  # SOP classes of stored objects (images, ...)
_DECIMALS = 4  # orientation cosines and spacings are compared to this many decimals


@dataclass(frozen=True)
class Skipped:
    """A file that is not part of any image series, and why (file name only).

    ``dicom`` is True when the file is DICOM (a non-image object, or an image or header
    that cannot be used), False for a file that is not DICOM or cannot be read at all.
    """

    path: str
    reason: str
    dicom: bool = False


@dataclass(frozen=True)
class Frame:
    """One 2-D image: a single-frame file or one frame of a multi-frame file."""

    path: str
    index: int | None  # frame index in a multi-frame file; None for single-frame files
    sop_uid: str
    position: tuple[float, float, float]  # ImagePositionPatient (LPS, mm)
    slope: float
    intercept: float


@dataclass(frozen=True)
class SeriesGroup:
    """Frames of one folder that share series, orientation, pixel spacing and size.

    ``name`` is unique in the folder: ``s<SeriesNumber>``, or with a short UID suffix
    when that is ambiguous; it carries no patient data.
    """

    folder: str
    series_uid: str
    series_number: int | None
    name: str
    rows: int
    columns: int
    orientation: tuple[float, ...]  # 6 direction cosines (row, column)
    pixel_spacing: tuple[float, float]  # (between rows, between columns) in mm
    frames: tuple[Frame, ...]
    samples: int
    bits_stored: int
    signed: bool
    modality: str
    transfer_syntaxes: tuple[str, ...]

    @property
    def files(self) -> tuple[str, ...]:
        """Distinct files of the group, sorted."""
        return tuple(sorted({f.path for f in self.frames}))

    @property
    def representative(self) -> str:
        """The file that stands for the group (the first in path order)."""
        return self.files[0]

    @property
    def instance_files(self) -> tuple[str, ...]:
        """Distinct files the series is read from, sorted: :attr:`files` less those
        whose every frame repeats an instance of another file (:func:`build_series`
        reads a repeated instance once, from the first file in path order)."""
        return tuple(sorted({f.path for f in _unique(self.frames)[0]}))


@dataclass(frozen=True)
class FolderScan:
    """What one folder holds: its image series groups and the files left out."""

    groups: tuple[SeriesGroup, ...]
    skipped: tuple[Skipped, ...]


@dataclass(frozen=True)
class DicomSeries:
    """A series checked as one regular (possibly sheared) 3-D grid.

    Attributes
    ----------
    group : SeriesGroup
        The frames, in the original grouping.
    frames : tuple of Frame
        Ordered along the slice normal, duplicates dropped.
    affine : (4, 4) tuple of float
        Stored voxel ``(i, j, k) = (column, row, slice)`` -> patient LPS in mm.
    disk_shape : tuple of 3 int
        ``(columns, rows, slices)``.
    spacing : tuple of 3 float
        Column spacing, row spacing and slice spacing along the normal, in mm.
    dtype : str
        Sample dtype after RescaleSlope/Intercept.
    duplicates : int
        Frames dropped as repeated instances.
    residual_mm : float
        Largest distance of a frame's ImagePositionPatient from the affine's voxel.
    tilt_deg : float
        Angle between the slice step and the normal (gantry tilt; 0 for a plain stack).
    """

    group: SeriesGroup
    frames: tuple[Frame, ...]
    affine: tuple[tuple[float, ...], ...]
    disk_shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    dtype: str
    duplicates: int
    residual_mm: float
    tilt_deg: float

    @property
    def ras_affine(self) -> np.ndarray:
        """``(4, 4)`` ndarray of float64: the affine in RAS+ (NIfTI's convention)."""
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(self.affine)

    def read_slab(self, k0: int, k1: int) -> np.ndarray:
        """Frames ``k0:k1`` as a ``(columns, rows, k1 - k0)`` ndarray of :attr:`dtype`
        (stored axis order), rescaled."""
        out = np.empty((self.disk_shape[0], self.disk_shape[1], k1 - k0), dtype=self.dtype)
        for pos, frame in enumerate(self.frames[k0:k1]):
            out[:, :, pos] = _rescaled(_decode(frame, self.group), frame, self.dtype).T
        return out

    def slabs(self, max_voxels: int = 32 * 2**20) -> Iterator[tuple[int, int, np.ndarray]]:
        """``(k0, k1, slab)`` over the whole series, at most ``max_voxels`` a slab."""
        step = max(1, int(max_voxels) // (self.disk_shape[0] * self.disk_shape[1]))
        for k0 in range(0, self.disk_shape[2], step):
            k1 = min(self.disk_shape[2], k0 + step)
            yield k0, k1, self.read_slab(k0, k1)


# --------------------------------------------------------------------------- finding


def looks_like_dicom(path: str | os.PathLike[str]) -> bool:
    """Whether the file starts like DICOM: ``DICM`` after a 128-byte preamble, or a
    first data element of group 0x0002 or 0x0008 (little or big endian) without one."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    return len(head) >= 8 and head[:2] in (b"\x02\x00", b"\x08\x00", b"\x00\x08")


def walk_folders(root: str | os.PathLike[str]) -> Iterator[tuple[Path, list[Path]]]:
    """``(folder, visible files)`` under ``root`` in sorted order; hidden files and
    folders (name starting with ``.``) are skipped and never descended into."""
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files = [Path(folder, n) for n in sorted(names) if not n.startswith(".")]
        yield Path(folder), [p for p in files if p.is_file()]


def scan_folder(folder: str | os.PathLike[str], files: Sequence[Path] | None = None,
                *, claimed: Sequence[str] = ()) -> FolderScan:
    """Group the image frames of one folder's files into series.

    Parameters
    ----------
    folder : str or PathLike
        The folder; its visible files are tried when ``files`` is None.
    files : sequence of Path, optional
        The files to try (all in ``folder``).
    claimed : sequence of str
        Lower-case name endings of other formats' files (``.tif``, ``.nii.gz``): not
        tried and not listed.

    Returns
    -------
    FolderScan
    """
    folder = Path(folder)
    if files is None:
        files = next(walk_folders(folder), (folder, []))[1] if folder.is_dir() else []
    frames: dict[tuple, list[tuple[Frame, dict[str, Any]]]] = {}
    skipped: list[Skipped] = []
    for path in files:
        if path.name.lower().endswith(tuple(claimed)):
            continue
        found = _frames_of(path)
        if isinstance(found, Skipped):
            skipped.append(found)
            continue
        for frame, meta in found:
            frames.setdefault(meta["key"], []).append((frame, meta))
    return FolderScan(_name_groups(str(folder), frames), tuple(skipped))


def folder_state(folder: str | os.PathLike[str]) -> tuple[tuple[str, int, int], ...]:
    """``(name, size, mtime_ns)`` of the visible files of ``folder``, sorted by name
    (empty when it is not a readable directory)."""
    try:
        with os.scandir(folder) as entries:
            found = []
            for entry in entries:
                if entry.name.startswith(".") or not entry.is_file():
                    continue
                st = entry.stat()
                found.append((entry.name, st.st_size, st.st_mtime_ns))
    except OSError:
        return ()
    return tuple(sorted(found))


@lru_cache(maxsize=8)
def _scan_state(folder: str, state: tuple[tuple[str, int, int], ...]) -> FolderScan:
    return scan_folder(folder, [Path(folder, name) for name, _, _ in state])


def scan_folder_cached(folder: str | os.PathLike[str]) -> FolderScan:
    """:func:`scan_folder` of all visible files of ``folder``, reused while none of them
    changed (same names, sizes and modification times): a run scans a series' folder
    for its fingerprint, then again to open it; only the first reads headers."""
    return _scan_state(str(folder), folder_state(folder))


def _frames_of(path: Path) -> list[tuple[Frame, dict[str, Any]]] | Skipped:
    try:
        with open(path, "rb") as fh:
            empty = not fh.read(1)
    except OSError as exc:
        return Skipped(path.name, f"unreadable file ({_one_line(exc)})")
    if empty:
        return Skipped(path.name, "empty file (0 bytes)")
    if not looks_like_dicom(path):
        return Skipped(path.name, "not a DICOM file")
    try:  # a damaged file fails in many ways (struct, overflow, decoding errors...)
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        why = _not_an_image(ds)
    except Exception as exc:  # noqa: BLE001 - one skipped file, with its reason
        return Skipped(path.name, f"unreadable DICOM header ({_one_line(exc)})", dicom=True)
    if why:
        return Skipped(path.name, why, dicom=True)
    try:
        return _frames(path, ds)
    except Exception as exc:  # noqa: BLE001 - values are parsed lazily: any can be bad
        return Skipped(path.name, f"image without usable patient geometry ({_one_line(exc)})",
                       dicom=True)


def _one_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _not_an_image(ds: pydicom.Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    sop = str(ds.get("SOPClassUID", "") or (meta.get("MediaStorageSOPClassUID", "")
                                             if meta is not None else ""))
    if "DirectoryRecordSequence" in ds:
        sop = DICOMDIR_CLASS
    for prefix, what in _NON_IMAGE_PREFIXES.items():
        if sop.startswith(prefix):
            return f"{what}, not an image: skipped"
    if "Rows" not in ds or "Columns" not in ds:
        if sop.startswith(_STORAGE_PREFIX):  # an image class: the header ended early
            return "an image file cut short or damaged (no Rows/Columns): skipped"
        return "no image (no Rows/Columns): skipped"
    if "ImagePositionPatient" not in ds and "PerFrameFunctionalGroupsSequence" not in ds:
        return "an image without patient geometry (no ImagePositionPatient): skipped"
    return ""


def _functional(ds: pydicom.Dataset, item: Any, sequence: str) -> Any:
    """The first item of a functional group macro: per-frame first, then shared."""
    for holder in (item, *(ds.get("SharedFunctionalGroupsSequence") or [])[:1]):
        items = getattr(holder, sequence, None) if holder is not None else None
        if items:
            return items[0]
    return None


def _floats(values: Any, n: int, what: str) -> tuple[float, ...]:
    out = tuple(float(v) for v in values)
    if len(out) != n or not all(np.isfinite(out)):
        raise ValueError(f"{what}: expected {n} finite numbers, got {values!r}")
    return out


def _frames(path: Path, ds: pydicom.Dataset) -> list[tuple[Frame, dict[str, Any]]]:
    meta = getattr(ds, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "") if meta is not None else "") or \
        _syntax_of(ds)
    common = {
        "series_uid": str(ds.get("SeriesInstanceUID", "") or "unknown"),
        "series_number": _int_or_none(ds.get("SeriesNumber")),
        "rows": int(ds.Rows), "columns": int(ds.Columns),
        "samples": int(ds.get("SamplesPerPixel", 1) or 1),
        "bits_stored": int(ds.get("BitsStored", ds.get("BitsAllocated", 16)) or 16),
        "signed": bool(int(ds.get("PixelRepresentation", 0) or 0)),
        "modality": str(ds.get("Modality", "") or ""), "syntax": syntax,
    }
    sop = str(ds.get("SOPInstanceUID", "") or path.name)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    items: list[Any] = list(per_frame) if per_frame else [None]
    out = []
    for index, item in enumerate(items):
        if item is None:
            position = _floats(ds.ImagePositionPatient, 3, "ImagePositionPatient")
            orientation = _floats(ds.ImageOrientationPatient, 6, "ImageOrientationPatient")
            spacing = _floats(ds.PixelSpacing, 2, "PixelSpacing")
            slope, intercept = ds.get("RescaleSlope", 1), ds.get("RescaleIntercept", 0)
        else:
            position = _floats(_functional(ds, item, "PlanePositionSequence")
                               .ImagePositionPatient, 3, "ImagePositionPatient")
            orientation = _floats(_functional(ds, item, "PlaneOrientationSequence")
                                  .ImageOrientationPatient, 6, "ImageOrientationPatient")
            spacing = _floats(_functional(ds, item, "PixelMeasuresSequence").PixelSpacing, 2,
                              "PixelSpacing")
            transform = _functional(ds, item, "PixelValueTransformationSequence")
            slope = transform.get("RescaleSlope", 1) if transform is not None else 1
            intercept = transform.get("RescaleIntercept", 0) if transform is not None else 0
        frame = Frame(str(path), index if per_frame else None, sop, position,  # type: ignore[arg-type]
                      float(slope if slope not in (None, "") else 1),
                      float(intercept if intercept not in (None, "") else 0))
        key = (common["series_uid"], common["rows"], common["columns"],
               tuple(round(v, _DECIMALS) for v in orientation),
               tuple(round(v, _DECIMALS) for v in spacing))
        out.append((frame, {**common, "key": key, "orientation": orientation,
                            "spacing": spacing}))
    return out


def _syntax_of(ds: pydicom.Dataset) -> str:
    """The transfer syntax of a file without meta information, from how it was read."""
    implicit, little = getattr(ds, "original_encoding", (False, True))
    if implicit:
        return str(ImplicitVRLittleEndian)
    return str(ExplicitVRLittleEndian if little else ExplicitVRBigEndian)


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _name_groups(folder: str, frames: dict[tuple, list[tuple[Frame, dict[str, Any]]]]
                 ) -> tuple[SeriesGroup, ...]:
    """One SeriesGroup per key, named uniquely within the folder, in a stable order."""
    keys = sorted(frames, key=lambda k: (min(f.path for f, _ in frames[k]), repr(k)))
    numbers = [frames[k][0][1]["series_number"] for k in keys]
    uids = [k[0] for k in keys]
    groups, used = [], set()
    for key, number in zip(keys, numbers):
        meta = frames[key][0][1]
        uid = key[0]
        name = f"s{number}" if number is not None else f"uid-{_uid_tail(uid)}"
        if number is not None and (numbers.count(number) > 1 and len({
                u for u, n in zip(uids, numbers) if n == number}) > 1):
            name = f"{name}-{_uid_tail(uid)}"
        base, part = name, 2
        while name in used:
            name, part = f"{base}-part{part}", part + 1
        used.add(name)
        members = [f for f, _ in frames[key]]
        groups.append(SeriesGroup(
            folder=folder, series_uid=uid, series_number=number, name=name,
            rows=meta["rows"], columns=meta["columns"], orientation=meta["orientation"],
            pixel_spacing=meta["spacing"], frames=tuple(members), samples=meta["samples"],
            bits_stored=meta["bits_stored"], signed=meta["signed"], modality=meta["modality"],
            transfer_syntaxes=tuple(sorted({m["syntax"] for _, m in frames[key]}))))
    return tuple(groups)


def _uid_tail(uid: str) -> str:
    """The last 8 digits of a UID (no dots): a short, non-identifying suffix."""
    return uid.replace(".", "")[-8:] or "0"


# --------------------------------------------------------------------------- geometry


def build_series(group: SeriesGroup, *, tolerance_mm: float = POSITION_TOLERANCE_MM
                 ) -> DicomSeries:
    """Order the frames, check the spacing and compute the exact affine.

    Raises
    ------
    InputError
        Naming the series' first file: colour images, two frames at one position,
        a missing slice (the gap and where it is) or otherwise uneven spacing.
    """
    where = group.representative
    if group.samples != 1:
        raise InputError(where, f"series {group.name}: SamplesPerPixel {group.samples} "
                         "(colour); expected 1 (greyscale volumes)")
    row, col = np.array(group.orientation[:3]), np.array(group.orientation[3:])
    normal = np.cross(row, col)
    if not np.isclose(np.linalg.norm(normal), 1.0, atol=1e-3):
        raise InputError(where, f"series {group.name}: ImageOrientationPatient "
                         f"{list(group.orientation)} is not two orthogonal unit vectors")
    frames, duplicates = _unique(group.frames)
    frames = sorted(frames, key=lambda f: (float(np.dot(f.position, normal)), f.path))
    positions = np.array([f.position for f in frames])
    along = positions @ normal
    _check_distinct(where, group.name, frames, along)
    step = _step(where, group, positions, along)
    origin = positions[0]
    expected = origin + np.arange(len(frames))[:, None] * step
    residual = float(np.abs(np.linalg.norm(positions - expected, axis=1)).max())
    if residual > tolerance_mm:
        raise InputError(where, f"series {group.name}: uneven slice spacing: a slice lies "
                         f"{residual:.4g} mm from an evenly spaced grid (tolerance "
                         f"{tolerance_mm} mm); resample the series first")
    affine = np.eye(4)
    affine[:3, 0] = row * group.pixel_spacing[1]
    affine[:3, 1] = col * group.pixel_spacing[0]
    affine[:3, 2] = step
    affine[:3, 3] = origin
    slice_spacing = float(np.dot(step, normal))
    norm = float(np.linalg.norm(step))
    tilt = float(np.degrees(np.arccos(min(1.0, slice_spacing / norm))))
    return DicomSeries(
        group=group, frames=tuple(frames),
        affine=tuple(tuple(float(v) for v in r) for r in affine),
        disk_shape=(group.columns, group.rows, len(frames)),
        spacing=(group.pixel_spacing[1], group.pixel_spacing[0], slice_spacing),
        dtype=_output_dtype(group, frames), duplicates=duplicates, residual_mm=residual,
        tilt_deg=round(tilt, 6))


def _unique(frames: Sequence[Frame]) -> tuple[list[Frame], int]:
    """Frames with repeated (SOPInstanceUID, frame) dropped (the first path kept)."""
    seen: dict[tuple[str, int | None], Frame] = {}
    for frame in sorted(frames, key=lambda f: (f.path, f.index or 0)):
        seen.setdefault((frame.sop_uid, frame.index), frame)
    return list(seen.values()), len(frames) - len(seen)


def _check_distinct(where: str, name: str, frames: Sequence[Frame], along: np.ndarray) -> None:
    for k, (a, b) in enumerate(itertools.pairwise(frames)):
        if abs(along[k + 1] - along[k]) < 1e-4:
            raise InputError(where, f"series {name}: two images at the same position "
                             f"({Path(a.path).name} and {Path(b.path).name}, "
                             f"{along[k]:.6g} mm along the normal): several echoes, "
                             "phases or times in one series are not a 3-D volume")


def _step(where: str, group: SeriesGroup, positions: np.ndarray, along: np.ndarray
          ) -> np.ndarray:
    """The slice step vector; InputError naming the gap when a slice is missing."""
    if len(positions) == 1:
        normal = np.cross(group.orientation[:3], group.orientation[3:])
        return normal * min(group.pixel_spacing)  # one slice: any thickness; documented
    gaps = np.diff(along)
    usual = float(np.median(gaps))
    worst = int(np.argmax(gaps))
    if gaps[worst] > GAP_FACTOR * usual:
        missing = round(float(gaps[worst]) / usual) - 1
        raise InputError(where, f"series {group.name}: uneven slice spacing: a gap of "
                         f"{gaps[worst]:.4g} mm between slices {worst} and {worst + 1} "
                         f"(at {along[worst]:.4g} and {along[worst + 1]:.4g} mm along the "
                         f"normal; the others are {usual:.4g} mm apart): about {missing} "
                         "slice(s) missing; export the whole series")
    return (positions[-1] - positions[0]) / (len(positions) - 1)


def _output_dtype(group: SeriesGroup, frames: Sequence[Frame]) -> str:
    """Integer when every slope is 1 and every intercept whole and the result fits
    int16/int32; float32 (float64 for stored values beyond 24 bits) otherwise."""
    bits = group.bits_stored
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if group.signed else (0, 2**bits - 1)
    if all(f.slope == 1.0 and float(f.intercept).is_integer() for f in frames):
        inter = [int(f.intercept) for f in frames]
        low, high = lo + min(inter), hi + max(inter)
        if min(inter) == max(inter) == 0 and not group.signed and bits <= 16:
            return "uint8" if bits <= 8 else "uint16"
        for name in ("int16", "int32"):
            info = np.iinfo(name)
            if info.min <= low and high <= info.max:
                return name
    return "float32" if bits <= 24 else "float64"


# --------------------------------------------------------------------------- pixels


def _decode(frame: Frame, group: SeriesGroup) -> np.ndarray:
    """One frame's stored values, ``(rows, columns)``, native byte order."""
    try:
        try:
            array = pydicom.pixels.pixel_array(frame.path, index=frame.index)
        except AttributeError:  # no file meta information: say the transfer syntax
            ds = pydicom.dcmread(frame.path, force=True)
            ds.file_meta = getattr(ds, "file_meta", None) or FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = UID(_syntax_of(ds))
            array = pydicom.pixels.pixel_array(ds, index=frame.index)
    except Exception as exc:  # decoders raise many kinds: one line out
        raise InputError(frame.path, f"cannot decode the pixel data ({_one_line(exc)})") from exc
    if array.shape != (group.rows, group.columns):
        raise InputError(frame.path, f"pixel data of shape {array.shape}; expected "
                         f"({group.rows}, {group.columns}) (Rows, Columns)")
    return array.astype(array.dtype.newbyteorder("="), copy=False)


def _rescaled(array: np.ndarray, frame: Frame, dtype: str) -> np.ndarray:
    out = np.dtype(dtype)
    if out.kind in "iu":
        return (array.astype(np.int64) + int(frame.intercept)).astype(out)
    return (array.astype(np.float64) * frame.slope + frame.intercept).astype(out)
