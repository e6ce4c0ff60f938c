"""Resumable runs: a fingerprint of what makes a scene's result, and what may be reused.

The fingerprint hashes the input file (path, size, modification time; for an ``s3://``
object its URI, size, modification time and entity tag), the model
(name, ``model.yaml`` and weights file digests), the options that change the
output (tile, halo, bands, spacing policy, chunking) and the segpipe version (an
upgrade recomputes). It is stored in the partial scene directory once ingest has
finished (``ingest.json``) and in the finished ``report.json``. With ``resume`` on
(the default; ``--no-resume`` turns it off):

* a scene whose finished report carries the same fingerprint is not run again;
* a scene whose partial directory (left by a killed run) carries it keeps its
  ingested store and every tile with a completion record
  (:mod:`pipeline.inference.records`); only the missing tiles are computed.

The label file is not part of the fingerprint: the segmentation does not depend on
it. Its content digest (:func:`labels_digest`) is kept in the report's ``metrics``;
:func:`metrics_current` says whether a finished report's metrics were made with the
labels at hand, else only the metrics are computed again
(:func:`pipeline.run.runner.run_scene`).

The key never involves an orchestrator's run id, so a new nightly flow run (or a
plain rerun of ``segpipe run``) reuses the work of any earlier one.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
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
from segcore.errors import SegpipeError

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


def segpipe_version() -> str:
    """The installed segpipe version (``importlib.metadata``); ``"unknown"`` when the
    package is not installed (a source tree on ``sys.path``)."""
    try:
        return importlib.metadata.version("segpipe")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def labels_digest(labels: str | os.PathLike[str] | Location) -> str:
    """SHA-256 of a label file's content, streamed (an ``s3://`` object is read once)."""
    where = parse_location(labels)
    if not isinstance(where, S3Uri):
        return file_digest(where)
    digest = hashlib.sha256()
    with objects.open_reader(where) as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def try_labels_digest(labels: str | os.PathLike[str] | Location | None) -> str | None:
    """:func:`labels_digest`, or None without labels or when the file cannot be read
    (the check before inference then says why)."""
    if labels is None:
        return None
    try:
        return labels_digest(labels)
    except (OSError, SegpipeError):
        return None


def metrics_current(report: SceneReport, digest: str | None) -> bool:
    """Whether a finished report needs no new metrics for labels of this ``digest``.

    True without labels (a result made with labels keeps its metrics), and when the
    report's metrics (or their error) were made from a label file of the same content.
    """
    if digest is None:
        return True
    metrics = report.metrics
    return metrics is not None and metrics.labels_digest == digest


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
        "segpipe": segpipe_version(),
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
