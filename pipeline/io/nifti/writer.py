"""Label volumes written on the input's exact grid, slab by slab, atomically.

See :mod:`pipeline.io.nifti` for the overview.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
from nibabel.nifti1 import Nifti1Header

from pipeline.atomic import atomic_path
from pipeline.io.nifti.volume import (
    GZIP_LEVEL,
    NIFTI_INTENT_LABEL,
    Slices3,
    VolumeInfo,
)
from pipeline.io.nifti.validate import (
    _data_bytes,
    _is_gzip,
    _parse_header,
    _read_head,
)
from segcore.errors import ConfigError

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
    """Header, zero padding to vox_offset, then ``chunks``; atomically (pipeline.atomic)."""
    with atomic_path(path) as tmp, open(tmp, "xb") as raw:
        if path.name.endswith(".gz"):
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                               compresslevel=GZIP_LEVEL) as gz:
                _write_image(gz, hdr, chunks)
        else:
            _write_image(raw, hdr, chunks)


def _write_image(stream: BinaryIO, hdr: Nifti1Header, chunks: Iterable[memoryview | bytes]) -> None:
    hdr.write_to(stream)
    stream.write(b"\x00" * (int(hdr["vox_offset"]) - stream.tell()))
    written = 0
    for chunk in chunks:
        written += stream.write(chunk)
    if written != _data_bytes(hdr):
        raise ConfigError(f"wrote {written} image bytes, the header declares {_data_bytes(hdr)}")
