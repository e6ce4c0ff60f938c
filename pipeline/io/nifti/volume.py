"""NIfTI volumes described: constants, the canonical orientation and :class:`VolumeInfo`.

See :mod:`pipeline.io.nifti` for the overview.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
from nibabel.nifti1 import Nifti1Header
from nibabel.nifti2 import Nifti2Header
from nibabel.orientations import axcodes2ornt

from segcore.errors import ConfigError



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


