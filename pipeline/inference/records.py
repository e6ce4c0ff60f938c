"""Tile completion records: what makes a run resumable after a crash.

An actor writes a tile's core chunks first and only then its record
``<dir>/<flat index>.done`` (written to a temporary name and renamed, so a
record is either whole or absent). A tile without a record is computed again,
so a tile killed half-way through its writes is never taken as done. The record
holds the tile's :class:`~pipeline.streaming.tile_outcome.TileOutcome` (id range, cut
ids, boundary patches), which a resumed run feeds to the instance stitcher as if
the tile had just finished, so the stitched result is the same.

``<flat>.started`` marks an attempt: a tile processed while its marker exists
(a worker crashed, or the run was killed, during an earlier attempt) counts as
retried. ``SEGPIPE_FAULT_*`` variables inject faults for tests (README, "Faults").
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

from pipeline.atomic import write_bytes_atomic

DONE, STARTED, CRASHED = ".done", ".started", ".crashed"

FAULT_CRASH = "SEGPIPE_FAULT_CRASH_TILE"  # "<scene id or *>:<flat index>": worker exits once
FAULT_FAIL = "SEGPIPE_FAULT_FAIL_TILE"  # "<scene id or *>:<flat index>": tile always raises


class InjectedFault(RuntimeError):
    """Raised for a tile named by ``SEGPIPE_FAULT_FAIL_TILE`` (tests only)."""


def _path(directory: str | Path, flat: int, suffix: str) -> Path:
    return Path(directory) / f"{flat}{suffix}"


def mark_started(directory: str | Path, flat: int) -> bool:
    """Record an attempt at ``flat``; True when an earlier attempt was recorded."""
    path = _path(directory, flat, STARTED)
    existed = path.exists()
    path.touch()
    return existed


def write_record(directory: str | Path, flat: int, outcome: Any) -> None:
    """Atomically record a finished tile (call after its chunks are written)."""
    data = pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)
    write_bytes_atomic(_path(directory, flat, DONE), data, durable=True)


def read_records(directory: str | Path) -> dict[int, Any]:
    """Every complete record: flat index -> outcome (unreadable ones are ignored)."""
    out: dict[int, Any] = {}
    root = Path(directory)
    if not root.is_dir():
        return out
    for path in root.glob(f"*{DONE}"):
        try:
            with open(path, "rb") as fh:
                out[int(path.stem)] = pickle.load(fh)
        except (OSError, ValueError, EOFError, pickle.UnpicklingError):
            continue
    return out


def fault_matches(spec: str | None, scene_id: str, flat: int) -> bool:
    """Does a ``SEGPIPE_FAULT_*`` value name this tile?

    Examples
    --------
    >>> fault_matches("*:3", "a", 3), fault_matches("b:3", "a", 3), fault_matches(None, "a", 3)
    (True, False, False)
    """
    if not spec:
        return False
    scene, _, index = spec.rpartition(":")
    return scene in ("*", scene_id) and index.strip() == str(flat)


def crash_once(directory: str | Path, flat: int) -> None:
    """Kill this worker process the first time ``flat`` is processed (fault injection)."""
    marker = _path(directory, flat, CRASHED)
    if not marker.exists():
        marker.touch()
        os._exit(17)
