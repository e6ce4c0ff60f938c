"""Boxes of global scene pixels: the requested window and the region computed for it.

A window (anything :class:`WindowLike`) is checked against the scene and turned
into a :class:`Region`; :func:`cell_aligned` grows it to whole building cells so
that a building is always seen whole, whatever the window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from segcore.errors import ConfigError
from segcore.synthetic.spec import SatelliteSceneSpec

__all__ = ["Region", "WindowLike", "cell_aligned", "window_region"]


class WindowLike(Protocol):
    """Anything with 2-D ``start`` and ``stop`` tuples (``segcore.geometry.window.Window``)."""

    @property
    def start(self) -> tuple[int, ...]: ...

    @property
    def stop(self) -> tuple[int, ...]: ...


@dataclass(frozen=True)
class Region:
    """A box ``[y0, y1) x [x0, x1)`` in global pixel coordinates."""

    y0: int
    x0: int
    y1: int
    x1: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.y1 - self.y0, self.x1 - self.x0)

    def ys(self) -> NDArray[np.int64]:
        return np.arange(self.y0, self.y1, dtype=np.int64)[:, None]

    def xs(self) -> NDArray[np.int64]:
        return np.arange(self.x0, self.x1, dtype=np.int64)[None, :]

    def crop(self, inner: Region) -> tuple[slice, slice]:
        """Slices of ``inner`` inside this region's arrays."""
        return (
            slice(inner.y0 - self.y0, inner.y1 - self.y0),
            slice(inner.x0 - self.x0, inner.x1 - self.x0),
        )


def window_region(spec: SatelliteSceneSpec, window: WindowLike | None) -> Region:
    """The region of ``window`` (default: the whole scene), checked against the scene."""
    if window is None:
        return Region(0, 0, spec.height, spec.width)
    try:
        (y0, x0), (y1, x1) = tuple(window.start), tuple(window.stop)
        y0, x0, y1, x1 = int(y0), int(x0), int(y1), int(x1)
    except (AttributeError, TypeError, ValueError):
        raise ConfigError(
            f"window: expected an object with 2-D start and stop tuples, received {window!r}"
        ) from None
    if not (0 <= y0 < y1 <= spec.height and 0 <= x0 < x1 <= spec.width):
        raise ConfigError(
            f"window: expected a non-empty window inside the scene (0, 0)-{spec.shape}, "
            f"received start=({y0}, {x0}) stop=({y1}, {x1})"
        )
    return Region(y0, x0, y1, x1)


def cell_aligned(region: Region, cell: int) -> Region:
    """``region`` grown to whole ``cell x cell`` cells."""
    return Region(
        (region.y0 // cell) * cell,
        (region.x0 // cell) * cell,
        -(-region.y1 // cell) * cell,
        -(-region.x1 // cell) * cell,
    )
