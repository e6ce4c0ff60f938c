"""Giving freed heap back to the operating system (glibc ``malloc_trim``).

Decoders (zarr's codec threads, GDAL, zlib/zstd) and torch allocate from several
malloc arenas, one per thread that allocates. Without trimming, the arenas' free
space accumulates over thousands of blocks or tiles, so a long-lived worker's
resident memory can creep up with the scene size instead of staying flat. Model
workers trim after every batch, block-pass workers after every block.
"""

from __future__ import annotations

import ctypes


def _load_libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018 - glibc only
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _load_libc()


def release_free_memory() -> None:
    """Return the heap's free pages to the OS (no-op where libc has no ``malloc_trim``)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
