"""Local copies of remote inputs, for readers that cannot read object storage (nibabel).

:func:`local_copy` downloads an object once per machine and version into the system's
temporary directory (``segpipe-downloads/``) and returns the local path; the copy is
keyed by the object's entity tag and size, so a replaced object is downloaded again.
A local path is returned as it is.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from pipeline.storage import objects
from pipeline.storage.location import Location, S3Uri, parse_location

CACHE_DIR = "segpipe-downloads"


def cache_root() -> Path:
    """``<tmp>/segpipe-downloads``, created on demand."""
    root = Path(tempfile.gettempdir()) / CACHE_DIR
    root.mkdir(parents=True, exist_ok=True)
    return root


def local_copy(location: str | os.PathLike[str] | Location) -> Path:
    """A local file with the content of ``location`` (the path itself when local)."""
    where = parse_location(location)
    if not isinstance(where, S3Uri):
        return where
    info = objects.stat(where)
    tag = hashlib.sha256(f"{where}|{info.etag}|{info.size}".encode()).hexdigest()[:20]
    target = cache_root() / tag / where.name
    if target.is_file() and target.stat().st_size == info.size:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    return objects.download(where, target)
