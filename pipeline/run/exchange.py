"""Swap two paths atomically: Linux ``renameat2(2)`` with ``RENAME_EXCHANGE``.

After :func:`exchange` each path names what the other named before, and no observer
ever sees either path missing. glibc 2.28 and later export ``renameat2``; local file
systems (ext4, xfs, btrfs, tmpfs) support the flag, some network file systems do not.

Examples
--------
>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "a").write_text("A"), (d / "b").write_text("B")
>>> swapped = exchange(d / "a", d / "b")
>>> (d / "a").read_text() if swapped else "B"
'B'
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from functools import cache
from pathlib import Path

AT_FDCWD = -100
RENAME_EXCHANGE = 2  # linux/fs.h
# The file system or kernel cannot exchange: the caller falls back to two renames.
_UNSUPPORTED = {errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV}


@cache
def _renameat2():
    """libc's ``renameat2``, or None where it does not exist (not Linux, old glibc)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def exchange(a: Path, b: Path) -> bool:
    """Atomically swap the existing paths ``a`` and ``b`` (files or directories).

    Returns
    -------
    bool
        True when swapped; False when this system cannot exchange atomically (nothing
        was changed then).

    Raises
    ------
    OSError
        Any other failure (a path missing, permissions).
    """
    fn = _renameat2()
    if fn is None:
        return False
    if fn(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))
