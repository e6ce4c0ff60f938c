"""Heap trimming: only once the resident memory has grown past the slack."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import heap

pytestmark = pytest.mark.skipif(heap._LIBC is None or heap.resident_bytes() is None,
                                reason="needs glibc and /proc (Linux)")


def test_trims_only_after_growth(monkeypatch):
    monkeypatch.setattr(heap, "TRIM_SLACK_BYTES", 32 * 1024**2)
    assert heap.release_free_memory(force=True)
    assert not heap.release_free_memory()  # nothing grew: no trim, no page faults after it
    held = np.ones(96 * 1024**2, np.uint8)  # resident: well past the slack
    assert heap.release_free_memory()
    del held
    assert not heap.release_free_memory()  # the floor is now the larger memory


def test_resident_bytes_follows_allocations():
    before = heap.resident_bytes()
    held = np.ones(64 * 1024**2, np.uint8)
    assert heap.resident_bytes() >= before + 48 * 1024**2
    del held
