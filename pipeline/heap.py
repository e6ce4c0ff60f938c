"""Giving freed heap back to the operating system (glibc ``malloc_trim``).

Decoders (zarr's codec threads, GDAL, zlib/zstd) and torch allocate from several
malloc arenas, one per thread that allocates. Without trimming, the arenas' free
space accumulates over thousands of blocks or tiles, so a long-lived worker's
resident memory can creep up with the scene size instead of staying flat. Model
workers call :func:`release_free_memory` after every batch, block-pass workers after
every block.

Trimming is not free: every page it returns is faulted in again by the next tile's
arrays. Trimming after every batch of 512² tiles cost a tile worker about 1,500 page
faults and 4-5 ms of CPU a tile (17 against 12 ms, measured with the near-free model
of ``bench/machinery.py``). So the heap is trimmed only once the resident memory has
grown :data:`TRIM_SLACK_BYTES` (256 MiB) past what it was after the last trim: memory
stays flat (bounded by that slack), and a worker whose memory does not grow never trims.
"""

from __future__ import annotations

import ctypes
import os

TRIM_SLACK_BYTES = 256 * 1024**2
"""Growth of the resident memory since the last trim that makes the next call trim."""


def _load_libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018 - glibc only
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _load_libc()
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_after_trim: int | None = None  # resident bytes after the last trim (None: none yet)


def resident_bytes() -> int | None:
    """This process's resident memory in bytes (None where ``/proc`` is missing)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


def release_free_memory(*, force: bool = False) -> bool:
    """Return the heap's free pages to the OS when the resident memory has grown by
    :data:`TRIM_SLACK_BYTES` since the last trim (always with ``force``); True when it
    trimmed. A no-op where libc has no ``malloc_trim``."""
    global _after_trim
    if _LIBC is None:
        return False
    rss = resident_bytes()
    if not force and rss is not None and _after_trim is not None \
            and rss <= _after_trim + TRIM_SLACK_BYTES:
        return False
    _LIBC.malloc_trim(0)
    _after_trim = resident_bytes()
    return True
