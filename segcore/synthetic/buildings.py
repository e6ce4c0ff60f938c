"""Buildings: one candidate per grid cell, kept where clear of water and roads.

Buildings live in a grid of ``spec.cell_size`` cells, one candidate per cell, and
only cells overlapping a region are considered. A building's instance id is its
cell index + 1, unique across the scene without any global state. Candidates are
more likely near roads in settlements and less likely in forests.

Most candidates are rectangles of 8-40 px. With ``spec.large_buildings`` > 0 that
fraction of the candidates is *large* instead: 55-90 % of the room its cell leaves
per side, and 40 % of those are L-shaped (a corner rectangle cut out, see
:func:`footprint`). A large building with its cast shadow still lies inside its
cell, so a window grown to whole cells sees it whole. The large candidates draw
from streams of their own, so every other candidate is the one the scene has
without them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from segcore.synthetic import palette, streams
from segcore.synthetic.classes import ROAD, WATER
from segcore.synthetic.landcover import threshold
from segcore.synthetic.lines import roads
from segcore.synthetic.noise import fbm, hash_u64
from segcore.synthetic.region import Region
from segcore.synthetic.spec import SatelliteSceneSpec
from segcore.synthetic.streams import bits, unit

__all__ = ["Buildings", "buildings", "footprint"]

_MARGIN = 2  # free pixels around a building inside its cell
_MIN_SIDE, _MAX_SIDE = 8, 40
_LARGE_LOW, _LARGE_SPAN = 0.55, 0.35  # large sides: 55-90 % of the room in the cell
_L_SHAPED = 0.4  # fraction of large buildings that are L-shaped
_NOTCH_LOW, _NOTCH_SPAN = 0.35, 0.25  # the cut-out corner: 35-60 % of each side


@dataclass(frozen=True)
class Buildings:
    """Accepted buildings: one row per building (global coordinates).

    ``top, left, height, width`` are the bounding box; ``notch_height`` and
    ``notch_width`` (0 for a rectangle) the corner cut out of it at ``notch_corner``
    (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right; see :func:`footprint`).
    """

    ids: NDArray[np.int64]
    top: NDArray[np.int64]
    left: NDArray[np.int64]
    height: NDArray[np.int64]
    width: NDArray[np.int64]
    shadow: NDArray[np.int64]
    roof: NDArray[np.int64]
    brightness: NDArray[np.float32]
    notch_height: NDArray[np.int64]
    notch_width: NDArray[np.int64]
    notch_corner: NDArray[np.int64]


def footprint(height: int, width: int, notch: tuple[int, int, int] = (0, 0, 0)) -> NDArray[np.bool_]:
    """Pixels of a building in its bounding box: a rectangle, or an L without one corner.

    Parameters
    ----------
    height, width : int
        Bounding box size.
    notch : tuple of int, optional
        ``(notch_height, notch_width, corner)``: the rectangle cut out at ``corner``
        (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right); sizes 0 cut nothing.

    Returns
    -------
    (height, width) ndarray of bool
        True on the building.

    Examples
    --------
    >>> footprint(3, 4, (1, 2, 1)).astype(int)
    array([[1, 1, 0, 0],
           [1, 1, 1, 1],
           [1, 1, 1, 1]])
    >>> bool(footprint(3, 4).all())
    True
    """
    mask = np.ones((height, width), dtype=bool)
    notch_h, notch_w, corner = (int(v) for v in notch)
    if notch_h > 0 and notch_w > 0:
        rows = slice(0, notch_h) if corner in (0, 1) else slice(height - notch_h, height)
        cols = slice(0, notch_w) if corner in (0, 2) else slice(width - notch_w, width)
        mask[rows, cols] = False
    return mask


@dataclass(frozen=True)
class _LargeShape:
    """Which candidates are large, their sides and their cut-out corners."""

    large: NDArray[np.bool_]
    height: NDArray[np.int64]
    width: NDArray[np.int64]
    notch_height: NDArray[np.int64]
    notch_width: NDArray[np.int64]
    notch_corner: NDArray[np.int64]


def _large_shapes(spec: SatelliteSceneSpec, cy: NDArray, cx: NDArray, room: NDArray) -> _LargeShape:
    """Large candidates among the cells ``(cy, cx)``; ``room``: free side length per cell."""
    hl = hash_u64(cy, cx, spec.seed, streams.BUILD_LARGE)
    hs = hash_u64(cy, cx, spec.seed, streams.BUILD_SIZE)
    hn = hash_u64(cy, cx, spec.seed, streams.BUILD_NOTCH)
    large = unit(hl, 0).astype(np.float64) < spec.large_buildings

    def side(u: NDArray) -> NDArray[np.int64]:
        value = np.floor(room * (_LARGE_LOW + _LARGE_SPAN * u.astype(np.float64))).astype(np.int64)
        return np.clip(value, _MIN_SIDE, room)

    height, width = side(unit(hs, 0)), side(unit(hs, 24))
    notched = large & (unit(hn, 0).astype(np.float64) < _L_SHAPED)
    share_h = _NOTCH_LOW + _NOTCH_SPAN * unit(hn, 24).astype(np.float64)
    share_w = _NOTCH_LOW + _NOTCH_SPAN * bits(hn, 48, 1 << 16).astype(np.float64) / (1 << 16)
    notch_h = np.where(notched, np.floor(height * share_h).astype(np.int64), 0)
    notch_w = np.where(notched, np.floor(width * share_w).astype(np.int64), 0)
    return _LargeShape(large, height, width, notch_h, notch_w, bits(hl, 32, 4))


def _road_proximity(spec: SatelliteSceneSpec, y: NDArray, x: NDArray) -> NDArray[np.float64]:
    """1 on a road edge, falling to 0 at 200 px from the nearest road (all roads of the scene)."""
    nearest = np.full(np.broadcast_shapes(y.shape, x.shape), np.inf)
    for line in roads(spec):
        d = np.abs((y - line.py) * line.ux - (x - line.px) * line.uy) - line.half_width
        nearest = np.minimum(nearest, d)
    return np.clip(1.0 - nearest / 200.0, 0.0, 1.0)


def _building_probability(spec: SatelliteSceneSpec, cy: NDArray, cx: NDArray) -> NDArray:
    """Per-cell probability: high near roads in settlements, low in forests."""
    half = spec.cell_size // 2
    y, x = cy * spec.cell_size + half, cx * spec.cell_size + half
    settle = np.clip(0.5 + 1.5 * fbm(y, x, seed=spec.seed, scale=500.0, stream=streams.SETTLE), 0, 1)
    forest = fbm(y, x, seed=spec.seed, scale=220.0, stream=streams.FOREST)
    near = _road_proximity(spec, y, x)
    p = 0.04 + 1.5 * near * (0.2 + 0.8 * settle)
    p = np.where(forest > threshold(spec.forest_cover), 0.2 * p, p)
    return spec.building_density * p


def _candidates(spec: SatelliteSceneSpec, cells: Region) -> Buildings:
    """One candidate per cell (row/column indices in ``cells``)."""
    cy, cx = cells.ys(), cells.xs()
    ha = hash_u64(cy, cx, spec.seed, streams.BUILD_A)
    hb = hash_u64(cy, cx, spec.seed, streams.BUILD_B)
    c = spec.cell_size
    shadow = 2 + bits(ha, 0, 3)
    max_side = np.minimum(_MAX_SIDE, c - 2 * _MARGIN - shadow)
    ua, ub = unit(hb, 0).astype(np.float64), unit(hb, 24).astype(np.float64)
    height = _MIN_SIDE + np.floor((max_side - _MIN_SIDE + 1) * ua * (0.6 + 0.4 * ua)).astype(np.int64)
    width = _MIN_SIDE + np.floor((max_side - _MIN_SIDE + 1) * ub * (0.6 + 0.4 * ub)).astype(np.int64)
    zero = np.zeros_like(height)
    notch: tuple[NDArray, ...] = (zero, zero, zero)
    if spec.large_buildings > 0:  # without large buildings nothing below is drawn
        shape = _large_shapes(spec, cy, cx, c - 2 * _MARGIN - shadow)
        height = np.where(shape.large, shape.height, height)
        width = np.where(shape.large, shape.width, width)
        notch = tuple(np.where(shape.large, v, 0) for v in
                      (shape.notch_height, shape.notch_width, shape.notch_corner))
    free_y = c - 2 * _MARGIN - shadow - height + 1
    free_x = c - 2 * _MARGIN - shadow - width + 1
    top = cy * c + _MARGIN + (bits(ha, 8, 1 << 16) * free_y >> 16)
    left = cx * c + _MARGIN + (bits(ha, 24, 1 << 16) * free_x >> 16)
    present = unit(ha, 40) < _building_probability(spec, cy, cx)
    ids = cy * spec.cells[1] + cx + 1
    keep = present & (top + height <= spec.height) & (left + width <= spec.width)
    hc = hash_u64(cy, cx, spec.seed, streams.BUILD_C)
    roof = bits(hc, 0, len(palette.ROOFS))
    brightness = np.float32(0.88) + unit(hc, 16) * np.float32(0.24)
    *columns, mask = np.broadcast_arrays(
        ids, top, left, height, width, shadow, roof, brightness, *notch, keep
    )
    return Buildings(*(column[mask] for column in columns))


def buildings(spec: SatelliteSceneSpec, region: Region, semantic: NDArray[np.uint8]) -> Buildings:
    """Candidates of the cells covering ``region`` that keep clear of water and roads.

    ``region`` is cell-aligned and ``semantic`` holds its ground labels.
    """
    c = spec.cell_size
    cells = Region(region.y0 // c, region.x0 // c, region.y1 // c, region.x1 // c)
    b = _candidates(spec, cells)
    blocked = (semantic == WATER) | (semantic == ROAD)
    integral = np.zeros((region.shape[0] + 1, region.shape[1] + 1), dtype=np.int32)
    integral[1:, 1:] = blocked.cumsum(0, dtype=np.int32).cumsum(1, dtype=np.int32)
    y0 = b.top - _MARGIN - region.y0
    x0 = b.left - _MARGIN - region.x0
    y1 = y0 + b.height + 2 * _MARGIN
    x1 = x0 + b.width + 2 * _MARGIN
    hits = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    clear = hits == 0
    return Buildings(*(getattr(b, f)[clear] for f in Buildings.__dataclass_fields__))
