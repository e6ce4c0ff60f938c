"""Synthetic DICOM series for the tests, written with pydicom (known world coordinates).

:func:`write_series` writes a volume ``(columns, rows, slices)`` (the stored axis order
of :mod:`pipeline.io.dicom_series`) as classic single-frame CT files or as one enhanced
multi-frame CT file, with a chosen geometry (orientation, spacing, origin and slice
step: a step off the normal is gantry tilt), file names, preamble, transfer syntax and
patient data (so tests can check it never leaks).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    CTImageStorage,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
    generate_uid,
)

PATIENT = {"PatientName": "Doe^Jane", "PatientID": "PID-7731-SECRET",
           "PatientBirthDate": "19610203", "AccessionNumber": "ACC-99812"}
"""Patient data written into every file; none of it may appear in any output."""


@dataclass(frozen=True)
class Geometry:
    """Row/column cosines, pixel spacing (rows, columns), first position, slice step."""

    row: tuple[float, float, float] = (1.0, 0.0, 0.0)
    col: tuple[float, float, float] = (0.0, 1.0, 0.0)
    pixel_spacing: tuple[float, float] = (1.25, 1.5)
    origin: tuple[float, float, float] = (-40.5, -60.25, 12.5)
    step: tuple[float, float, float] | None = None  # default: 2.5 mm along the normal
    slice_spacing: float = 2.5

    @property
    def step_vector(self) -> np.ndarray:
        if self.step is not None:
            return np.asarray(self.step, float)
        return np.cross(self.row, self.col) * self.slice_spacing

    def affine(self) -> np.ndarray:
        """Voxel ``(column, row, slice)`` -> LPS, the truth the reader must find."""
        a = np.eye(4)
        a[:3, 0] = np.asarray(self.row) * self.pixel_spacing[1]
        a[:3, 1] = np.asarray(self.col) * self.pixel_spacing[0]
        a[:3, 2] = self.step_vector
        a[:3, 3] = self.origin
        return a

    def position(self, k: int) -> list[float]:
        return [float(v) for v in np.asarray(self.origin) + k * self.step_vector]


def oblique(angle_deg: float = 30.0) -> Geometry:
    """A double-oblique geometry: rotated about S then about the new row axis."""
    a, b = np.radians(angle_deg), np.radians(angle_deg / 2)
    row = np.array([np.cos(a), np.sin(a), 0.0])
    col0 = np.array([-np.sin(a), np.cos(a), 0.0])
    normal0 = np.cross(row, col0)
    col = np.cos(b) * col0 + np.sin(b) * normal0
    return Geometry(row=tuple(row), col=tuple(col), origin=(10.125, -33.5, 71.25))


def tilted(angle_deg: float = 15.0) -> Geometry:
    """Gantry tilt: axial rows, the slice step leans along the column (Y) axis."""
    t = np.radians(angle_deg)
    col = (0.0, np.cos(t), np.sin(t))  # the tilted image plane
    step = (0.0, 0.0, 2.5)  # table motion along S: not the plane's normal
    return Geometry(col=col, step=step)


@dataclass
class Options:
    names: str = "ordered"  # "ordered", "shuffled" (random names) or "uid"
    preamble: bool = True
    syntax: str = "explicit"  # "explicit", "implicit" or "rle"
    multiframe: bool = False
    series_number: int | None = 3
    series_uid: str = field(default_factory=generate_uid)
    slope: float = 1.0
    intercept: float = 0.0
    seed: int = 0
    filename: str | None = None  # the multi-frame file's name


def _base(opts: Options, rows: int, columns: int, dtype: np.dtype) -> Dataset:
    ds = Dataset()
    for key, value in PATIENT.items():
        setattr(ds, key, value)
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.SeriesInstanceUID = opts.series_uid
    if opts.series_number is not None:
        ds.SeriesNumber = opts.series_number
    ds.Modality = "CT"
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.2"
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8 * dtype.itemsize
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if dtype.kind == "i" else 0
    return ds


def _meta(sop_class: str, sop: str, syntax: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = {"explicit": ExplicitVRLittleEndian,
                              "implicit": ImplicitVRLittleEndian,
                              "rle": ExplicitVRLittleEndian}[syntax]
    return meta


def _save(ds: Dataset, path: Path, opts: Options) -> None:
    if opts.syntax == "rle":
        ds.compress(RLELossless, encoding_plugin="pydicom")
    if opts.preamble:
        ds.save_as(path, enforce_file_format=True)
    else:
        ds.file_meta = FileMetaDataset()
        ds.save_as(path, enforce_file_format=False, implicit_vr=opts.syntax == "implicit",
                   little_endian=True)


def _names(n: int, opts: Options, sops: Sequence[str]) -> list[str]:
    if opts.names == "uid":
        return [f"{s}.dcm" for s in sops]
    if opts.names == "shuffled":
        order = np.random.default_rng(opts.seed).permutation(n)
        return [f"IMG{int(order[k]) * 7919 % 100003:06d}" for k in range(n)]
    return [f"slice{k:04d}.dcm" for k in range(n)]


def write_series(folder: Path, volume: np.ndarray, geometry: Geometry = Geometry(),
                 opts: Options | None = None) -> list[Path]:
    """Write ``volume`` ``(columns, rows, slices)`` of stored values; returns the files."""
    opts = opts or Options()
    folder.mkdir(parents=True, exist_ok=True)
    columns, rows, n = volume.shape
    if opts.multiframe:
        return [_write_enhanced(folder, volume, geometry, opts)]
    sops = [generate_uid() for _ in range(n)]
    names = _names(n, opts, sops)
    paths = []
    for k in range(n):
        ds = _base(opts, rows, columns, volume.dtype)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sops[k]
        ds.InstanceNumber = n - k  # reversed on purpose: it must not decide the order
        ds.ImagePositionPatient = geometry.position(k)
        ds.ImageOrientationPatient = [*map(float, geometry.row), *map(float, geometry.col)]
        ds.PixelSpacing = list(geometry.pixel_spacing)
        ds.RescaleSlope, ds.RescaleIntercept = opts.slope, opts.intercept
        ds.PixelData = np.ascontiguousarray(volume[:, :, k].T).tobytes()
        ds.file_meta = _meta(CTImageStorage, sops[k], opts.syntax)
        path = folder / names[k]
        _save(ds, path, opts)
        paths.append(path)
    return paths


def _write_enhanced(folder: Path, volume: np.ndarray, geometry: Geometry,
                    opts: Options) -> Path:
    columns, rows, n = volume.shape
    ds = _base(opts, rows, columns, volume.dtype)
    sop = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = EnhancedCTImageStorage, sop
    ds.NumberOfFrames = n
    shared = Dataset()
    orient, measures, transform = Dataset(), Dataset(), Dataset()
    orient.ImageOrientationPatient = [*map(float, geometry.row), *map(float, geometry.col)]
    measures.PixelSpacing = list(geometry.pixel_spacing)
    measures.SliceThickness = geometry.slice_spacing
    transform.RescaleSlope, transform.RescaleIntercept = opts.slope, opts.intercept
    transform.RescaleType = "HU"
    shared.PlaneOrientationSequence = DicomSequence([orient])
    shared.PixelMeasuresSequence = DicomSequence([measures])
    shared.PixelValueTransformationSequence = DicomSequence([transform])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    order = np.random.default_rng(opts.seed).permutation(n)  # frames stored out of order
    items = []
    for k in order:
        item, plane = Dataset(), Dataset()
        plane.ImagePositionPatient = geometry.position(int(k))
        item.PlanePositionSequence = DicomSequence([plane])
        items.append(item)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(items)
    frames = [np.ascontiguousarray(volume[:, :, int(k)].T) for k in order]
    ds.PixelData = np.stack(frames).tobytes()
    ds.file_meta = _meta(EnhancedCTImageStorage, sop, opts.syntax)
    path = folder / (opts.filename or ("series.dcm" if opts.names != "shuffled" else "MF0001"))
    _save(ds, path, opts)
    return path


def non_image(path: Path, sop_class: str) -> None:
    """A minimal non-image object (SR, SEG, presentation state) with patient data."""
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, generate_uid()
    ds.SeriesInstanceUID, ds.Modality = generate_uid(), "SR"
    ds.PatientName = "Doe^Jane"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)


@dataclass(frozen=True)
class DicomCase:
    """Conformance case: one enhanced multi-frame CT file (int16, frames stored out of
    order, no preamble-less tricks), axial LPS with the NIfTI case's voxel sizes.

    Inputs are ``.dcm``; the exports are NIfTI (``export_suffix``) on the series' grid, so
    :meth:`read` reads both and gives the grid as the RAS affine rounded to 4 decimals
    (every value here is exact in float32).
    """

    name: str = "dicom"
    ndim: int = 3
    shape: tuple[int, ...] = (44, 40, 30)  # (columns, rows, slices)
    suffix: str = ".dcm"
    export_suffix: str = ".nii.gz"
    tile: int = 24
    geometry: Geometry = Geometry(pixel_spacing=(1.25, 1.5), slice_spacing=2.5)

    def write(self, path: Path, data: np.ndarray) -> Path:
        opts = Options(multiframe=True, filename=path.name, seed=len(path.name))
        return write_series(path.parent, data.astype(np.int16), self.geometry, opts)[0]

    def read(self, path: Path) -> tuple[np.ndarray, dict]:
        import nibabel as nib
        import pydicom

        if path.name.endswith(".nii.gz"):
            image = nib.load(str(path))
            return np.asarray(image.dataobj), {
                "affine": np.round(image.affine, 4).tolist(), "shape": image.shape}
        ds = pydicom.dcmread(path)
        frames = ds.pixel_array  # (frames, rows, columns) in stored order
        per_frame = ds.PerFrameFunctionalGroupsSequence
        z = [float(f.PlanePositionSequence[0].ImagePositionPatient[2]) for f in per_frame]
        data = np.stack([frames[i].T for i in np.argsort(z)], axis=2)
        ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ self.geometry.affine()
        return data, {"affine": np.round(ras, 4).tolist(), "shape": data.shape}
