"""Streaming and random-access reads of a validated NIfTI volume (bounded memory).

See :mod:`pipeline.io.nifti` for the overview.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator, Sequence
from typing import BinaryIO

import numpy as np
from nibabel.arrayproxy import ArrayProxy

from pipeline.io.nifti.volume import (
    Slices3,
    VolumeInfo,
    _CHUNK,
)
from pipeline.io.nifti.validate import (
    _GzipErrors,
    _parse_header,
    _read_head,
)
from segcore.errors import InputError

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

        For ``.nii.gz`` the stream is read to its end after the last block, so gzip
        checks its CRC-32 and length: a damaged file raises InputError there.

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
            cursor.verify_to_end()

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

    def verify_to_end(self) -> None:
        """Read the rest of the stream, so gzip checks every member's CRC-32 and length.

        gzip verifies a member's trailer only when its end is read; a stream that
        decodes but whose data or trailer is damaged raises InputError here.
        """
        with _GzipErrors(self.path, lambda: self.pos, self.pos):
            while part := self._gz.read(_CHUNK):
                self.pos += len(part)

    def __enter__(self) -> _GzipCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self._gz.close()


