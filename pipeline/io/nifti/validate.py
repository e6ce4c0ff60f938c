"""NIfTI validation: header parsing and the checks behind :func:`open_volume`.

See :mod:`pipeline.io.nifti` for the overview.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from collections.abc import Callable, Sequence
from typing import BinaryIO

import numpy as np
from nibabel.nifti1 import Nifti1Header
from nibabel.nifti2 import Nifti2Header
from nibabel.orientations import aff2axcodes
from nibabel.spatialimages import HeaderDataError

from pipeline.io.nifti.volume import (
    CIFTI_INTENTS,
    GZIP_MAX_RATIO,
    MAX_IMAGE_BYTES,
    SUPPORTED_DTYPES,
    VolumeInfo,
    _CHUNK,
    _HEADERS,
    _UNIT_TO_MM,
    _str3,
)
from pipeline.storage.downloads import local_copy
from pipeline.storage.location import S3Uri, parse_location
from segcore.errors import InputError

# --------------------------------------------------------------------------- header reading


def _fmt_bytes(n: int) -> str:
    for unit, scale in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit} ({n} bytes)"
    return f"{n} bytes"


def _is_gzip(path: str) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def _read_head(path: str, compressed: bool) -> bytes:
    """The first 540 bytes (fewer if the file is shorter), decompressed."""
    try:
        if compressed:
            with gzip.GzipFile(path, "rb") as gz:
                return _read_upto(gz, 540)
        with open(path, "rb") as fh:
            return fh.read(540)
    except EOFError as exc:
        raise InputError(path, f"truncated gzip stream inside the header ({exc})") from exc
    except (OSError, zlib.error) as exc:
        raise InputError(path, f"corrupt gzip stream: {exc}") from exc


def _read_upto(stream: BinaryIO, n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        part = stream.read(min(n - got, _CHUNK))
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def _header_version(path: str, block: bytes) -> int:
    """1 or 2 from sizeof_hdr and magic, or InputError saying what the file is."""
    if len(block) >= 4:
        for order in "<>":
            sizeof_hdr = int(np.frombuffer(block[:4], dtype=f"{order}i4")[0])
            if sizeof_hdr == 348 and len(block) >= 348:
                return _check_magic(path, block[344:348], 1)
            if sizeof_hdr == 540 and len(block) >= 540:
                return _check_magic(path, block[4:8], 2)
            if sizeof_hdr in (348, 540):
                raise InputError(path, f"truncated NIfTI header: {len(block)} of {sizeof_hdr} "
                                 "bytes")
    head = block[:48]
    if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        shown = head[:32].decode("ascii").split("\n")[0]
        return _not_nifti(path, f"it is a text file (starts with {shown!r})")
    return _not_nifti(path, f"no NIfTI-1/2 header (first bytes {block[:8].hex(' ')})")


def _not_nifti(path: str, why: str) -> int:
    raise InputError(path, f"not a NIfTI file: {why}; expected a .nii or .nii.gz volume")


def _check_magic(path: str, magic: bytes, version: int) -> int:
    if magic == f"n+{version}\x00".encode():
        return version
    if magic == f"ni{version}\x00".encode():
        raise InputError(path, f"NIfTI-{version} header of a .hdr/.img pair; segpipe reads "
                         "single-file volumes: convert it to .nii (e.g. nibabel or fslchfiletype)")
    size = 348 if version == 1 else 540
    return _not_nifti(path, f"a {size}-byte header without NIfTI magic (found {magic!r}; "
                      "Analyze 7.5?)")


def _parse_header(path: str, block: bytes) -> Nifti1Header:
    """nibabel header object (no extensions) from a raw header block."""
    version = _header_version(path, block)
    klass = _HEADERS[version]
    try:
        return klass(block[: klass.sizeof_hdr], check=True)
    except (HeaderDataError, ValueError, TypeError, OverflowError) as exc:
        # OverflowError: nibabel's own check of an infinite vox_offset
        raise InputError(path, f"invalid NIfTI-{version} header: {exc}") from exc


# --------------------------------------------------------------------------- open_volume


def open_volume(path: str | os.PathLike[str]) -> VolumeInfo:
    """Validate a NIfTI-1/2 volume and describe it without reading its voxels.

    Parameters
    ----------
    path : str, PathLike or S3Uri
        A local ``.nii`` or ``.nii.gz`` file (compression is detected from the content),
        or an ``s3://`` object: nibabel reads files only, so it is downloaded first
        (:func:`pipeline.storage.downloads.local_copy`) and ``VolumeInfo.path`` names
        the local copy.

    Returns
    -------
    VolumeInfo

    Raises
    ------
    InputError
        One error naming the problem: missing or empty file, not NIfTI,
        truncated gzip or header, no image data after the header, CIFTI-2 or
        5-D+ file, absurd declared size, singular or non-finite affine,
        unsupported data type (complex, RGB, float128).
    StorageError
        For an ``s3://`` object that cannot be downloaded.
    """
    where = parse_location(path)
    if isinstance(where, S3Uri):
        try:
            return open_volume(local_copy(where))
        except InputError as exc:
            raise InputError(str(where), exc.reason) from exc
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(path, "file not found")
    if not os.path.isfile(path):
        raise InputError(path, "not a regular file (expected a .nii or .nii.gz volume)")
    size = os.path.getsize(path)
    if size == 0:
        raise InputError(path, "empty file (0 bytes); expected a .nii or .nii.gz volume")
    compressed = _is_gzip(path)
    hdr = _parse_header(path, _read_head(path, compressed))
    info = _describe(path, hdr, compressed)
    _check_size(path, hdr, compressed, size)
    return info


def _describe(path: str, hdr: Nifti1Header, compressed: bool) -> VolumeInfo:
    shape = _check_shape(path, hdr)
    out_dtype = _output_dtype(path, hdr)
    affine = _check_affine(path, hdr)
    axcodes = aff2axcodes(affine)
    if None in axcodes:
        raise InputError(path, f"affine has no clear axis orientation ({axcodes}): "
                         f"{affine.tolist()}")
    unit = _spatial_unit(path, hdr)
    zooms = [float(z) * _UNIT_TO_MM.get(unit, 1.0) for z in hdr.get_zooms()[:3]]
    if not all(math.isfinite(z) and z > 0 for z in zooms):  # fall back to the affine
        zooms = [float(v) for v in np.linalg.norm(affine[:3, :3], axis=0)]
    return VolumeInfo(
        path=path, version=2 if isinstance(hdr, Nifti2Header) else 1, compressed=compressed,
        disk_shape=(shape[0], shape[1], shape[2]), channels=shape[3] if len(shape) == 4 else 1,
        dtype=out_dtype.name, affine=tuple(tuple(float(v) for v in row) for row in affine),
        zooms=(zooms[0], zooms[1], zooms[2]), axcodes=_str3(axcodes),
        qform_code=int(hdr["qform_code"]), sform_code=int(hdr["sform_code"]),
        xyz_unit=str(unit), header=hdr.binaryblock,
    )


def _spatial_unit(path: str, hdr: Nifti1Header) -> str:
    """The header's spatial unit (``"mm"``, ...), or InputError for an unknown code."""
    try:
        return str(hdr.get_xyzt_units()[0])
    except KeyError as exc:
        raise InputError(path, f"invalid NIfTI header: xyzt_units {int(hdr['xyzt_units'])} "
                         "holds no known space/time unit codes; the header is corrupt") from exc


def _check_shape(path: str, hdr: Nifti1Header) -> tuple[int, ...]:
    shape = tuple(int(d) for d in hdr.get_data_shape())
    intent = int(hdr["intent_code"])
    if intent in CIFTI_INTENTS:
        raise InputError(path, f"CIFTI-2 file (intent_code {intent}, dims {shape}): a "
                         "grayordinate/parcel matrix, not a volume; segpipe reads 3-D or 4-D "
                         "NIfTI volumes")
    if len(shape) > 4:
        raise InputError(path, f"{len(shape)}-D image (dims {shape}); segpipe reads 3-D volumes "
                         "or 4-D volumes with channels on the 4th axis")
    if len(shape) < 3:
        raise InputError(path, f"{len(shape)}-D image (dims {shape}); expected a 3-D or 4-D volume")
    if min(shape) <= 0:
        raise InputError(path, f"empty image: dims {shape} include a zero or negative size")
    return shape


def _output_dtype(path: str, hdr: Nifti1Header) -> np.dtype:
    raw = hdr.get_data_dtype()
    if raw.kind == "c":
        raise InputError(path, f"complex data type ({raw.newbyteorder('=').name}) is not "
                         "supported; store magnitude or real/imaginary parts as float32")
    if raw.kind == "V" or raw.fields:
        raise InputError(path, "RGB/RGBA data type is not supported; store colour channels on "
                         "the 4th axis (e.g. uint8 with dims (x, y, z, 3))")
    native = raw.newbyteorder("=")
    if native.name not in SUPPORTED_DTYPES:
        raise InputError(path, f"unsupported data type {native.name}; expected one of "
                         f"{', '.join(SUPPORTED_DTYPES)}")
    try:
        slope, inter = hdr.get_slope_inter()
    except HeaderDataError as exc:
        raise InputError(path, f"invalid scaling: {exc}") from exc
    if slope is None or (slope == 1.0 and inter == 0.0):
        return native
    return np.promote_types(native, np.float32)


def _check_affine(path: str, hdr: Nifti1Header) -> np.ndarray:
    try:
        affine = np.asarray(hdr.get_best_affine(), dtype=np.float64)
    except (HeaderDataError, ValueError, FloatingPointError) as exc:
        raise InputError(path, f"invalid qform/sform: {exc}") from exc
    which = "sform" if hdr["sform_code"] > 0 else "qform" if hdr["qform_code"] > 0 else "pixdim"
    if not np.isfinite(affine).all():
        raise InputError(path, f"non-finite affine (from the {which}): {affine.tolist()}; "
                         "fix the header's qform/sform")
    det = float(np.linalg.det(affine[:3, :3]))
    if not math.isfinite(det) or abs(det) < 1e-12:
        raise InputError(path, f"singular affine (from the {which}, determinant {det:g}): "
                         f"{affine.tolist()}; fix the header's qform/sform or pixdim")
    return affine


def _data_bytes(hdr: Nifti1Header) -> int:
    return math.prod(int(d) for d in hdr.get_data_shape()) * hdr.get_data_dtype().itemsize


def _data_offset(path: str, hdr: Nifti1Header) -> int:
    """vox_offset as bytes, or InputError when it is not a finite number (NIfTI-1 stores
    it as a float)."""
    raw = float(hdr["vox_offset"])
    if not math.isfinite(raw):
        raise InputError(path, f"invalid NIfTI header: vox_offset is {raw}; expected the "
                         "byte offset of the image data")
    return int(hdr.get_data_offset())


def _check_size(path: str, hdr: Nifti1Header, compressed: bool, file_size: int) -> None:
    offset, declared = _data_offset(path, hdr), _data_bytes(hdr)
    what = f"dims {hdr.get_data_shape()} of {hdr.get_data_dtype().newbyteorder('=').name}"
    limit = file_size * GZIP_MAX_RATIO + 4096 if compressed else file_size
    if declared > MAX_IMAGE_BYTES or (compressed and offset + declared > limit):
        holds = (f"the gzip file is {_fmt_bytes(file_size)} (at most {_fmt_bytes(limit)} "
                 "decompressed)" if compressed else f"the file is {_fmt_bytes(file_size)}")
        raise InputError(path, f"absurd image size: the header declares {what} = "
                         f"{_fmt_bytes(declared)} of image data, but {holds}; the header is "
                         "corrupt")
    if offset < hdr.single_vox_offset:
        raise InputError(path, f"vox_offset {offset} lies inside the header (< "
                         f"{hdr.single_vox_offset}); the header is corrupt")
    available = _gzip_length(path, offset + declared) if compressed else file_size
    if available <= offset:
        raise InputError(path, f"header without image data: the (decompressed) file ends at "
                         f"byte {available}, where the image data should start (vox_offset "
                         f"{offset}); the header declares {what} = {_fmt_bytes(declared)}")
    if offset + declared > available:
        raise InputError(path, f"truncated: the header declares {what} = {_fmt_bytes(declared)} "
                         f"after vox_offset {offset}, but the (decompressed) file holds "
                         f"{_fmt_bytes(available)}")


def _gzip_length(path: str, expected: int) -> int:
    """Decompressed length, trusting the gzip trailer when it says ``expected``."""
    with open(path, "rb") as fh:
        fh.seek(-4, os.SEEK_END)
        isize = int.from_bytes(fh.read(4), "little")
    if isize == expected % 2**32:
        return expected
    total = 0
    with _GzipErrors(path, lambda: total, expected):
        with gzip.GzipFile(path, "rb") as gz:
            while part := gz.read1(_CHUNK):  # small pieces: precise count on EOFError
                total += len(part)
    return total


class _GzipErrors:
    """Context manager mapping gzip/zlib failures to InputError."""

    def __init__(self, path: str, done: Callable[[], int], expected: int) -> None:
        self.path, self.done, self.expected = path, done, expected

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> None:
        if isinstance(exc, EOFError):
            raise InputError(self.path, f"truncated: the gzip stream ends after "
                             f"{_fmt_bytes(self.done())} of {_fmt_bytes(self.expected)} "
                             "(incomplete download or copy?)") from exc
        if isinstance(exc, gzip.BadGzipFile) and str(exc).startswith(_TRAILER_ERRORS):
            raise InputError(self.path, f"corrupt: the gzip trailer does not match the "
                             f"{_fmt_bytes(self.done())} of decompressed data ({exc}); the "
                             "file was damaged (re-copy or re-download it)") from exc
        if isinstance(exc, (OSError, zlib.error)):
            raise InputError(self.path, f"corrupt gzip stream after {_fmt_bytes(self.done())}: "
                             f"{exc}") from exc


_TRAILER_ERRORS = ("CRC check failed", "Incorrect length of data produced")


# --------------------------------------------------------------------------- labels


def open_label_volume(path: str | os.PathLike[str], scene: VolumeInfo) -> VolumeInfo:
    """Validate a label volume against its scene.

    Labels must lie on the scene's exact grid (same ``disk_shape``, affine
    within 1e-4), have an integer dtype and 1 channel (class ids) or 2 (class
    id, instance id).

    Returns
    -------
    VolumeInfo
        Of the label file.
    """
    info = open_volume(path)
    same_affine = np.allclose(info.affine, scene.affine, rtol=0.0, atol=1e-4)
    if info.disk_shape != scene.disk_shape or not same_affine:
        raise InputError(info.path, f"labels are not on the scene's grid: labels have shape "
                         f"{info.disk_shape} and affine {_fmt_affine(info.affine)}, scene "
                         f"{scene.path} has shape {scene.disk_shape} and affine "
                         f"{_fmt_affine(scene.affine)}; resample the labels (nearest) onto it")
    if np.dtype(info.dtype).kind not in "iu":
        raise InputError(info.path, f"labels must have an integer data type, got {info.dtype} "
                         "(float data or scl_slope scaling); save them as e.g. uint16")
    if info.channels not in (1, 2):
        raise InputError(info.path, f"labels have {info.channels} channels; expected 1 (class "
                         "ids) or 2 (class id, instance id)")
    return info


def _fmt_affine(affine: Sequence[Sequence[float]]) -> str:
    return str([[round(float(v), 4) for v in row] for row in affine[:3]])


