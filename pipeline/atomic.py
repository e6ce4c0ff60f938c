"""Atomic file writes: a file is complete at its final path, or absent.

Every writer makes its file under a hidden temporary name in the destination's own
directory (``.<name>.<random>.tmp``, so the rename never crosses file systems and
directory scans that skip dot files never see it) and renames it into place with
:func:`os.replace` only when the content is complete. On any error the temporary
file is removed and the destination is untouched.

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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


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
def atomic_path(target: str | os.PathLike, *, suffix: str = ".tmp",
                durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write ``target`` through; rename it into place on success.

    Parameters
    ----------
    target : str or PathLike
        Final path; its directory must exist.
    suffix : str
        Suffix of the temporary name (some writers choose a driver by it).
    durable : bool
        ``fsync`` the file before the rename (records a resumed run trusts).

    Raises
    ------
    FileNotFoundError
        When the body wrote nothing at the temporary path.
    """
    final = Path(target)
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


def write_bytes_atomic(path: str | os.PathLike, data: bytes, *, durable: bool = False) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path, durable=durable) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON (no NaN or infinity) to ``path`` atomically."""
    write_text_atomic(path, json.dumps(data, indent=2, allow_nan=False))
