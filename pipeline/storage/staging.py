"""Local staging for writers that need a file system (GDAL, nibabel, Pillow).

:func:`local_dir` yields a directory to write into: the destination itself when it is
local (nothing changes), else a fresh temporary directory whose files are uploaded
when the block ends without error, each as one request, so every one appears complete
or not at all. A failed block uploads nothing. (One file written through a temporary
local path: :func:`pipeline.atomic.atomic_path`, which accepts ``s3://`` targets.)
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.storage import objects
from pipeline.storage.location import Location, parse_location


@contextmanager
def local_dir(directory: str | os.PathLike[str] | Location) -> Iterator[Path]:
    """A local directory whose files end up in ``directory`` (see the module docstring).

    Files in subdirectories keep their relative paths; dot files (writers' temporary
    files) are not uploaded.
    """
    where = parse_location(directory)
    if isinstance(where, Path):
        yield where
        return
    staging = Path(tempfile.mkdtemp(prefix="segpipe-staging-"))
    try:
        yield staging
        for path in sorted(staging.rglob("*")):
            rel = path.relative_to(staging)
            if path.is_file() and not any(p.startswith(".") for p in rel.parts):
                objects.put_file(where / rel.as_posix(), path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
