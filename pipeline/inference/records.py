"""Tile completion records: what makes a run resumable after a crash.

An actor writes a tile's core chunks first and only then its record
``<dir>/<flat index>.done`` (written to a temporary name and renamed, or put as one
object on object storage, so a record is either whole or absent). A tile without a
record is computed again, so a tile killed half-way through its writes is never taken
as done. The record holds the tile's :class:`~pipeline.streaming.tile_outcome.TileOutcome`
(for instance models, the centre peaks of its core), which a resumed run feeds to the
scene's centre list as if the tile had just finished, so the result is the same.

Records are ``.npz`` archives read with ``allow_pickle=False``: the scalar fields as
one JSON document, the centres and their scores as arrays (:func:`encode_outcome`). Nothing under an output directory is ever
unpickled; a record in any other format (an older run's pickle) is ignored and its
tile computed again.

``<flat>.started`` marks an attempt: a tile processed while its marker exists
(a worker crashed, or the run was killed, during an earlier attempt) counts as
retried. ``SEGPIPE_FAULT_*`` variables inject faults for tests (docs/how-it-works.md, "Faults").
The directory may be a local path or an ``s3://`` prefix (:mod:`pipeline.storage`).
"""

from __future__ import annotations

import io
import json
import logging
import os
import zipfile
from typing import Any

import numpy as np

from pipeline.atomic import write_bytes_atomic
from pipeline.storage import access, objects
from pipeline.storage.location import Location, S3Uri, parse_location
from pipeline.streaming.tile_outcome import TileOutcome

DONE, STARTED, CRASHED = ".done", ".started", ".crashed"
RECORD_VERSION = 2  # 2: centre peaks (1: overlap-stitching patches)

FAULT_CRASH = "SEGPIPE_FAULT_CRASH_TILE"  # "<scene id or *>:<flat index>": worker exits once
FAULT_FAIL = "SEGPIPE_FAULT_FAIL_TILE"  # "<scene id or *>:<flat index>": tile always raises

log = logging.getLogger(__name__)


class InjectedFault(RuntimeError):
    """Raised for a tile named by ``SEGPIPE_FAULT_FAIL_TILE`` (tests only)."""


def _path(directory: str | os.PathLike[str] | Location, flat: int, suffix: str) -> Location:
    return parse_location(directory) / f"{flat}{suffix}"


def encode_outcome(outcome: TileOutcome) -> bytes:
    """A record's bytes: an ``.npz`` archive without pickled objects.

    Examples
    --------
    >>> o = TileOutcome(index=(1, 2), seconds=0.5, worker="w",
    ...                 centres=np.array([[3, 4]]), scores=np.array([0.7], np.float32))
    >>> back = decode_outcome(encode_outcome(o))
    >>> back.index, back.centres.tolist(), back.scores.dtype.name
    ((1, 2), [[3, 4]], 'float32')
    """
    meta = {"version": RECORD_VERSION, "index": [int(v) for v in outcome.index],
            "seconds": float(outcome.seconds), "worker": str(outcome.worker),
            "retried": bool(outcome.retried), "skipped": bool(outcome.skipped),
            "has_centres": outcome.centres is not None}
    arrays = {"meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
    if outcome.centres is not None:
        arrays["centres"] = np.asarray(outcome.centres, np.int64)
        arrays["scores"] = np.asarray(outcome.scores, np.float32)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def decode_outcome(data: bytes) -> TileOutcome:
    """The outcome in a record; ValueError for anything but a record of this version.

    The bytes are untrusted (``--out`` may be a shared disk): they are read as an
    ``.npz`` archive without pickled objects and one JSON document, never unpickled.
    """
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            meta = json.loads(archive["meta"].tobytes().decode())
            if meta.get("version") != RECORD_VERSION:
                raise ValueError(f"record version {meta.get('version')!r}, "
                                 f"expected {RECORD_VERSION}")
            index = tuple(int(v) for v in meta["index"])
            centres = scores = None
            if meta["has_centres"]:
                centres, scores = archive["centres"], archive["scores"]
                if (centres.dtype != np.int64 or centres.ndim != 2
                        or centres.shape[1] != len(index) or scores.dtype != np.float32
                        or scores.shape != (len(centres),)):
                    raise ValueError(f"record centres {centres.dtype}{centres.shape}, "
                                     f"scores {scores.dtype}{scores.shape}")
        return TileOutcome(index=index, seconds=float(meta["seconds"]),
                           worker=str(meta["worker"]), retried=bool(meta["retried"]),
                           skipped=bool(meta["skipped"]), centres=centres, scores=scores)
    except (OSError, KeyError, EOFError, TypeError, AttributeError, zipfile.BadZipFile,
            UnicodeDecodeError) as exc:  # a damaged or foreign file under --out
        raise ValueError(f"not a tile record: {type(exc).__name__}: {exc}") from exc


def prepare_records(directory: str | os.PathLike[str] | Location, *, keep: bool) -> None:
    """Keep a killed run's records (``keep``), else start with none."""
    if not keep:
        access.remove_tree(directory)
    access.make_dirs(directory)


def mark_started(directory: str | os.PathLike[str] | Location, flat: int) -> bool:
    """Record an attempt at ``flat``; True when an earlier attempt was recorded."""
    path = _path(directory, flat, STARTED)
    existed = access.is_file(path)
    if not existed:
        access.touch(path)
    return existed


def write_record(directory: str | os.PathLike[str] | Location, flat: int,
                 outcome: TileOutcome) -> None:
    """Atomically record a finished tile (call after its chunks are written)."""
    write_bytes_atomic(_path(directory, flat, DONE), encode_outcome(outcome), durable=True)


def _flat_of(name: str) -> int | None:
    stem = name[: -len(DONE)] if name.endswith(DONE) else ""
    return int(stem) if stem.isdigit() else None


def read_records(directory: str | os.PathLike[str] | Location) -> dict[int, Any]:
    """Every complete record: flat index -> outcome (unreadable ones are ignored)."""
    where = parse_location(directory)
    found = {f: p for p in access.list_files(where, suffix=DONE)
             if p.parent == where and (f := _flat_of(p.name)) is not None}
    if isinstance(where, S3Uri):
        contents = objects.get_many(found.values())
    else:
        contents = []
        for path in found.values():
            try:
                contents.append(path.read_bytes())
            except OSError:
                contents.append(None)
    out: dict[int, Any] = {}
    for (flat, path), data in zip(found.items(), contents):
        try:
            out[flat] = decode_outcome(data) if data is not None else None
        except ValueError as exc:  # never unpickled: the tile is computed again
            log.warning("tile record %s ignored (tile computed again): %s", path,
                        str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            continue
    return {f: o for f, o in out.items() if o is not None}


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


def crash_once(directory: str | os.PathLike[str] | Location, flat: int) -> None:
    """Kill this worker process the first time ``flat`` is processed (fault injection)."""
    marker = _path(directory, flat, CRASHED)
    if not access.is_file(marker):
        access.touch(marker)
        os._exit(17)
