"""Tile completion records under --out are untrusted: nothing there is ever unpickled.

A record is where anyone who can write to a shared ``--out`` could plant a file. A
pickle (or an ``.npz`` holding a pickled object array) that would run code when loaded
is ignored with one log line, its tile computed again, and nothing of it executes.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle

import numpy as np
import pytest

from pipeline.inference.records import (
    RECORD_VERSION,
    decode_outcome,
    read_records,
    write_record,
)
from pipeline.streaming.tile_outcome import TileOutcome


class _Payload:
    """Unpickling this creates a directory: proof that code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def _object_array_record(marker: str) -> bytes:
    """A well-formed record whose centres are a pickled object array."""
    meta = {"version": RECORD_VERSION, "index": [0, 0], "seconds": 0.1, "worker": "w",
            "retried": False, "skipped": False, "has_centres": True}
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8),
             centres=np.array([_Payload(marker)], dtype=object),
             scores=np.zeros(1, np.float32))
    return buffer.getvalue()


def _odd_meta_record(meta) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["pickle", "object-array"])
def test_a_planted_pickle_is_ignored_without_running(kind, tmp_path, caplog):
    marker = tmp_path / "pwned"
    records = tmp_path / "tiles"
    records.mkdir()
    good = TileOutcome(index=(0, 1), seconds=0.2, worker="w", centres=np.array([[4, 5]]),
                       scores=np.array([0.5], np.float32))
    write_record(records, 1, good)
    planted = pickle.dumps(_Payload(str(marker))) if kind == "pickle" \
        else _object_array_record(str(marker))
    (records / "0.done").write_bytes(planted)
    with caplog.at_level(logging.WARNING, logger="pipeline.inference.records"):
        found = read_records(records)
    assert not marker.exists()  # nothing was executed
    assert sorted(found) == [1] and found[1].centres.tolist() == [[4, 5]]  # 0 is computed again
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "0.done ignored" in lines[0] and "\n" not in lines[0], lines


@pytest.mark.parametrize("meta", [[], {"version": RECORD_VERSION}, "text",
                                  {"version": RECORD_VERSION, "index": 5, "seconds": "x",
                                   "has_centres": False},
                                  {"version": RECORD_VERSION, "index": [0, 0], "seconds": 1,
                                   "worker": "w", "retried": False, "skipped": False,
                                   "has_centres": True}])
def test_a_malformed_record_is_a_value_error(meta):
    with pytest.raises(ValueError, match="record"):
        decode_outcome(_odd_meta_record(meta))
