"""Atomic file writes: a file is complete at its final path, or absent.

Every writer makes its file under a hidden temporary name in the destination's own
directory (``.<name>.<random>.tmp``, so the rename never crosses file systems and
directory scans that skip dot files never see it) and renames it into place with
:func:`os.replace` only when the content is complete. On any error the temporary
file is removed and the destination is untouched.

A destination on object storage (an ``s3://`` URI, :mod:`pipeline.storage`) is written
the same way: the temporary file is local and is uploaded in one request when it is
complete (``write_*`` functions put their bytes directly), so the object too is complete
or absent.

Examples
--------
>>> import tempfile
>>> from pathlib import Path
>>> root = Path(tempfile.mkdtemp())
>>> write_json_atomic(root / "a.json", {"ok": True})
>>> (root / "a.json").read_text()
'{\\n  "ok": true\\n}'
>>> sorted(p.name for p in root.iterdir())
['a.json']
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline.storage import objects
from pipeline.storage.location import Location, S3Uri, parse_location


def temp_path(target: Path, suffix: str = ".tmp") -> Path:
    """A fresh hidden name beside ``target``: ``.<name>.<12 hex digits><suffix>``.

    Examples
    --------
    >>> p = temp_path(Path("/out/report.json"))
    >>> p.parent.as_posix(), p.name.startswith(".report.json."), p.suffix
    ('/out', True, '.tmp')
    """
    return target.with_name(f".{target.name}.{secrets.token_hex(6)}{suffix}")


@contextmanager
def atomic_path(target: str | os.PathLike | Location, *, suffix: str = ".tmp",
                durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write ``target`` through; rename it into place on success.

    Parameters
    ----------
    target : str, PathLike or S3Uri
        Final path (its directory must exist), or an ``s3://`` object: the temporary
        file is then local and uploaded on success.
    suffix : str
        Suffix of the temporary name (some writers choose a driver by it).
    durable : bool
        ``fsync`` the file before the rename (records a resumed run trusts).

    Raises
    ------
    FileNotFoundError
        When the body wrote nothing at the temporary path.
    """
    where = parse_location(target)
    if isinstance(where, S3Uri):
        with _uploaded(where, suffix) as tmp:
            yield tmp
        return
    final = where
    tmp = temp_path(final, suffix)
    try:
        yield tmp
        if durable:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def _uploaded(target: S3Uri, suffix: str) -> Iterator[Path]:
    """A fresh local temporary path, uploaded to ``target`` when the body succeeds."""
    folder = Path(tempfile.mkdtemp(prefix="segpipe-upload-"))
    tmp = folder / f"{target.name or 'object'}{suffix}"
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{tmp}: nothing was written for {target}")
        objects.put_file(target, tmp)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def write_bytes_atomic(path: str | os.PathLike | Location, data: bytes, *,
                       durable: bool = False) -> None:
    """Write ``data`` to ``path`` atomically (one request for an ``s3://`` object)."""
    where = parse_location(path)
    if isinstance(where, S3Uri):
        objects.put_bytes(where, data)
        return
    with atomic_path(where, durable=durable) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike | Location, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike | Location, data: Any) -> None:
    """Write ``data`` as indented JSON (no NaN or infinity) to ``path`` atomically."""
    write_text_atomic(path, json.dumps(data, indent=2, allow_nan=False))
