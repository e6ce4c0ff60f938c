"""Resumable runs: a fingerprint of what makes a scene's result, and what may be reused.

The fingerprint hashes the input file (path, size, modification time; for an ``s3://``
object its URI, size, modification time and entity tag; every file of a scene read from
several, as its format says: :meth:`pipeline.formats.SceneFormat.input_identity`), the model
(name, ``model.yaml`` and weights file digests), the options that change the
output (tile, halo, bands, spacing policy, chunking) and the segpipe version (an
upgrade recomputes). It is stored in the partial scene directory once ingest has
finished (``ingest.json``, which travels with the published scene) and in the
finished ``report.json``. ``ingest.json`` also keeps the fingerprint's parts
(:meth:`Fingerprint.parts_record`: the segpipe version, the model's name, the output
options, and digests of the model and input identities: no paths), so a finished scene
that is computed again says why in one line (:func:`recompute_reason`). With ``resume``
on (the default; ``--no-resume`` turns it off):

* a scene whose finished report carries the same fingerprint is not run again; one
  with another fingerprint is computed again, with one warning line such as
  ``scene: recomputed: made by segpipe 0.1.0, this is 0.2.0`` (a report older than
  the parts record gives ``recomputed: made with other settings``);
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
import logging
import os
from functools import lru_cache
from pathlib import Path
from typing import Self

from pipeline.atomic import write_text_atomic
from pipeline.bundle import ModelBundle
from pipeline.formats.base import file_identity
from pipeline.options import RunOptions
from pipeline.report.model import SceneReport
from pipeline.storage import access, objects
from pipeline.storage.location import Location, S3Uri, parse_location
from segcore.errors import SegpipeError

INGEST_MARKER = "ingest.json"
log = logging.getLogger(__name__)
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




def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


class Fingerprint(str):
    """A run fingerprint: the hex digest reports store, which also carries the parts it
    hashes (``input``, ``model``, ``options``, ``segpipe``; see :func:`run_fingerprint`).

    It is a ``str`` (the digest) wherever one is expected.

    Examples
    --------
    >>> fp = Fingerprint({"input": ["/a.tif", 3, 0], "model": ["m", "d1", "d2"],
    ...                   "options": {"tile": 256}, "segpipe": "0.2.0"})
    >>> len(fp), fp == Fingerprint(dict(fp.parts))
    (64, True)
    >>> rec = fp.parts_record()
    >>> rec["segpipe"], rec["model_name"], rec["options"], "/a.tif" in str(rec)
    ('0.2.0', 'm', {'tile': 256}, False)
    """

    parts: dict

    def __new__(cls, parts: dict) -> Self:
        made = super().__new__(cls, _digest(parts))
        made.parts = parts
        return made

    def __reduce__(self) -> tuple:
        return (type(self), (self.parts,))

    def parts_record(self) -> dict:
        """What ``ingest.json`` keeps of the parts: the segpipe version, the model's name
        and the output options as they are; the input and the model as digests (no
        paths)."""
        model = self.parts["model"]
        return {"segpipe": self.parts["segpipe"], "model_name": model[0],
                "model": _digest(model), "options": self.parts["options"],
                "input": _digest(self.parts["input"])}


def run_fingerprint(scene_path: str | os.PathLike[str] | Location, bundle: ModelBundle,
                    options: RunOptions, *, identity: list | None = None) -> Fingerprint:
    """A hex digest that changes whenever the scene's result could change.

    ``identity`` is the input's identity as its format gives it
    (:meth:`pipeline.formats.SceneFormat.input_identity`: every file of a DICOM series,
    a STAC Item's band files); without it, :func:`~pipeline.formats.base.file_identity` of ``scene_path``.
    """
    chosen = options.model_dump(mode="json", include=set(_OUTPUT_OPTIONS))
    return Fingerprint({
        "input": identity if identity is not None else file_identity(scene_path),
        "model": [bundle.name, *(file_digest(f) for f in bundle.descriptor_files),
                  file_digest(bundle.weights_path)],
        "options": chosen,
        "segpipe": segpipe_version(),
    })


def _shown(value: object) -> str:
    return json.dumps(value, sort_keys=True)


def recompute_reason(old: dict | None, new: dict) -> str:
    """Why a finished scene made with parts ``old`` is computed again for parts ``new``
    (both :meth:`Fingerprint.parts_record`; ``old`` None for a scene that has none).

    Examples
    --------
    >>> new = {"segpipe": "0.2.0", "model_name": "m", "model": "a", "options": {"tile": 512},
    ...        "input": "i"}
    >>> recompute_reason({**new, "segpipe": "0.1.0"}, new)
    'made by segpipe 0.1.0, this is 0.2.0'
    >>> recompute_reason({**new, "model": "b", "options": {"tile": 256}}, new)
    'the model changed; the options changed (tile 256 -> 512)'
    >>> recompute_reason({**new, "model_name": "old", "model": "b", "input": "j"}, new)
    'the model changed (old -> m); the input changed'
    >>> recompute_reason(None, new)
    'made with other settings'
    """
    if not isinstance(old, dict):
        return "made with other settings"
    why = []
    if old.get("segpipe") != new["segpipe"]:
        why.append(f"made by segpipe {old.get('segpipe', 'unknown')}, this is {new['segpipe']}")
    if old.get("model") != new["model"]:
        names = old.get("model_name"), new["model_name"]
        why.append("the model changed" + (f" ({names[0]} -> {names[1]})"
                                          if names[0] != names[1] else ""))
    before, now = old.get("options") or {}, new["options"]
    changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
    if changed:
        why.append("the options changed (" + ", ".join(
            f"{k} {_shown(before.get(k))} -> {_shown(now.get(k))}" for k in changed) + ")")
    if old.get("input") != new["input"]:
        why.append("the input changed")
    return "; ".join(why) or "made with other settings"


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
    """The finished scene's report when it was made with this fingerprint.

    A finished scene made with another one is computed again: one warning line says
    why (:func:`recompute_reason`; the scene id, never a path), when ``fingerprint``
    carries its parts (a :class:`Fingerprint`).
    """
    final = parse_location(final_dir)
    doc = _read_json(final / "report.json")
    try:
        report = SceneReport.model_validate(doc) if doc is not None else None
    except ValueError:
        return None
    if report is None or report.fingerprint == fingerprint:
        return report
    if isinstance(fingerprint, Fingerprint):
        marker = _read_json(final / INGEST_MARKER)
        old = marker.get("parts") if isinstance(marker, dict) \
            and marker.get("fingerprint") == report.fingerprint else None
        log.warning("%s: recomputed: %s", report.scene_id,
                    recompute_reason(old, fingerprint.parts_record()))
    return None


def partial_matches(partial: Location, fingerprint: str) -> bool:
    """Whether a killed run's partial directory finished ingest with this fingerprint."""
    marker = _read_json(parse_location(partial) / INGEST_MARKER)
    return isinstance(marker, dict) and marker.get("fingerprint") == fingerprint


def mark_ingested(partial: Location, fingerprint: str) -> None:
    """Record that ingest finished (written last, atomically), with the fingerprint's
    parts when it carries them (:meth:`Fingerprint.parts_record`)."""
    doc: dict = {"fingerprint": str(fingerprint)}
    if isinstance(fingerprint, Fingerprint):
        doc["parts"] = fingerprint.parts_record()
    write_text_atomic(parse_location(partial) / INGEST_MARKER, json.dumps(doc))
