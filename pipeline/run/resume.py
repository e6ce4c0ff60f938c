"""Resumable runs: a fingerprint of what makes a scene's result, and what may be reused.

The fingerprint hashes the input file (path, size, modification time; for an ``s3://``
object its URI, size, modification time and entity tag), the model
(name, ``model.yaml`` and weights file digests) and the options that change the
output (tile, halo, bands, spacing policy, chunking). It is stored in the
partial scene directory once ingest has finished (``ingest.json``) and in the
finished ``report.json``. With ``resume`` on (the default; ``--no-resume`` turns
it off):

* a scene whose finished report carries the same fingerprint is not run again;
* a scene whose partial directory (left by a killed run) carries it keeps its
  ingested store and every tile with a completion record
  (:mod:`pipeline.inference.records`); only the missing tiles are computed.

The key never involves an orchestrator's run id, so a new nightly flow run (or a
plain rerun of ``segpipe run``) reuses the work of any earlier one.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path

from pipeline.atomic import write_text_atomic
from pipeline.bundle import MODEL_FILE, ModelBundle
from pipeline.options import RunOptions
from pipeline.report.model import SceneReport
from pipeline.storage import access, objects
from pipeline.storage.location import Location, S3Uri, parse_location

INGEST_MARKER = "ingest.json"
_OUTPUT_OPTIONS = ("tile", "overlap", "halo_mode", "memory_budget", "bands", "spacing",
                   "image_chunk", "volume_chunk")


@lru_cache(maxsize=64)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_digest(path: Path) -> str:
    """SHA-256 of a (model) file, cached by path, size and modification time."""
    st = path.stat()
    return _file_digest(str(path), st.st_size, st.st_mtime_ns)


def input_identity(scene_path: str | os.PathLike[str] | Location) -> list:
    """What identifies an input's content: ``[path, size, mtime_ns]`` for a local file
    (path resolved), ``[uri, size, mtime_ns, etag]`` for an object."""
    where = parse_location(scene_path)
    if isinstance(where, S3Uri):
        info = objects.stat(where)
        return [str(where), info.size, info.mtime_ns, info.etag]
    st = where.stat()
    return [str(where.resolve()), st.st_size, st.st_mtime_ns]


def run_fingerprint(scene_path: str | os.PathLike[str] | Location, bundle: ModelBundle,
                    options: RunOptions) -> str:
    """A hex digest that changes whenever the scene's result could change."""
    chosen = options.model_dump(mode="json", include=set(_OUTPUT_OPTIONS))
    doc = {
        "input": input_identity(scene_path),
        "model": [bundle.name, file_digest(bundle.path / MODEL_FILE),
                  file_digest(bundle.weights_path)],
        "options": chosen,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _read_json(location: Location) -> object | None:
    """A JSON document, or None when it is missing or malformed (other failures raise)."""
    try:
        return json.loads(access.read_text(location))
    except (FileNotFoundError, ValueError):
        return None
    except OSError:
        if isinstance(location, S3Uri):
            raise  # storage unreachable: say so rather than redo finished work
        return None


def finished_report(final_dir: Location, fingerprint: str) -> SceneReport | None:
    """The finished scene's report when it was made with this fingerprint."""
    doc = _read_json(parse_location(final_dir) / "report.json")
    try:
        report = SceneReport.model_validate(doc) if doc is not None else None
    except ValueError:
        return None
    return report if report is not None and report.fingerprint == fingerprint else None


def partial_matches(partial: Location, fingerprint: str) -> bool:
    """Whether a killed run's partial directory finished ingest with this fingerprint."""
    marker = _read_json(parse_location(partial) / INGEST_MARKER)
    return isinstance(marker, dict) and marker.get("fingerprint") == fingerprint


def mark_ingested(partial: Location, fingerprint: str) -> None:
    """Record that ingest finished (written last, atomically)."""
    write_text_atomic(parse_location(partial) / INGEST_MARKER, json.dumps({"fingerprint": fingerprint}))
