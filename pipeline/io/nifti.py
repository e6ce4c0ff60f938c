"""NIfTI adapter: validate, describe, stream and write volumes (bounded memory).

A volume is never read whole: :func:`open_volume` checks a ``.nii``/``.nii.gz``
file and returns a :class:`VolumeInfo`; :class:`VolumeReader` streams it once
in file order (:meth:`VolumeReader.blocks`) or reads canonical regions;
:func:`write_label_volume` writes a label volume on the input's exact grid,
one slab at a time.

Canonical orientation
---------------------
The pipeline works on arrays with axes ``(Z, Y, X)``: nibabel's
closest-canonical RAS+ orientation of the voxel array (``io_orientation`` of
the affine, so only axis permutations and flips, never resampling), transposed
to ``(S, A, R)``. :meth:`VolumeInfo.canonical_affine` maps canonical voxels to
the same world points as :attr:`VolumeInfo.affine` maps the stored voxels.

Validation
----------
:func:`open_volume` reads the header bytes itself (with ``gzip`` for
compressed files, detected from the content, not the suffix), parses them with
nibabel's header classes and reports the first problem as one
:class:`~segcore.errors.InputError`: empty file, not NIfTI (text, random
bytes, Analyze, ``.hdr/.img`` pairs), CIFTI-2 or 5-D+ files, unsupported data
types (complex, RGB), a singular or non-finite affine, absurd declared sizes
(above :data:`MAX_IMAGE_BYTES`, or more than a gzip file of that size can
expand to), and files that end before their image data does. For ``.nii.gz``
the last check compares the gzip trailer's ISIZE field (uncompressed size
modulo 2**32) with the declared size and decompresses the file once, counting
bytes, only when they differ (truncated, multi-member or padded files), so an
intact file costs two small reads. A file truncated after it was opened still
gives ``InputError(path, "truncated: ...")`` from the reader.

Scaling
-------
``scl_slope``/``scl_inter`` are applied as nibabel does (no scaling when the
slope is 0, NaN, or slope 1 with intercept 0), but the result dtype is the
smallest float that holds the stored values exactly (``float32`` for 8/16-bit
integers and float32 data, ``float64`` for 32/64-bit integers and float64):
nibabel itself always returns float64.
"""

from __future__ import annotations

import base64
import gzip
import math
import os
import secrets
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from nibabel.arrayproxy import ArrayProxy
from nibabel.nifti1 import Nifti1Header
from nibabel.nifti2 import Nifti2Header
from nibabel.orientations import aff2axcodes, axcodes2ornt
from nibabel.spatialimages import HeaderDataError

from segcore.errors import ConfigError, InputError

__all__ = [
    "CIFTI_INTENTS",
    "GZIP_MAX_RATIO",
    "MAX_IMAGE_BYTES",
    "NIFTI_INTENT_LABEL",
    "SUPPORTED_DTYPES",
    "VolumeInfo",
    "VolumeReader",
    "canonical_axes",
    "open_label_volume",
    "open_volume",
    "write_label_volume",
]

MAX_IMAGE_BYTES = 2**40
"""Largest declared image (all channels, stored dtype) accepted: 1 TiB."""
GZIP_MAX_RATIO = 1032
"""Deflate expands at most about 1032:1; a larger declared size is corrupt."""
NIFTI_INTENT_LABEL = 1002
CIFTI_INTENTS = range(3000, 3100)
SUPPORTED_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64",
                    "float32", "float64")
GZIP_LEVEL = 6
_CHUNK = 16 * 2**20  # bytes per gzip read
_HEADERS: dict[int, type[Nifti1Header]] = {1: Nifti1Header, 2: Nifti2Header}
_UNIT_TO_MM = {"unknown": 1.0, "mm": 1.0, "meter": 1000.0, "micron": 0.001}

Slices3 = tuple[slice, slice, slice]

# --------------------------------------------------------------------------- orientation


def canonical_axes(axcodes: Sequence[str]) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]]:
    """Which stored axis feeds each canonical axis, and whether it is reversed.

    Parameters
    ----------
    axcodes : sequence of 3 str
        nibabel axis codes of the stored axes (i, j, k), e.g. ``"LPS"``.

    Returns
    -------
    perm : tuple of 3 int
        ``perm[c]`` is the stored axis of canonical axis ``c`` (0 = Z/S, 1 = Y/A, 2 = X/R).
    flip : tuple of 3 bool
        True where that stored axis runs the opposite way (I, P or L).

    Examples
    --------
    >>> canonical_axes("RAS")
    ((2, 1, 0), (False, False, False))
    >>> canonical_axes("LPS")
    ((2, 1, 0), (False, True, True))
    >>> canonical_axes("PLS")
    ((2, 0, 1), (False, True, True))
    """
    ornt = axcodes2ornt(tuple(axcodes))  # stored axis d -> (RAS axis, +-1)
    perm, flip = [0, 0, 0], [False, False, False]
    for disk_axis, (ras_axis, direction) in enumerate(ornt):
        canon = 2 - int(ras_axis)  # RAS axis 0 (R) is canonical X = 2
        perm[canon], flip[canon] = disk_axis, bool(direction < 0)
    return (perm[0], perm[1], perm[2]), (flip[0], flip[1], flip[2])


def _map_slices(slices: Sequence[slice], shape: Sequence[int], pairs: Sequence[tuple[int, int]],
                flip: Sequence[bool]) -> Slices3:
    """Map slices from one axis order to another; ``pairs`` are (source, target) axes."""
    out: list[slice] = [slice(0, 0)] * 3
    for (src, dst), reverse in zip(pairs, flip):
        start, stop, step = slices[src].indices(shape[src])
        if step != 1:
            raise ConfigError(f"slices: expected step 1, got {slices[src]!r}")
        stop = max(start, stop)
        n = shape[src]
        out[dst] = slice(n - stop, n - start) if reverse else slice(start, stop)
    return out[0], out[1], out[2]


# --------------------------------------------------------------------------- VolumeInfo


@dataclass(frozen=True)
class VolumeInfo:
    """What the pipeline needs to know about a NIfTI volume.

    Attributes
    ----------
    path : str
        The file.
    version : int
        1 or 2 (NIfTI-1 / NIfTI-2).
    compressed : bool
        gzip-compressed (detected from the content).
    disk_shape : tuple of 3 int
        Spatial dims as stored ``(i, j, k)``.
    channels : int
        Length of the 4th axis; 1 for 3-D files.
    dtype : str
        Sample dtype after scaling, native byte order (e.g. ``"int16"``).
    affine : tuple of 4 tuple of 4 float
        nibabel's best affine (sform if ``sform_code > 0``, else qform, else
        the pixdim-only base affine), in the file's spatial unit.
    zooms : tuple of 3 float
        Voxel size along ``i, j, k`` in mm (``xyzt_units`` micron/meter converted).
    axcodes : tuple of 3 str
        nibabel axis codes of ``i, j, k``, e.g. ``("L", "P", "S")``.
    qform_code, sform_code : int
        The header's codes.
    xyz_unit : str
        The header's spatial unit (``"mm"``, ``"micron"``, ``"meter"`` or ``"unknown"``).
    header : bytes
        The raw NIfTI header block (348 or 540 bytes, extensions excluded); used by
        :func:`write_label_volume`.
    """

    path: str
    version: int
    compressed: bool
    disk_shape: tuple[int, int, int]
    channels: int
    dtype: str
    affine: tuple[tuple[float, ...], ...]
    zooms: tuple[float, float, float]
    axcodes: tuple[str, str, str]
    qform_code: int
    sform_code: int
    xyz_unit: str = "mm"
    header: bytes = field(default=b"", repr=False)

    @cached_property
    def _axes(self) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]]:
        return canonical_axes(self.axcodes)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Canonical ``(Z, Y, X)`` shape."""
        perm, _ = self._axes
        return (self.disk_shape[perm[0]], self.disk_shape[perm[1]], self.disk_shape[perm[2]])

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Canonical ``(z, y, x)`` voxel size in mm."""
        perm, _ = self._axes
        return (self.zooms[perm[0]], self.zooms[perm[1]], self.zooms[perm[2]])

    @property
    def canonical_affine(self) -> np.ndarray:
        """``(4, 4)`` ndarray of float64 mapping canonical ``(z, y, x, 1)`` to world.

        Same world points (and unit) as :attr:`affine` applied to the stored voxels.
        """
        perm, flip = self._axes
        to_disk = np.zeros((4, 4))
        to_disk[3, 3] = 1.0
        for canon, (disk, reverse) in enumerate(zip(perm, flip)):
            to_disk[disk, canon] = -1.0 if reverse else 1.0
            to_disk[disk, 3] = self.disk_shape[disk] - 1 if reverse else 0.0
        return np.asarray(self.affine, dtype=np.float64) @ to_disk

    def to_canonical(self, disk_block: np.ndarray) -> np.ndarray:
        """``(i, j, k, ...)`` stored block -> ``(z, y, x, ...)`` view (transpose and flips).

        The block is a region of the whole volume; the result is the canonical
        region :meth:`canonical_slices` names.
        """
        perm, flip = self._axes
        arr = np.transpose(disk_block, perm + tuple(range(3, disk_block.ndim)))
        return arr[tuple(slice(None, None, -1) if f else slice(None) for f in flip)]

    def to_disk(self, canonical_block: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_canonical`: ``(z, y, x, ...)`` -> ``(i, j, k, ...)`` view."""
        perm, flip = self._axes
        arr = canonical_block[tuple(slice(None, None, -1) if f else slice(None) for f in flip)]
        inverse = tuple(int(a) for a in np.argsort(perm))
        return np.transpose(arr, inverse + tuple(range(3, canonical_block.ndim)))

    def disk_slices(self, canonical: Sequence[slice]) -> Slices3:
        """The stored ``(i, j, k)`` region holding a canonical ``(z, y, x)`` region."""
        perm, flip = self._axes
        return _map_slices(canonical, self.shape, [(c, perm[c]) for c in range(3)], flip)

    def canonical_slices(self, disk: Sequence[slice]) -> Slices3:
        """The canonical ``(z, y, x)`` region of a stored ``(i, j, k)`` region."""
        perm, flip = self._axes
        return _map_slices(disk, self.disk_shape, [(perm[c], c) for c in range(3)], flip)

    def to_attrs(self) -> dict[str, Any]:
        """JSON-safe dict (Zarr attrs); ``header`` is base64. Inverse: :meth:`from_attrs`."""
        return {
            "path": self.path, "version": self.version, "compressed": self.compressed,
            "disk_shape": list(self.disk_shape), "channels": self.channels, "dtype": self.dtype,
            "affine": [list(row) for row in self.affine],
            "canonical_affine": self.canonical_affine.tolist(),
            "zooms": list(self.zooms), "spacing": list(self.spacing), "shape": list(self.shape),
            "axcodes": list(self.axcodes), "qform_code": self.qform_code,
            "sform_code": self.sform_code, "xyz_unit": self.xyz_unit,
            "header": base64.b64encode(self.header).decode("ascii"),
        }

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> VolumeInfo:
        """Rebuild from :meth:`to_attrs`; raises ConfigError naming missing keys."""
        missing = sorted(set(_ATTR_KEYS) - set(attrs))
        if missing:
            raise ConfigError(f"volume attrs: expected keys {missing}, got {sorted(attrs)}")
        return cls(
            path=str(attrs["path"]), version=int(attrs["version"]),
            compressed=bool(attrs["compressed"]),
            disk_shape=_int3(attrs["disk_shape"]), channels=int(attrs["channels"]),
            dtype=str(attrs["dtype"]),
            affine=tuple(tuple(float(v) for v in row) for row in attrs["affine"]),
            zooms=_float3(attrs["zooms"]), axcodes=_str3(attrs["axcodes"]),
            qform_code=int(attrs["qform_code"]), sform_code=int(attrs["sform_code"]),
            xyz_unit=str(attrs["xyz_unit"]), header=base64.b64decode(attrs["header"]),
        )


_ATTR_KEYS = ("path", "version", "compressed", "disk_shape", "channels", "dtype", "affine",
              "zooms", "axcodes", "qform_code", "sform_code", "xyz_unit", "header")


def _int3(v: Sequence[Any]) -> tuple[int, int, int]:
    return (int(v[0]), int(v[1]), int(v[2]))


def _float3(v: Sequence[Any]) -> tuple[float, float, float]:
    return (float(v[0]), float(v[1]), float(v[2]))


def _str3(v: Sequence[Any]) -> tuple[str, str, str]:
    return (str(v[0]), str(v[1]), str(v[2]))


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
    except (HeaderDataError, ValueError, TypeError) as exc:
        raise InputError(path, f"invalid NIfTI-{version} header: {exc}") from exc


# --------------------------------------------------------------------------- open_volume


def open_volume(path: str | os.PathLike[str]) -> VolumeInfo:
    """Validate a NIfTI-1/2 volume and describe it without reading its voxels.

    Parameters
    ----------
    path : str or PathLike
        A local ``.nii`` or ``.nii.gz`` file (compression is detected from the content).

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
    """
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
    unit = hdr.get_xyzt_units()[0]
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


def _check_size(path: str, hdr: Nifti1Header, compressed: bool, file_size: int) -> None:
    offset, declared = int(hdr.get_data_offset()), _data_bytes(hdr)
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
        if isinstance(exc, (OSError, zlib.error)):
            raise InputError(self.path, f"corrupt gzip stream after {_fmt_bytes(self.done())}: "
                             f"{exc}") from exc


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


# --------------------------------------------------------------------------- reading


class VolumeReader:
    """One open NIfTI volume, streamed slab by slab (context manager).

    Parameters
    ----------
    info : VolumeInfo
        From :func:`open_volume`.
    channels : sequence of int, optional
        0-based indices along the 4th axis; default all.
    """

    def __init__(self, info: VolumeInfo, channels: Sequence[int] | None = None) -> None:
        self.info = info
        self.channels = _check_channels(info, channels)
        block = info.header or _read_head(info.path, info.compressed)
        hdr = _parse_header(info.path, block)
        self._raw = hdr.get_data_dtype()
        self._offset = int(hdr.get_data_offset())
        slope, inter = hdr.get_slope_inter()  # as in _output_dtype
        self._scale = None if slope is None or (slope == 1.0 and inter == 0.0) else (
            float(slope), float(inter))
        self._fh: BinaryIO | None = None
        self._proxy: ArrayProxy | None = None
        if not info.compressed:
            self._fh = open(info.path, "rb")  # noqa: SIM115 - closed by close()
            shape = (*info.disk_shape, info.channels)
            self._proxy = ArrayProxy(self._fh, (shape, self._raw, self._offset), mmap=False)

    @property
    def plane_bytes(self) -> int:
        """Stored bytes of one k-plane of one channel."""
        return self.info.disk_shape[0] * self.info.disk_shape[1] * self._raw.itemsize

    def blocks(self, max_voxels: int = 32 * 2**20
               ) -> Iterator[tuple[int, Slices3, np.ndarray]]:
        """Stream the selected channels once, in file order.

        Parameters
        ----------
        max_voxels : int
            Most voxels in one block (at least one k-plane is read).

        Yields
        ------
        position : int
            Index of the channel in the selection.
        slices : tuple of 3 slice
            Canonical ``(Z, Y, X)`` region of the block.
        block : (z, y, x) ndarray of ``info.dtype``
            Possibly a non-contiguous view.
        """
        ni, nj, nk = self.info.disk_shape
        step = max(1, int(max_voxels) // (ni * nj))
        order = sorted(range(len(self.channels)), key=lambda p: self.channels[p])
        slabs = [(k0, min(nk, k0 + step)) for k0 in range(0, nk, step)]
        if self.info.compressed:
            yield from self._gzip_blocks(order, slabs)
            return
        for pos in order:
            for k0, k1 in slabs:
                raw = self._proxy_read((slice(None), slice(None), slice(k0, k1)),
                                       self.channels[pos])
                yield pos, self._slab_slices(k0, k1), self.info.to_canonical(self._scaled(raw))

    def _gzip_blocks(self, order: list[int], slabs: list[tuple[int, int]]
                     ) -> Iterator[tuple[int, Slices3, np.ndarray]]:
        ni, nj, _ = self.info.disk_shape
        with _GzipCursor(self.info.path) as cursor:
            for pos in order:
                for k0, k1 in slabs:
                    cursor.seek(self._plane_offset(self.channels[pos], k0))
                    buf = cursor.read((k1 - k0) * self.plane_bytes)
                    raw = buf.view(self._raw).reshape((ni, nj, k1 - k0), order="F")
                    yield pos, self._slab_slices(k0, k1), self.info.to_canonical(self._scaled(raw))

    def read(self, canonical: Sequence[slice], channel: int = 0) -> np.ndarray:
        """Canonical region ``(z, y, x)`` of one channel (slow for ``.nii.gz``).

        Parameters
        ----------
        canonical : tuple of 3 slice
            Step 1 slices of the canonical shape.
        channel : int
            Position in the reader's channel selection.

        Returns
        -------
        (z, y, x) ndarray of ``info.dtype``
        """
        if not 0 <= channel < len(self.channels):
            raise InputError(self.info.path, f"channel position {channel} is outside the "
                             f"selection of {len(self.channels)} channels")
        di, dj, dk = self.info.disk_slices(canonical)
        t = self.channels[channel]
        if not self.info.compressed:
            return self.info.to_canonical(self._scaled(self._proxy_read((di, dj, dk), t)))
        ni, nj, _ = self.info.disk_shape
        with _GzipCursor(self.info.path) as cursor:
            cursor.seek(self._plane_offset(t, dk.start))
            buf = cursor.read((dk.stop - dk.start) * self.plane_bytes)
        raw = buf.view(self._raw).reshape((ni, nj, dk.stop - dk.start), order="F")[di, dj]
        return self.info.to_canonical(self._scaled(raw))

    def _plane_offset(self, channel: int, k: int) -> int:
        return self._offset + (channel * self.info.disk_shape[2] + k) * self.plane_bytes

    def _slab_slices(self, k0: int, k1: int) -> Slices3:
        return self.info.canonical_slices((slice(None), slice(None), slice(k0, k1)))

    def _proxy_read(self, disk: Slices3, channel: int) -> np.ndarray:
        assert self._proxy is not None, "reader is closed"
        try:
            return np.asarray(self._proxy[disk[0], disk[1], disk[2], channel])
        except (ValueError, OSError) as exc:
            raise InputError(self.info.path, f"truncated: cannot read the image data ({exc}); "
                             "was the file changed after it was opened?") from exc

    def _scaled(self, raw: np.ndarray) -> np.ndarray:
        """Apply scl_slope/scl_inter and return native byte order in ``info.dtype``."""
        out_dtype = np.dtype(self.info.dtype)
        if self._scale is None:
            return raw.astype(out_dtype, copy=False)
        out = raw.astype(out_dtype)
        slope, inter = self._scale
        if slope != 1.0:
            out *= out_dtype.type(slope)
        if inter != 0.0:
            out += out_dtype.type(inter)
        return out

    def close(self) -> None:
        self._proxy = None
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> VolumeReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_channels(info: VolumeInfo, channels: Sequence[int] | None) -> tuple[int, ...]:
    if channels is None:
        return tuple(range(info.channels))
    chosen = tuple(int(c) for c in channels if isinstance(c, (int, np.integer)))
    if (not chosen or len(chosen) != len(channels) or len(set(chosen)) != len(chosen)
            or not all(0 <= c < info.channels for c in chosen)):
        raise InputError(info.path, f"channels {list(channels)}: the file has {info.channels} "
                         f"channel(s); expected distinct 0-based indices in "
                         f"0..{info.channels - 1}")
    return chosen


class _GzipCursor:
    """A gzip stream read forward only (one decompression), with InputError on failure."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.pos = 0
        self._gz = gzip.GzipFile(path, "rb")

    def seek(self, target: int) -> None:
        """Skip forward to ``target`` (decompressed offset), discarding bytes."""
        if target < self.pos:
            raise ValueError(f"_GzipCursor reads forward only ({target} < {self.pos})")
        while self.pos < target:
            self.read(min(target - self.pos, _CHUNK), keep=False)

    def read(self, n: int, *, keep: bool = True) -> np.ndarray:
        """Exactly ``n`` bytes as a writable ``(n,)`` uint8 array, or InputError."""
        buf = np.empty(n if keep else 0, dtype=np.uint8)
        got = 0
        with _GzipErrors(self.path, lambda: self.pos, self.pos + n):
            while got < n:
                part = self._gz.read(min(n - got, _CHUNK))
                if not part:
                    raise InputError(self.path, f"truncated: the image data ends at byte "
                                     f"{self.pos} of the decompressed file, expected at "
                                     f"least {self.pos + n - got}")
                if keep:
                    buf[got:got + len(part)] = np.frombuffer(part, dtype=np.uint8)
                got += len(part)
                self.pos += len(part)
        return buf

    def __enter__(self) -> _GzipCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self._gz.close()


# --------------------------------------------------------------------------- writing


def write_label_volume(path: str | os.PathLike[str], info: VolumeInfo,
                       source: Callable[[Slices3], np.ndarray], dtype: np.dtype | str, *,
                       max_voxels: int = 32 * 2**20) -> None:
    """Write a 3-D label volume on the input's exact grid, one k-slab at a time.

    Parameters
    ----------
    path : str or PathLike
        Output ``.nii`` or ``.nii.gz`` (gzip when the name ends with ``.gz``).
    info : VolumeInfo
        The input volume; its header (version, qform/sform and codes, pixdim,
        xyzt_units) is copied.
    source : callable
        ``source(canonical_slices)`` returns the canonical ``(z, y, x)`` block of
        integer labels for those slices (e.g. a zarr array's ``__getitem__``).
    dtype : dtype or str
        Integer dtype of the file; values outside its range raise ConfigError.
    max_voxels : int
        Most voxels per slab (at least one k-plane).

    Notes
    -----
    The header gets 3-D dims, ``datatype = dtype``, ``scl_slope 1``,
    ``scl_inter 0``, ``cal_min = cal_max = 0``, ``intent_code 1002``
    (NIFTI_INTENT_LABEL), little-endian, no extensions. The file is written to a
    temporary file in the same directory and renamed; nothing is left behind on
    error.
    """
    out = np.dtype(dtype)
    if out.kind not in "iu":
        raise ConfigError(f"dtype: expected an integer label dtype, got {out}")
    hdr = _label_header(info, out)
    ni, nj, nk = info.disk_shape
    step = max(1, int(max_voxels) // (ni * nj))

    def chunks() -> Iterator[memoryview]:
        for k0 in range(0, nk, step):
            canon = info.canonical_slices((slice(None), slice(None), slice(k0, min(nk, k0 + step))))
            block = np.asarray(source(canon))
            yield _label_bytes(block, canon, out, info)

    _write_atomically(Path(path), hdr, chunks())


def _label_header(info: VolumeInfo, dtype: np.dtype) -> Nifti1Header:
    block = info.header or _read_head(info.path, _is_gzip(info.path))
    hdr = _parse_header(info.path, block)
    if hdr.endianness != "<":
        hdr = hdr.as_byteswapped("<")
    hdr.set_data_shape(info.disk_shape)
    hdr.set_data_dtype(dtype)
    hdr["scl_slope"], hdr["scl_inter"] = 1.0, 0.0
    hdr["cal_min"], hdr["cal_max"] = 0.0, 0.0
    hdr.set_intent(NIFTI_INTENT_LABEL)
    hdr["vox_offset"] = 0  # recomputed by write_to (no extensions)
    return hdr


def _label_bytes(block: np.ndarray, canon: Slices3, dtype: np.dtype,
                 info: VolumeInfo) -> memoryview:
    expected = tuple(s.stop - s.start for s in canon)
    if block.shape != expected:
        raise ConfigError(f"source{canon}: expected a canonical block of shape {expected}, "
                          f"got {block.shape}")
    if block.dtype.kind not in "iub":
        raise ConfigError(f"source: expected integer labels, got {block.dtype}")
    if block.size and block.dtype.kind != "b":
        lo, hi, limits = int(block.min()), int(block.max()), np.iinfo(dtype)
        if lo < limits.min or hi > limits.max:
            raise ConfigError(f"dtype: labels {lo}..{hi} do not fit in {dtype} "
                              f"({limits.min}..{limits.max}); pick a wider dtype")
    disk = info.to_disk(block)  # (i, j, k); its transpose in C order is Fortran order
    data = np.ascontiguousarray(disk.T, dtype=dtype.newbyteorder("<"))
    return memoryview(data).cast("B")


def _write_atomically(path: Path, hdr: Nifti1Header, chunks: Iterable[memoryview | bytes]) -> None:
    """Header, zero padding to vox_offset, then ``chunks``; temp file + os.replace."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as raw:
            if path.name.endswith(".gz"):
                with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                                   compresslevel=GZIP_LEVEL) as gz:
                    _write_image(gz, hdr, chunks)
            else:
                _write_image(raw, hdr, chunks)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_image(stream: BinaryIO, hdr: Nifti1Header, chunks: Iterable[memoryview | bytes]) -> None:
    hdr.write_to(stream)
    stream.write(b"\x00" * (int(hdr["vox_offset"]) - stream.tell()))
    written = 0
    for chunk in chunks:
        written += stream.write(chunk)
    if written != _data_bytes(hdr):
        raise ConfigError(f"wrote {written} image bytes, the header declares {_data_bytes(hdr)}")
