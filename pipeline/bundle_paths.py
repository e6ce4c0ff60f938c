"""Bundle fields that become paths stay inside their directories.

A model bundle arrives from elsewhere (a colleague, a download), and two fields of its
``model.yaml`` become parts of paths: ``name`` (a directory made for a re-prompted copy
of the bundle, export names) and ``weights`` (the file read from the bundle directory).
Neither may lead outside: a ``name`` is one plain path component, a ``weights`` entry a
relative path without ``..``, and the weights file, symbolic links resolved, lies
inside the bundle directory.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath

from segcore.errors import ModelError

MAX_NAME = 255  # one path component on common file systems


def _control(text: str) -> bool:
    return any(ord(ch) < 32 or ord(ch) == 127 for ch in text)


def check_name(value: str) -> str:
    """A bundle's ``name``: one plain path component.

    Raises
    ------
    ValueError
        For an empty name, a path separator, ``.`` or ``..``, or control characters.

    Examples
    --------
    >>> check_name("demo-satellite")
    'demo-satellite'
    >>> check_name("../outside")
    Traceback (most recent call last):
    ...
    ValueError: expected one plain file name (no '/', '\\' or control characters; not '.' or '..'), got '../outside'
    """
    if (not value or value in (".", "..") or "/" in value or "\\" in value
            or _control(value) or len(value) > MAX_NAME):
        raise ValueError("expected one plain file name (no '/', '\\' or control "
                         f"characters; not '.' or '..'), got {value!r}")
    return value


def check_weights(value: str) -> str:
    """A bundle's ``weights``: a relative path inside the bundle, without ``..``.

    Raises
    ------
    ValueError
        For an empty or absolute path (POSIX or Windows), a ``..`` component, or
        control characters.

    Examples
    --------
    >>> check_weights("model.safetensors"), check_weights("weights/model.pt")
    ('model.safetensors', 'weights/model.pt')
    >>> check_weights("/etc/passwd")
    Traceback (most recent call last):
    ...
    ValueError: expected a file name relative to the bundle directory, without '..', got '/etc/passwd'
    """
    windows = PureWindowsPath(value)
    parts = PurePosixPath(value.replace("\\", "/")).parts
    if (not value.strip() or _control(value) or value.startswith(("/", "\\"))
            or windows.drive or windows.is_absolute() or ".." in parts
            or parts in ((), (".",))):
        raise ValueError("expected a file name relative to the bundle directory, "
                         f"without '..', got {value!r}")
    return value


def weights_inside(directory: Path, weights: str, *, model: str) -> Path:
    """The weights file's path, checked to resolve inside ``directory``.

    Raises
    ------
    ModelError
        When the path (through symbolic links) leads outside the bundle directory.
    """
    path = directory / weights
    root = Path(os.path.realpath(directory))
    target = Path(os.path.realpath(path))
    if not target.is_relative_to(root):
        raise ModelError(f"model '{model}': weights: expected a file inside the bundle "
                         f"directory {root}, got {weights!r}, which leads to {target}")
    return path
