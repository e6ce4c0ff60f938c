"""Write small NIfTI test/demo volumes, with every quirk the NIfTI adapter handles.

Files are composed byte by byte here (nibabel header classes, then the voxels in
Fortran order), not with ``nibabel.save``, so headers say exactly what the
caller asked for: nibabel's writer would reset ``scl_slope``, choose its own
scaling and byte order. The mapping between canonical arrays and stored arrays
uses nibabel's orientation functions, independently of :mod:`pipeline.io.nifti`,
so tests of the adapter have an oracle. Everything is deterministic (seeded
random bytes, gzip ``mtime=0``). Volumes are built in memory: keep them small.

Canonical arrays have axes ``(Z, Y, X)`` = ``(S, A, R)``, see :mod:`pipeline.io.nifti`.
"""

from __future__ import annotations

import gzip
import io
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from nibabel.nifti1 import Nifti1Header
from nibabel.nifti2 import Nifti2Header
from nibabel.orientations import apply_orientation, axcodes2ornt, ornt_transform

from segcore.errors import ConfigError

__all__ = [
    "BROKEN_KINDS",
    "canonical_to_disk",
    "orientation_affine",
    "write_broken",
    "write_canonical",
    "write_nifti",
]

_WORLD_AXIS = {"L": (0, -1.0), "R": (0, 1.0), "P": (1, -1.0), "A": (1, 1.0),
               "I": (2, -1.0), "S": (2, 1.0)}
BROKEN_KINDS = ("zero-byte", "not-nifti", "text", "header-only", "truncated", "truncated-gzip",
                "cifti", "absurd-size", "five-d", "singular-affine", "non-finite-affine",
                "complex", "rgb")
"""Kinds accepted by :func:`write_broken`."""


def _check_axcodes(axcodes: str) -> str:
    codes = str(axcodes).upper()
    worlds = sorted(_WORLD_AXIS[c][0] for c in codes if c in _WORLD_AXIS)
    if len(codes) != 3 or worlds != [0, 1, 2]:
        raise ConfigError(f"axcodes: expected one of L/R, one of P/A and one of I/S, e.g. "
                          f"'LPS', got {axcodes!r}")
    return codes


def orientation_affine(axcodes: str, zooms: tuple[float, float, float],
                       origin: tuple[float, float, float] = (0.0, 0.0, 0.0), *,
                       oblique_deg: float = 0.0) -> np.ndarray:
    """Affine whose stored axes ``i, j, k`` point along ``axcodes``.

    Parameters
    ----------
    axcodes : str
        Three nibabel axis codes, e.g. ``"LPS"``: i toward Left, j toward
        Posterior, k toward Superior.
    zooms : tuple of 3 float
        Voxel size along ``i, j, k`` in mm.
    origin : tuple of 3 float
        World position of voxel ``(0, 0, 0)``.
    oblique_deg : float
        Rotate the grid by this angle about the world x and then z axes;
        below 30 degrees the closest axis codes stay ``axcodes``.

    Returns
    -------
    (4, 4) ndarray of float64

    Examples
    --------
    >>> orientation_affine("LPS", (2.0, 3.0, 4.0), (10.0, 0.0, 0.0))
    array([[-2.,  0.,  0., 10.],
           [ 0., -3.,  0.,  0.],
           [ 0.,  0.,  4.,  0.],
           [ 0.,  0.,  0.,  1.]])
    """
    codes = _check_axcodes(axcodes)
    if abs(oblique_deg) >= 30:
        raise ConfigError(f"oblique_deg: expected |angle| < 30 degrees, got {oblique_deg}")
    linear = np.zeros((3, 3))
    for disk_axis, code in enumerate(codes):
        world, sign = _WORLD_AXIS[code]
        linear[world, disk_axis] = sign * float(zooms[disk_axis])
    affine = np.eye(4)
    affine[:3, :3] = _rotation(math.radians(oblique_deg)) @ linear
    affine[:3, 3] = origin
    return affine


def _rotation(theta: float) -> np.ndarray:
    c, s = math.cos(theta), math.sin(theta)
    about_x = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    about_z = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return about_z @ about_x


def canonical_to_disk(canonical: np.ndarray, axcodes: str) -> np.ndarray:
    """Stored array of a file with ``axcodes`` whose canonical array is ``canonical``.

    Parameters
    ----------
    canonical : (Z, Y, X, ...) ndarray
    axcodes : str

    Returns
    -------
    (i, j, k, ...) ndarray
        A view where possible.

    Examples
    --------
    >>> canonical = np.arange(6).reshape(1, 2, 3)  # (Z, Y, X)
    >>> canonical_to_disk(canonical, "RAS")[:, :, 0]  # (i, j) = (X, Y)
    array([[0, 3],
           [1, 4],
           [2, 5]])
    >>> canonical_to_disk(canonical, "LPS")[:, :, 0]  # both reversed
    array([[5, 2],
           [4, 1],
           [3, 0]])
    """
    ras = np.swapaxes(canonical, 0, 2)  # (S, A, R) -> (R, A, S)
    transform = ornt_transform(axcodes2ornt("RAS"), axcodes2ornt(_check_axcodes(axcodes)))
    return apply_orientation(ras, transform)


def write_nifti(path: str | os.PathLike[str], disk_data: np.ndarray, affine: np.ndarray, *,
                version: int = 1, big_endian: bool = False, qform_code: int = 1,
                sform_code: int = 1, dtype: Any = None, xyzt_units: str = "mm",
                scl_slope: float = float("nan"), scl_inter: float = 0.0,
                intent_code: int = 0) -> Path:
    """Write ``disk_data`` as a single-file NIfTI (``.nii.gz`` when the name ends ``.gz``).

    Parameters
    ----------
    path : str or PathLike
    disk_data : (i, j, k[, ...]) ndarray
        Voxels as stored (cast to ``dtype``; raw values, not unscaled).
    affine : (4, 4) ndarray
        Stored as qform and sform (each with its code); pixdim are its column norms.
    version : {1, 2}
    big_endian : bool
        Header and voxels big-endian.
    qform_code, sform_code : int
        0 leaves that transform unused by readers.
    dtype : dtype, optional
        On-disk dtype; default ``disk_data.dtype``.
    xyzt_units : str
        Spatial unit: ``"mm"``, ``"micron"``, ``"meter"`` or ``"unknown"``; the
        affine and pixdim are in this unit.
    scl_slope, scl_inter : float
        Stored scaling (NaN slope = none).
    intent_code : int

    Returns
    -------
    Path
    """
    dtype = disk_data.dtype if dtype is None else dtype
    hdr = _header(disk_data.shape, affine, version=version, dtype=dtype,
                  qform_code=qform_code, sform_code=sform_code, xyzt_units=xyzt_units)
    hdr["scl_slope"], hdr["scl_inter"] = scl_slope, scl_inter
    hdr["intent_code"] = intent_code
    if big_endian:
        hdr = hdr.as_byteswapped(">")
    voxels = np.asarray(disk_data, dtype=hdr.get_data_dtype()).tobytes(order="F")
    return _write_bytes(Path(path), _header_bytes(hdr) + voxels)


def _header(shape: tuple[int, ...], affine: np.ndarray, *, version: int, dtype: Any,
            qform_code: int, sform_code: int, xyzt_units: str) -> Nifti1Header:
    if version not in (1, 2):
        raise ConfigError(f"version: expected 1 or 2, got {version}")
    hdr = (Nifti1Header if version == 1 else Nifti2Header)()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(dtype)
    affine = np.asarray(affine, dtype=np.float64)
    hdr.set_qform(affine, code=int(qform_code))
    hdr.set_sform(affine, code=int(sform_code))
    zooms = [float(z) for z in np.linalg.norm(affine[:3, :3], axis=0)]
    hdr.set_zooms(tuple(zooms + [1.0] * (len(shape) - 3))[: len(shape)])
    hdr.set_xyzt_units(xyz=xyzt_units)
    return hdr


def _header_bytes(hdr: Nifti1Header) -> bytes:
    """Header, extension flag and padding up to vox_offset."""
    buf = io.BytesIO()
    hdr.write_to(buf)
    return buf.getvalue().ljust(int(hdr["vox_offset"]), b"\x00")


def _write_bytes(path: Path, content: bytes) -> Path:
    if path.name.endswith(".gz"):
        content = gzip.compress(content, compresslevel=6, mtime=0)
    path.write_bytes(content)
    return path


def write_canonical(path: str | os.PathLike[str], canonical: np.ndarray, *, axcodes: str = "RAS",
                    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
                    origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
                    oblique_deg: float = 0.0, **kw: Any) -> Path:
    """Write a file with ``axcodes`` whose canonical array is ``canonical``.

    Parameters
    ----------
    path : str or PathLike
    canonical : (Z, Y, X[, C]) ndarray
        C is the 4th (channel) axis of the file.
    axcodes : str
        Stored axis codes.
    spacing : tuple of 3 float
        Canonical ``(z, y, x)`` voxel size in mm.
    origin : tuple of 3 float
        World position of stored voxel ``(0, 0, 0)``.
    oblique_deg : float
        See :func:`orientation_affine`.
    **kw
        Passed to :func:`write_nifti`.

    Returns
    -------
    Path
    """
    codes = _check_axcodes(axcodes)
    canonical_axis = {0: 2, 1: 1, 2: 0}  # world R/A/S -> canonical X/Y/Z
    zi, zj, zk = (spacing[canonical_axis[_WORLD_AXIS[c][0]]] for c in codes)
    affine = orientation_affine(codes, (zi, zj, zk), origin, oblique_deg=oblique_deg)
    return write_nifti(path, canonical_to_disk(canonical, codes), affine, **kw)


def write_broken(path: str | os.PathLike[str], kind: str) -> Path:
    """Write a file that the NIfTI adapter must reject, of one of :data:`BROKEN_KINDS`.

    ``.gz`` names are gzip-compressed (except ``zero-byte``, ``not-nifti``
    and ``text``); ``truncated-gzip`` needs a ``.gz`` name.

    Returns
    -------
    Path
    """
    path = Path(path)
    if kind not in BROKEN_KINDS:
        raise ConfigError(f"kind: expected one of {', '.join(BROKEN_KINDS)}, got {kind!r}")
    if kind == "zero-byte":
        path.write_bytes(b"")
    elif kind == "not-nifti":
        path.write_bytes(b"\x00\x01" + np.random.default_rng(0).bytes(998))
    elif kind == "text":
        path.write_text("subject,age\nsub-01,34\nsub-02,29\n" * 20)
    elif kind == "truncated-gzip":
        if not path.name.endswith(".gz"):
            raise ConfigError(f"path: kind 'truncated-gzip' needs a .gz name, got {path.name}")
        noise = np.random.default_rng(0).integers(-3000, 3000, (32, 32, 32), dtype=np.int16)
        write_nifti(path, noise, np.eye(4))
        full = path.read_bytes()
        path.write_bytes(full[: len(full) // 2])
    else:
        _write_bytes(path, _BROKEN_CONTENT[kind]())
    return path


def _broken_image(shape: tuple[int, ...], dtype: str, affine: np.ndarray | None = None, *,
                  version: int = 1, data_bytes: int | None = None) -> bytes:
    hdr = _header(shape, np.eye(4), version=version, dtype=dtype, qform_code=1, sform_code=1,
                  xyzt_units="mm")
    if affine is not None:  # set the raw sform rows (set_sform would validate them)
        for row, name in enumerate(("srow_x", "srow_y", "srow_z")):
            hdr[name] = affine[row]
    size = math.prod(shape) * hdr.get_data_dtype().itemsize
    return _header_bytes(hdr) + bytes(size if data_bytes is None else data_bytes)


_BROKEN_CONTENT = {
    "header-only": lambda: _broken_image((8, 8, 8), "int16", data_bytes=0),
    "truncated": lambda: _broken_image((16, 16, 16), "int16", data_bytes=4096),
    "cifti": lambda: _cifti(),
    "absurd-size": lambda: _broken_image((30000, 30000, 30000), "int16", data_bytes=1024),
    "five-d": lambda: _broken_image((4, 4, 4, 2, 2), "float32"),
    "singular-affine": lambda: _broken_image((4, 4, 4), "uint8", np.diag([1.0, 0.0, 1.0, 1.0])),
    "non-finite-affine": lambda: _broken_image((4, 4, 4), "uint8",
                                               np.diag([1.0, np.nan, 1.0, 1.0])),
    "complex": lambda: _broken_image((4, 4, 4), "complex64"),
    "rgb": lambda: _broken_image((4, 4, 4), "RGB"),
}


def _cifti() -> bytes:
    """NIfTI-2 with CIFTI-2 dims (1, 1, 1, 1, 4, 5) and intent 3006 (dense connectivity)."""
    hdr = _header((1, 1, 1, 1, 4, 5), np.eye(4), version=2, dtype="float32", qform_code=0,
                  sform_code=0, xyzt_units="unknown")
    hdr["intent_code"] = 3006
    return _header_bytes(hdr) + np.zeros(20, dtype="<f4").tobytes()
