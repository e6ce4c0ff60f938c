"""Where a run's model and block passes run: in this process, or on Ray.

``--executor auto`` (the default) runs small work in the command's own process
(:class:`~pipeline.inference.local_pool.LocalPool`): starting a local Ray runtime and
its actors costs more than a small scene takes. Everything else runs on Ray: a
cluster given with ``--ray-address`` (or ``RAY_ADDRESS``), a runtime this process is
already connected to (a notebook, tests), an explicit ``--workers`` above one, and
inputs of more than :data:`LOCAL_MAX_PIXELS` pixels (voxels) in all.

The decision is made twice: :func:`likely_local` guesses from the inputs' sizes on
disk before anything is imported, so that Ray can start in the background while
the inputs are checked when it will be needed; :func:`choose_executor` decides
from the discovered scenes' pixel counts.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pipeline.options import Executor, RunOptions

LOCAL_MAX_PIXELS = 4096 * 4096
"""Inputs of at most this many pixels (voxels) in all run in-process under ``auto``."""
LOCAL_MAX_BYTES = 64 * 2**20
"""The early guess: inputs of at most this many bytes on disk are probably local."""


def ray_connected() -> bool:
    """Whether this process is already connected to a Ray runtime (without importing Ray)."""
    ray = sys.modules.get("ray")
    return bool(ray is not None and ray.is_initialized())


def _ray_wanted(options: RunOptions) -> bool:
    """Ray regardless of size: asked for, a cluster, a connected runtime, several workers."""
    if options.executor is Executor.RAY:
        return True
    return bool(options.ray_address or os.environ.get("RAY_ADDRESS") or ray_connected()
                or (options.workers or 1) > 1)


def _bytes_at_most(paths: Iterable[Path], limit: int) -> bool:
    """Whether the files under ``paths`` total at most ``limit`` bytes (stops early)."""
    total = 0
    for path in paths:
        files = [path] if path.is_file() else (p for p in path.rglob("*") if p.is_file())
        for file in files:
            total += file.stat().st_size
            if total > limit:
                return False
    return True


def likely_local(inputs: list[str], options: RunOptions, *,
                 max_bytes: int = LOCAL_MAX_BYTES) -> bool:
    """The early guess: True when the run will probably not need Ray.

    Examples
    --------
    >>> likely_local(["s3://bucket/scene.tif"], RunOptions())
    False
    >>> likely_local([], RunOptions(executor="local"))
    True
    """
    if options.executor is Executor.LOCAL:
        return True
    if _ray_wanted(options) or any("://" in str(i) for i in inputs):
        return False
    try:
        return _bytes_at_most([Path(i) for i in inputs], max_bytes)
    except OSError:
        return True  # the checks will name the input; nothing to start Ray for


def _pixels(info: Any) -> int:
    """Pixels (voxels) of an opened input: ``width x height`` or the spatial shape."""
    if hasattr(info, "width") and hasattr(info, "height"):
        return int(info.width) * int(info.height)
    shape = getattr(info, "shape", None) or getattr(info, "disk_shape", None) or ()
    return math.prod(int(n) for n in shape[:3])


def total_pixels(scenes: Iterable[Any], *, stop_above: int | None = None) -> int:
    """Pixels (voxels) of all scenes, counted from their headers; inputs that cannot be
    opened count 0 (they fail later with their own line). Stops once above ``stop_above``."""
    from pipeline.formats import format_of

    total = 0
    for scene in scenes:
        try:
            total += _pixels(format_of(scene).open(scene.path))
        except Exception:  # noqa: BLE001, S112 - the scene's own run reports it
            continue
        if stop_above is not None and total > stop_above:
            break
    return total


def choose_executor(options: RunOptions, scenes: list[Any], *,
                    max_pixels: int = LOCAL_MAX_PIXELS) -> Executor:
    """``LOCAL`` or ``RAY`` for a run of ``scenes`` (see the module docstring)."""
    if options.executor is not Executor.AUTO:
        return options.executor
    if _ray_wanted(options) or any("://" in str(s.path) for s in scenes):
        return Executor.RAY
    small = total_pixels(scenes, stop_above=max_pixels) <= max_pixels
    return Executor.LOCAL if small else Executor.RAY
