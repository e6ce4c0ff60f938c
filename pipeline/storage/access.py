"""Read, test, list and remove a location, local or remote, with one set of functions.

Code that handles both kinds of output (the workspace, resume records, reports) calls
these instead of :class:`~pathlib.Path` methods; a local path behaves exactly as the
matching ``pathlib``/``shutil`` call, an ``s3://`` URI goes through
:mod:`pipeline.storage.objects`. "Directories" on object storage are key prefixes: they
need no creating and vanish with their last object.

Examples
--------
>>> import tempfile
>>> root = Path(tempfile.mkdtemp())
>>> make_dirs(root / "a" / "b"); (root / "a" / "b" / "x.txt").write_text("hi")
2
>>> exists(root / "a" / "b" / "x.txt"), read_text(root / "a" / "b" / "x.txt")
(True, 'hi')
>>> [p.name for p in list_files(root / "a", suffix=".txt")]
['x.txt']
>>> remove_tree(root / "a"); exists(root / "a")
False
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from pipeline.storage import objects
from pipeline.storage.location import Location, S3Uri, parse_location


def exists(location: str | os.PathLike[str] | Location) -> bool:
    """Whether a file (an object) or directory (a non-empty prefix) is there."""
    where = parse_location(location)
    if isinstance(where, S3Uri):
        return objects.exists(where) or objects.is_prefix(where)
    return where.exists()


def is_file(location: str | os.PathLike[str] | Location) -> bool:
    """Whether a file (an object) is there."""
    where = parse_location(location)
    return objects.exists(where) if isinstance(where, S3Uri) else where.is_file()


def read_bytes(location: str | os.PathLike[str] | Location) -> bytes:
    """The whole file; OSError (StorageError for S3) when it cannot be read."""
    where = parse_location(location)
    return objects.get_bytes(where) if isinstance(where, S3Uri) else where.read_bytes()


def read_text(location: str | os.PathLike[str] | Location) -> str:
    """The whole file as UTF-8 text."""
    return read_bytes(location).decode("utf-8")


def list_files(directory: str | os.PathLike[str] | Location, *,
               suffix: str = "") -> list[Location]:
    """Files directly or indirectly below ``directory`` whose name ends with ``suffix``
    (none when it does not exist), in sorted order."""
    where = parse_location(directory)
    if isinstance(where, S3Uri):
        return [o.uri for o in objects.list_objects(where) if o.uri.name.endswith(suffix)]
    if not where.is_dir():
        return []
    return sorted(p for p in where.rglob(f"*{suffix}") if p.is_file())


def make_dirs(directory: str | os.PathLike[str] | Location) -> None:
    """Create a local directory and its parents (nothing to do on object storage)."""
    where = parse_location(directory)
    if isinstance(where, Path):
        where.mkdir(parents=True, exist_ok=True)


def remove_tree(location: str | os.PathLike[str] | Location) -> None:
    """Remove a directory (or prefix) and everything below it; absent is fine."""
    where = parse_location(location)
    if isinstance(where, S3Uri):
        objects.delete_prefix(where)
    else:
        shutil.rmtree(where, ignore_errors=True)


def touch(location: str | os.PathLike[str] | Location) -> None:
    """Create an empty marker file (an empty object)."""
    where = parse_location(location)
    if isinstance(where, S3Uri):
        objects.put_bytes(where, b"")
    else:
        where.touch()
