"""Resumable runs: a fingerprint of what makes a scene's result, and what may be reused.

The fingerprint hashes the input file (path, size, modification time), the model
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
from functools import lru_cache
from pathlib import Path

from pipeline.atomic import write_text_atomic
from pipeline.bundle import MODEL_FILE, ModelBundle
from pipeline.options import RunOptions
from pipeline.report.model import SceneReport

INGEST_MARKER = "ingest.json"
_OUTPUT_OPTIONS = ("tile", "overlap", "bands", "spacing", "image_chunk", "volume_chunk")


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


def run_fingerprint(scene_path: Path, bundle: ModelBundle, options: RunOptions) -> str:
    """A hex digest that changes whenever the scene's result could change."""
    st = Path(scene_path).stat()
    chosen = options.model_dump(mode="json", include=set(_OUTPUT_OPTIONS))
    doc = {
        "input": [str(Path(scene_path).resolve()), st.st_size, st.st_mtime_ns],
        "model": [bundle.name, file_digest(bundle.path / MODEL_FILE),
                  file_digest(bundle.weights_path)],
        "options": chosen,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def finished_report(final_dir: Path, fingerprint: str) -> SceneReport | None:
    """The finished scene's report when it was made with this fingerprint."""
    try:
        report = SceneReport.read(final_dir / "report.json")
    except (OSError, ValueError):
        return None
    return report if report.fingerprint == fingerprint else None


def partial_matches(partial: Path, fingerprint: str) -> bool:
    """Whether a killed run's partial directory finished ingest with this fingerprint."""
    try:
        marker = json.loads((partial / INGEST_MARKER).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("fingerprint") == fingerprint


def mark_ingested(partial: Path, fingerprint: str) -> None:
    """Record that ingest finished (written last, atomically)."""
    write_text_atomic(partial / INGEST_MARKER, json.dumps({"fingerprint": fingerprint}))
