"""Calibrations of a model kept on disk, so a command measures a model once, not every time.

A 3-D model is measured before its first scene: the memory of a window
(:mod:`pipeline.run.window_memory`), the effective halo and its check against
whole-scene inference (:mod:`pipeline.run.halo_check`), and the receptive field of a
TorchScript or ``torch.export`` model (:mod:`pipeline.run.plan`). That takes seconds on
a CPU, and every ``segpipe run`` is a new process. Each result is kept as one small
JSON file (never a pickle) under the cache directory:

1. ``$SEGPIPE_CACHE_DIR`` when set;
2. else ``$XDG_CACHE_HOME/segpipe``;
3. else ``~/.cache/segpipe``.

``SEGPIPE_NO_CACHE=1`` turns the cache off. A result is found again only under the same
key: the model's content (SHA-256 of its weights and descriptor files, never paths),
the measurement and its parameters, and the segpipe, torch and numpy versions. Other
weights, settings or an upgrade measure again. Files are written atomically (a reader
sees a whole file or none); an unreadable or foreign file is measured again and
replaced; a cache directory that cannot be written is skipped with a warning, and the
measurement is simply not kept.

Examples
--------
>>> import os, tempfile
>>> from pipeline.bundle import load_bundle
>>> saved = dict(os.environ)
>>> os.environ["SEGPIPE_CACHE_DIR"] = tempfile.mkdtemp()
>>> calls = []
>>> def measure():
...     calls.append(1)
...     return {"halo": 24}
>>> bundle = load_bundle("demo-medical")
>>> remembered("example", bundle, {"analytic": 56}, measure)
{'halo': 24}
>>> remembered("example", bundle, {"analytic": 56}, measure), len(calls)  # from the file
({'halo': 24}, 1)
>>> remembered("example", bundle, {"analytic": 64}, measure) and len(calls)  # another key
2
>>> sorted(p.name.split("-")[0] for p in cache_dir().iterdir())
['example', 'example']
>>> os.environ.clear(); os.environ.update(saved)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from pipeline.atomic import write_json_atomic
from pipeline.bundle import ModelBundle
from pipeline.run.resume import file_digest, segpipe_version

log = logging.getLogger(__name__)

CACHE_ENV, NO_CACHE_ENV = "SEGPIPE_CACHE_DIR", "SEGPIPE_NO_CACHE"
SCHEMA = 1  # bumped when a measurement's method changes without a version change
SUBDIR = "calibration"
_warned: set[str] = set()


def cache_dir() -> Path | None:
    """The calibration cache directory (module docstring); None when turned off.

    Examples
    --------
    >>> import os
    >>> saved = dict(os.environ)
    >>> _ = os.environ.pop("SEGPIPE_CACHE_DIR", None)
    >>> os.environ["XDG_CACHE_HOME"] = "/var/cache/me"
    >>> cache_dir().as_posix()
    '/var/cache/me/segpipe/calibration'
    >>> os.environ.clear(); os.environ.update(saved)
    """
    if os.environ.get(NO_CACHE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}:
        return None
    if root := os.environ.get(CACHE_ENV):
        return Path(root).expanduser() / SUBDIR
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "segpipe" / SUBDIR


def model_identity(bundle: ModelBundle) -> list[str]:
    """SHA-256 digests of the model's descriptor files and weights (content only)."""
    return [*(file_digest(f) for f in bundle.descriptor_files), file_digest(bundle.weights_path)]


def cache_key(kind: str, bundle: ModelBundle, args: dict) -> dict:
    """What a kept ``kind`` measurement of ``bundle`` with ``args`` is valid for."""
    return {"kind": kind, "schema": SCHEMA, "model": model_identity(bundle), "args": args,
            "segpipe": segpipe_version(), "torch": torch.__version__, "numpy": np.__version__}


def _file_for(folder: Path, kind: str, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return folder / f"{kind}-{digest[:32]}.json"


def _read(path: Path, key: dict) -> dict | None:
    """The kept value when ``path`` holds one for exactly ``key``; else None."""
    try:
        kept = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("calibration cache: %s unreadable (%s); measuring again", path, exc)
        return None
    if not isinstance(kept, dict) or kept.get("key") != key or not isinstance(kept.get("value"), dict):
        log.warning("calibration cache: %s holds another measurement; measuring again", path)
        return None
    return kept["value"]


def _write(path: Path, key: dict, value: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, {"key": key, "value": value})
    except OSError as exc:
        if str(path.parent) not in _warned:  # once per directory, not once per model
            _warned.add(str(path.parent))
            log.warning("calibration cache: cannot write %s (%s); measurements are not kept",
                        path.parent, exc)


def remembered(kind: str, bundle: ModelBundle, args: dict,
               measure: Callable[[], dict]) -> dict:
    """``measure()``'s JSON value for ``kind`` of ``bundle`` with ``args``, from the cache
    when kept there under the same key, else measured now and kept.

    Parameters
    ----------
    kind : str
        Name of the measurement (the file name's prefix).
    bundle : ModelBundle
        The model measured (its content is part of the key).
    args : dict
        JSON values the measurement depends on besides the model (its settings).
    measure : callable
        Returns the measurement as a JSON-serialisable dict. Exceptions propagate and
        nothing is kept.
    """
    folder = cache_dir()
    if folder is None:
        return measure()
    try:
        key = cache_key(kind, bundle, args)
    except OSError as exc:  # a model file that cannot be read for its digest: measure only
        log.debug("calibration cache: model '%s' not keyed (%s)", bundle.name, exc)
        return measure()
    path = _file_for(folder, kind, key)
    if (value := _read(path, key)) is not None:
        log.debug("model '%s': %s from %s", bundle.name, kind, path)
        return value
    value = json.loads(json.dumps(measure()))  # as a later read gives it (lists, not tuples)
    _write(path, key, value)
    return value
