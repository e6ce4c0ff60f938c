"""Synthetic satellite scenes of any size, rendered window by window.

A scene is a deterministic procedural function of the global pixel coordinates
and the seed (see :mod:`segcore.synthetic.noise`), so ``render(spec, window)``
equals the same crop of ``render(spec, larger_window)`` bit for bit, and the cost
of a window does not depend on the scene size:

- fields (fbm noise, parcels) are evaluated on the window only (grown to whole
  building cells, see below);
- roads and rivers are a short list of lines drawn from the seed; a line is
  evaluated only on the slab of the window it can reach;
- buildings live in a grid of ``cell_size`` cells, one candidate per cell, and
  only cells overlapping the window are considered. A building's instance id is
  its cell index + 1, unique across the scene without any global state.

To decide whether a building touches water or a road, the labels are computed on
the window grown to whole cells (at most ``cell_size - 1`` pixels per side), then
cropped.

Classes (:data:`SATELLITE_CLASSES`): 0 background (bare soil and crop fields with
hedges and plough stripes), 1 vegetation (forest with crown texture, grass
parcels), 2 water (lakes, meandering rivers), 3 road (long, nearly straight roads
crossing the whole scene, 6-14 px wide, some diagonal, dashed centre lines), 4 building (thing: axis-aligned
rectangles 8-40 px, varied roof colours, gabled shading, a darker rim, a cast
shadow; clustered near roads; never touching water or a road). The image adds a
low-frequency illumination gradient, haze and per-pixel sensor noise; label
edges are crisp while image edges are slightly soft.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from segcore.errors import ConfigError
from segcore.synthetic.noise import fbm, fbm1d, hash_u64, hash_uniform

__all__ = [
    "SATELLITE_CLASSES",
    "ClassInfo",
    "SatelliteSceneSpec",
    "SceneWindow",
    "WindowLike",
    "render",
]

BACKGROUND, VEGETATION, WATER, ROAD, BUILDING = 0, 1, 2, 3, 4


@dataclass(frozen=True)
class ClassInfo:
    """One class of a class table.

    Parameters
    ----------
    id : int
        Class id as stored in semantic label arrays.
    name : str
        Short lowercase name.
    isthing : bool
        Whether pixels of this class form countable instances.
    color : tuple of int
        ``(r, g, b)`` in ``0..255`` for overlays and legends.
    """

    id: int
    name: str
    isthing: bool
    color: tuple[int, int, int]

    def __post_init__(self) -> None:
        if isinstance(self.id, bool) or not isinstance(self.id, int) or self.id < 0:
            raise ConfigError(f"ClassInfo.id: expected an int >= 0, received {self.id!r}")
        if len(self.color) != 3 or any(not 0 <= int(c) <= 255 for c in self.color):
            raise ConfigError(
                f"ClassInfo.color: expected three ints in 0..255, received {self.color!r}"
            )


SATELLITE_CLASSES: tuple[ClassInfo, ...] = (
    ClassInfo(BACKGROUND, "background", False, (181, 148, 105)),
    ClassInfo(VEGETATION, "vegetation", False, (46, 139, 87)),
    ClassInfo(WATER, "water", False, (30, 100, 200)),
    ClassInfo(ROAD, "road", False, (128, 128, 128)),
    ClassInfo(BUILDING, "building", True, (220, 50, 47)),
)
"""Class table of the synthetic satellite scenes (ids 0..4, building is a thing)."""

# Hash streams: one per independent use, so fields never correlate.
_S_PARCEL, _S_PARCEL_ROW, _S_FOREST, _S_LAKE, _S_SETTLE = 1, 2, 3, 4, 5
_S_BUILD_A, _S_BUILD_B, _S_BUILD_C = 6, 7, 15
_S_TEX_SOIL, _S_TEX_CROWN, _S_TEX_FOREST, _S_TEX_WATER, _S_TEX_FINE = 8, 9, 10, 11, 12
_S_ILLUM, _S_HAZE, _S_NOISE, _S_LINES = 13, 14, 20, 40

_FBM_STD = 0.275  # empirical standard deviation of fbm(octaves=4)
_PARCEL_H, _PARCEL_W = 112, 160
_MARGIN = 2  # free pixels around a building inside its cell
_MIN_SIDE, _MAX_SIDE = 8, 40

# Colours as (R, G, B, NIR) in digital numbers.
_SOIL = np.array(
    [
        [176, 150, 112, 120],
        [146, 112, 80, 108],
        [118, 92, 66, 98],
        [192, 166, 112, 132],
        [204, 188, 152, 142],
        [152, 140, 96, 150],
    ],
    dtype=np.float32,
)
_GRASS = np.array([[112, 152, 72, 195], [96, 136, 62, 185]], dtype=np.float32)
_FIELDS = np.concatenate([_SOIL, _GRASS])
_HEDGE = np.array([92, 98, 62, 150], dtype=np.float32)
_FOREST = np.array([56, 92, 46, 205], dtype=np.float32)
_WATER = np.array([34, 58, 84, 18], dtype=np.float32)
_SEDIMENT = np.array([22, 18, 4, 6], dtype=np.float32)
_ASPHALT = np.array([112, 113, 112, 86], dtype=np.float32)
_PAINT = np.array([226, 226, 218, 200], dtype=np.float32)
_ROOFS = np.array(
    [
        [172, 72, 56, 92],
        [192, 104, 72, 104],
        [128, 128, 134, 112],
        [86, 90, 98, 82],
        [218, 218, 212, 196],
        [124, 88, 62, 92],
        [152, 162, 172, 132],
    ],
    dtype=np.float32,
)
_HAZE_COLOUR = np.array([200, 206, 216, 150], dtype=np.float32)
# Plough-stripe directions: a fixed table (Python math, evaluated once).
_STRIPE_DIRS = np.array(
    [[math.sin(k * math.pi / 8), math.cos(k * math.pi / 8)] for k in range(8)], dtype=np.float32
)


class WindowLike(Protocol):
    """Anything with 2-D ``start`` and ``stop`` tuples (``segcore.geometry.window.Window``)."""

    @property
    def start(self) -> tuple[int, ...]: ...

    @property
    def stop(self) -> tuple[int, ...]: ...


def _check_int(name: str, value: object, low: int, high: int | None = None) -> None:
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not ok or value < low or (high is not None and value > high):  # type: ignore[operator]
        bound = f">= {low}" if high is None else f"in {low}..{high}"
        raise ConfigError(f"SatelliteSceneSpec.{name}: expected an int {bound}, received {value!r}")


def _check_float(name: str, value: object, low: float, high: float, *, open_high: bool) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = low <= value < high if open_high else low <= value <= high  # type: ignore[operator]
    if not ok:
        bracket = ")" if open_high else "]"
        raise ConfigError(
            f"SatelliteSceneSpec.{name}: expected a number in [{low}, {high}{bracket}, "
            f"received {value!r}"
        )


@dataclass(frozen=True)
class SatelliteSceneSpec:
    """Everything that defines a synthetic scene; equal specs render equal pixels.

    Parameters
    ----------
    seed : int
        Scene seed, ``>= 0``.
    height, width : int
        Scene size in pixels, ``>= 1`` (any size: the scene is never held whole).
    bands : int, optional
        3 (RGB) or 4 (RGB + NIR).
    forest_cover : float, optional
        Approximate fraction of forest before roads and buildings, in ``[0, 1)``.
    grass_fraction : float, optional
        Fraction of field parcels that are grass (vegetation), in ``[0, 1]``.
    lake_cover : float, optional
        Approximate fraction of lakes, in ``[0, 1)``.
    road_density : float, optional
        Roads per 1000 px of ``height + width`` (at least 2 roads when ``> 0``).
    river_density : float, optional
        Rivers per 1000 px of ``height + width`` (rounded).
    building_density : float, optional
        Multiplier of the per-cell building probability, in ``[0, 4]``.
    noise_level : float, optional
        Standard deviation of the sensor noise in digital numbers, in ``[0, 50]``.
    haze : float, optional
        Maximum haze opacity, in ``[0, 1)``.
    cell_size : int, optional
        Building grid cell in pixels (one candidate building per cell), ``16..256``.

    Raises
    ------
    ConfigError
        If a value is out of range; the message names the field.

    Examples
    --------
    >>> spec = SatelliteSceneSpec(seed=1, height=1000, width=500)
    >>> spec.shape, spec.max_instance_id
    ((1000, 500), 231)
    """

    seed: int
    height: int
    width: int
    bands: int = 3
    forest_cover: float = 0.22
    grass_fraction: float = 0.15
    lake_cover: float = 0.07
    road_density: float = 2.0
    river_density: float = 0.5
    building_density: float = 1.0
    noise_level: float = 5.0
    haze: float = 0.12
    cell_size: int = 48

    def __post_init__(self) -> None:
        _check_int("seed", self.seed, 0)
        _check_int("height", self.height, 1)
        _check_int("width", self.width, 1)
        _check_int("bands", self.bands, 3, 4)
        _check_int("cell_size", self.cell_size, 16, 256)
        _check_float("forest_cover", self.forest_cover, 0.0, 1.0, open_high=True)
        _check_float("grass_fraction", self.grass_fraction, 0.0, 1.0, open_high=False)
        _check_float("lake_cover", self.lake_cover, 0.0, 1.0, open_high=True)
        _check_float("road_density", self.road_density, 0.0, 100.0, open_high=False)
        _check_float("river_density", self.river_density, 0.0, 100.0, open_high=False)
        _check_float("building_density", self.building_density, 0.0, 4.0, open_high=False)
        _check_float("noise_level", self.noise_level, 0.0, 50.0, open_high=False)
        _check_float("haze", self.haze, 0.0, 1.0, open_high=True)

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)``."""
        return (self.height, self.width)

    @property
    def cells(self) -> tuple[int, int]:
        """Building grid size ``(rows, columns)`` of cells covering the scene."""
        return (-(-self.height // self.cell_size), -(-self.width // self.cell_size))

    @property
    def max_instance_id(self) -> int:
        """Largest building instance id the scene can hold (cell count)."""
        rows, cols = self.cells
        return rows * cols


@dataclass(frozen=True)
class SceneWindow:
    """Pixels and labels of one window of a scene.

    Parameters
    ----------
    image : (bands, h, w) ndarray of uint8
        Reflectance-like digital numbers.
    semantic : (h, w) ndarray of uint8
        Class ids of :data:`SATELLITE_CLASSES`.
    instance : (h, w) ndarray of uint32
        Building instance ids (unique across the scene), 0 where no building.
    """

    image: NDArray[np.uint8]
    semantic: NDArray[np.uint8]
    instance: NDArray[np.uint32]

    def __post_init__(self) -> None:
        ok = (
            self.image.ndim == 3
            and self.image.dtype == np.uint8
            and self.semantic.dtype == np.uint8
            and self.instance.dtype == np.uint32
            and self.image.shape[1:] == self.semantic.shape == self.instance.shape
        )
        if not ok:
            raise ConfigError(
                "SceneWindow: expected image (bands, h, w) uint8, semantic (h, w) uint8 and "
                f"instance (h, w) uint32, received {self.image.shape} {self.image.dtype}, "
                f"{self.semantic.shape} {self.semantic.dtype}, "
                f"{self.instance.shape} {self.instance.dtype}"
            )


# ----------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class _Region:
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

    def crop(self, inner: _Region) -> tuple[slice, slice]:
        """Slices of ``inner`` inside this region's arrays."""
        return (
            slice(inner.y0 - self.y0, inner.y1 - self.y0),
            slice(inner.x0 - self.x0, inner.x1 - self.x0),
        )


def _window_region(spec: SatelliteSceneSpec, window: WindowLike | None) -> _Region:
    if window is None:
        return _Region(0, 0, spec.height, spec.width)
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
    return _Region(y0, x0, y1, x1)


def _cell_aligned(region: _Region, cell: int) -> _Region:
    return _Region(
        (region.y0 // cell) * cell,
        (region.x0 // cell) * cell,
        -(-region.y1 // cell) * cell,
        -(-region.x1 // cell) * cell,
    )


# ----------------------------------------------------------------------------- lines


@dataclass(frozen=True)
class _Line:
    """A straight (road) or meandering (river) band through point ``p`` along ``u``."""

    py: float
    px: float
    uy: float
    ux: float
    half_width: float
    wobble: float
    wobble_scale: float
    stream: int
    shade: float

    @property
    def reach(self) -> float:
        """Largest distance from the axis a band pixel can have."""
        return self.half_width + self.wobble + 1.0

    def signed(self, y: float, x: float) -> float:
        return (y - self.py) * self.ux - (x - self.px) * self.uy


def _line_count(density: float, spec: SatelliteSceneSpec, minimum: int) -> int:
    if density <= 0:
        return 0
    return max(minimum, round(density * (spec.height + spec.width) / 1000.0))


def _roads(spec: SatelliteSceneSpec) -> tuple[_Line, ...]:
    rng = np.random.default_rng([spec.seed, _S_LINES, 1])
    lines = []
    for i in range(_line_count(spec.road_density, spec, 2)):
        if rng.random() < 0.7:  # near-axis roads
            angle = (90.0 if rng.random() < 0.5 else 0.0) + rng.normal(0.0, 4.0)
        else:  # diagonal roads
            angle = rng.uniform(25.0, 65.0) + (90.0 if rng.random() < 0.5 else 0.0)
        a = math.radians(angle)
        lines.append(
            _Line(
                py=float(rng.uniform(0, spec.height)),
                px=float(rng.uniform(0, spec.width)),
                uy=math.sin(a),
                ux=math.cos(a),
                half_width=float(rng.uniform(3.0, 7.0)),
                wobble=float(rng.uniform(0.0, 6.0)),
                wobble_scale=600.0,
                stream=_S_LINES + 2 * i,
                shade=float(rng.choice([0.85, 0.95, 1.0, 1.1, 1.3])),
            )
        )
    return tuple(lines)


def _rivers(spec: SatelliteSceneSpec) -> tuple[_Line, ...]:
    rng = np.random.default_rng([spec.seed, _S_LINES, 2])
    lines = []
    for i in range(_line_count(spec.river_density, spec, 0)):
        a = rng.uniform(0.0, math.pi)
        lines.append(
            _Line(
                py=float(rng.uniform(0, spec.height)),
                px=float(rng.uniform(0, spec.width)),
                uy=math.sin(a),
                ux=math.cos(a),
                half_width=float(rng.uniform(6.0, 14.0)),
                wobble=float(rng.uniform(25.0, 80.0)),
                wobble_scale=float(rng.uniform(250.0, 500.0)),
                stream=_S_LINES + 2 * i + 1,
                shade=float(rng.uniform(0.85, 1.15)),
            )
        )
    return tuple(lines)


def _line_slab(line: _Line, region: _Region) -> _Region | None:
    """Sub-box of ``region`` holding every pixel within ``line.reach`` of the axis."""
    r = line.reach
    corners = [line.signed(y, x) for y in (region.y0, region.y1 - 1) for x in (region.x0, region.x1 - 1)]
    if min(corners) > r or max(corners) < -r:
        return None
    if abs(line.ux) >= abs(line.uy):  # mostly horizontal: restrict rows
        ends = [
            line.py + (s + (x - line.px) * line.uy) / line.ux
            for s in (-r, r)
            for x in (region.x0, region.x1 - 1)
        ]
        lo, hi = max(region.y0, math.floor(min(ends)) - 1), min(region.y1, math.ceil(max(ends)) + 2)
        return _Region(lo, region.x0, hi, region.x1) if lo < hi else None
    ends = [
        line.px + ((y - line.py) * line.ux - s) / line.uy
        for s in (-r, r)
        for y in (region.y0, region.y1 - 1)
    ]
    lo, hi = max(region.x0, math.floor(min(ends)) - 1), min(region.x1, math.ceil(max(ends)) + 2)
    return _Region(region.y0, lo, region.y1, hi) if lo < hi else None


@dataclass(frozen=True)
class _LineHit:
    """A line evaluated on a slab: distance to the (meandering) axis and position along it."""

    line: _Line
    slab: _Region
    distance: NDArray[np.float32]
    along: NDArray[np.float32]


def _trace(line: _Line, region: _Region, seed: int) -> _LineHit | None:
    slab = _line_slab(line, region)
    if slab is None:
        return None
    dy = slab.ys() - line.py
    dx = slab.xs() - line.px
    along = dy * line.uy + dx * line.ux
    signed = dy * line.ux - dx * line.uy
    if line.wobble > 0:
        signed = signed - line.wobble * fbm1d(
            along, seed=seed, scale=line.wobble_scale, stream=line.stream
        ).astype(np.float64)
    return _LineHit(line, slab, np.abs(signed).astype(np.float32), along.astype(np.float32))


# ----------------------------------------------------------------------------- fields


def _threshold(cover: float) -> float:
    """fbm level exceeded by about ``cover`` of the pixels (normal approximation)."""
    if cover <= 0:
        return 2.0  # fbm never reaches it
    return _FBM_STD * NormalDist().inv_cdf(1.0 - cover)


@dataclass(frozen=True)
class _Fields:
    """Continuous fields and ground labels on a region (before buildings)."""

    parcel: NDArray[np.uint8]
    parcel_edge: NDArray[np.bool_]
    stripe: NDArray[np.float32]
    grass: NDArray[np.bool_]
    forest: NDArray[np.float32]
    lake: NDArray[np.float32]
    rivers: tuple[_LineHit, ...]
    roads: tuple[_LineHit, ...]
    semantic: NDArray[np.uint8]


def _bits(h: NDArray[np.uint64], shift: int, modulo: int) -> NDArray[np.int64]:
    return ((h >> np.uint64(shift)) % np.uint64(modulo)).astype(np.int64)


def _unit(h: NDArray[np.uint64], shift: int) -> NDArray[np.float32]:
    """24 bits of ``h`` starting at ``shift`` as a float in ``[0, 1)``."""
    return ((h >> np.uint64(shift)) & np.uint64(0xFFFFFF)).astype(np.float32) * np.float32(
        1.0 / (1 << 24)
    )


def _parcels(
    spec: SatelliteSceneSpec, region: _Region
) -> tuple[NDArray[np.uint8], NDArray[np.bool_], NDArray[np.float32]]:
    """Field parcels in a brick layout: palette index, hedge mask, plough stripes.

    The palette index points into ``_FIELDS``: soils first, then grass (vegetation).
    """
    ys, xs = region.ys(), region.xs()
    row = ys // _PARCEL_H
    shift = hash_uniform(row, 0, spec.seed, _S_PARCEL_ROW).astype(np.float64) * _PARCEL_W
    u = (xs + shift) / _PARCEL_W
    col = np.floor(u)
    edge = ((ys - row * _PARCEL_H) < 2) | ((u - col) * _PARCEL_W < 2.0)
    del u
    h = hash_u64(row, col.astype(np.int64), spec.seed, _S_PARCEL)
    del col
    grass = _unit(h, 40) < np.float32(spec.grass_fraction)
    kind = np.where(grass, len(_SOIL) + _bits(h, 28, len(_GRASS)), _bits(h, 20, len(_SOIL)))
    direction = _bits(h, 3, 8)
    t = ys.astype(np.float32) * _STRIPE_DIRS[direction, 0]
    t += xs.astype(np.float32) * _STRIPE_DIRS[direction, 1]
    t /= (5 + _bits(h, 6, 6)).astype(np.float32)
    t -= np.floor(t)
    t -= np.float32(0.5)
    stripe = np.abs(t) - np.float32(0.25)  # triangle wave in [-0.25, 0.25]
    stripe *= _unit(h, 12) * np.float32(0.3)
    return kind.astype(np.uint8), edge, stripe


def _fields(spec: SatelliteSceneSpec, region: _Region) -> _Fields:
    ys, xs = region.ys(), region.xs()
    parcel, edge, stripe = _parcels(spec, region)
    grass = (parcel >= len(_SOIL)) & ~edge
    forest = fbm(ys, xs, seed=spec.seed, scale=220.0, stream=_S_FOREST)
    lake = fbm(ys, xs, seed=spec.seed, scale=360.0, stream=_S_LAKE)
    semantic = np.zeros(region.shape, dtype=np.uint8)
    semantic[grass | (forest > _threshold(spec.forest_cover))] = VEGETATION
    semantic[lake > _threshold(spec.lake_cover)] = WATER
    rivers = tuple(h for line in _rivers(spec) if (h := _trace(line, region, spec.seed)))
    roads = tuple(h for line in _roads(spec) if (h := _trace(line, region, spec.seed)))
    for hits, cls in ((rivers, WATER), (roads, ROAD)):
        for hit in hits:
            view = semantic[region.crop(hit.slab)]
            view[hit.distance <= hit.line.half_width] = cls
    return _Fields(parcel, edge, stripe, grass, forest, lake, rivers, roads, semantic)


# ----------------------------------------------------------------------------- buildings


@dataclass(frozen=True)
class _Buildings:
    """Accepted buildings: one row per building (global coordinates)."""

    ids: NDArray[np.int64]
    top: NDArray[np.int64]
    left: NDArray[np.int64]
    height: NDArray[np.int64]
    width: NDArray[np.int64]
    shadow: NDArray[np.int64]
    roof: NDArray[np.int64]
    brightness: NDArray[np.float32]


def _road_proximity(spec: SatelliteSceneSpec, y: NDArray, x: NDArray) -> NDArray[np.float64]:
    """1 on a road edge, falling to 0 at 200 px from the nearest road (all roads of the scene)."""
    nearest = np.full(np.broadcast_shapes(y.shape, x.shape), np.inf)
    for line in _roads(spec):
        d = np.abs((y - line.py) * line.ux - (x - line.px) * line.uy) - line.half_width
        nearest = np.minimum(nearest, d)
    return np.clip(1.0 - nearest / 200.0, 0.0, 1.0)


def _building_probability(spec: SatelliteSceneSpec, cy: NDArray, cx: NDArray) -> NDArray:
    """Per-cell probability: high near roads in settlements, low in forests."""
    half = spec.cell_size // 2
    y, x = cy * spec.cell_size + half, cx * spec.cell_size + half
    settle = np.clip(0.5 + 1.5 * fbm(y, x, seed=spec.seed, scale=500.0, stream=_S_SETTLE), 0, 1)
    forest = fbm(y, x, seed=spec.seed, scale=220.0, stream=_S_FOREST)
    near = _road_proximity(spec, y, x)
    p = 0.04 + 1.5 * near * (0.2 + 0.8 * settle)
    p = np.where(forest > _threshold(spec.forest_cover), 0.2 * p, p)
    return spec.building_density * p


def _candidates(spec: SatelliteSceneSpec, cells: _Region) -> _Buildings:
    """One candidate rectangle per cell (row/column indices in ``cells``)."""
    cy, cx = cells.ys(), cells.xs()
    ha = hash_u64(cy, cx, spec.seed, _S_BUILD_A)
    hb = hash_u64(cy, cx, spec.seed, _S_BUILD_B)
    c = spec.cell_size
    shadow = 2 + _bits(ha, 0, 3)
    max_side = np.minimum(_MAX_SIDE, c - 2 * _MARGIN - shadow)
    ua, ub = _unit(hb, 0).astype(np.float64), _unit(hb, 24).astype(np.float64)
    height = _MIN_SIDE + np.floor((max_side - _MIN_SIDE + 1) * ua * (0.6 + 0.4 * ua)).astype(np.int64)
    width = _MIN_SIDE + np.floor((max_side - _MIN_SIDE + 1) * ub * (0.6 + 0.4 * ub)).astype(np.int64)
    free_y = c - 2 * _MARGIN - shadow - height + 1
    free_x = c - 2 * _MARGIN - shadow - width + 1
    top = cy * c + _MARGIN + (_bits(ha, 8, 1 << 16) * free_y >> 16)
    left = cx * c + _MARGIN + (_bits(ha, 24, 1 << 16) * free_x >> 16)
    present = _unit(ha, 40) < _building_probability(spec, cy, cx)
    ids = cy * spec.cells[1] + cx + 1
    keep = present & (top + height <= spec.height) & (left + width <= spec.width)
    hc = hash_u64(cy, cx, spec.seed, _S_BUILD_C)
    roof = _bits(hc, 0, len(_ROOFS))
    brightness = np.float32(0.88) + _unit(hc, 16) * np.float32(0.24)
    *columns, mask = np.broadcast_arrays(
        ids, top, left, height, width, shadow, roof, brightness, keep
    )
    return _Buildings(*(column[mask] for column in columns))


def _buildings(spec: SatelliteSceneSpec, region: _Region, semantic: NDArray[np.uint8]) -> _Buildings:
    """Candidates of the cells covering ``region`` that keep clear of water and roads."""
    c = spec.cell_size
    cells = _Region(region.y0 // c, region.x0 // c, region.y1 // c, region.x1 // c)
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
    return _Buildings(*(getattr(b, f)[clear] for f in _Buildings.__dataclass_fields__))


# ----------------------------------------------------------------------------- painting


def _soft(field: NDArray[np.float32], threshold: float, width: float) -> NDArray[np.float32]:
    """Opacity ramp across ``field == threshold``: 0.5 on the (crisp) label edge."""
    alpha = (field - np.float32(threshold)) * np.float32(1.0 / width) + np.float32(0.5)
    return np.clip(alpha, np.float32(0.0), np.float32(1.0))


def _blend(image: NDArray[np.float32], band: int, colour: NDArray | float, alpha: NDArray) -> None:
    image[band] += (colour - image[band]) * alpha


def _paint_ground(spec: SatelliteSceneSpec, region: _Region, f: _Fields) -> NDArray[np.float32]:
    """Field parcels (soil colours, plough stripes, hedges) and grass parcels."""
    texture = fbm(region.ys(), region.xs(), seed=spec.seed, scale=24.0, octaves=3, stream=_S_TEX_SOIL)
    soil_factor = np.float32(1.0) + np.float32(0.09) * texture + f.stripe
    grass_factor = np.float32(1.0) + np.float32(0.05) * texture + np.float32(0.2) * f.stripe
    factor = np.where(f.grass, grass_factor, soil_factor)
    del texture, grass_factor
    image = np.empty((spec.bands, *region.shape), dtype=np.float32)
    for b in range(spec.bands):
        np.multiply(_FIELDS[f.parcel, b], factor, out=image[b])
        image[b][f.parcel_edge] = _HEDGE[b] * soil_factor[f.parcel_edge]
    return image


def _paint_forest(spec: SatelliteSceneSpec, region: _Region, f: _Fields, image: NDArray) -> None:
    ys, xs = region.ys(), region.xs()
    crown = fbm(ys, xs, seed=spec.seed, scale=7.0, octaves=2, stream=_S_TEX_CROWN)
    stand = fbm(ys, xs, seed=spec.seed, scale=90.0, octaves=2, stream=_S_TEX_FOREST)
    factor = np.float32(1.0) + np.float32(0.45) * crown + np.float32(0.15) * stand
    alpha = _soft(f.forest, _threshold(spec.forest_cover), 0.008)
    for b in range(spec.bands):
        _blend(image, b, _FOREST[b] * factor, alpha)


def _coverage(hit: _LineHit) -> NDArray[np.float32]:
    """Anti-aliased band opacity: 1 inside, 0 beyond half a pixel outside the label edge."""
    return np.clip(hit.line.half_width + 0.5 - hit.distance, 0.0, 1.0).astype(np.float32)


def _paint_water(spec: SatelliteSceneSpec, region: _Region, f: _Fields, image: NDArray) -> None:
    ys, xs = region.ys(), region.xs()
    sediment = fbm(ys, xs, seed=spec.seed, scale=150.0, octaves=3, stream=_S_TEX_WATER)
    alpha = _soft(f.lake, _threshold(spec.lake_cover), 0.004)
    for hit in f.rivers:
        view = alpha[region.crop(hit.slab)]
        np.maximum(view, _coverage(hit), out=view)
    for b in range(spec.bands):
        _blend(image, b, _WATER[b] + _SEDIMENT[b] * sediment, alpha)


def _paint_roads(f: _Fields, region: _Region, fine: NDArray, image: NDArray) -> None:
    for hit in f.roads:
        crop = region.crop(hit.slab)
        alpha = _coverage(hit)
        factor = np.float32(hit.line.shade) * (np.float32(1.0) + np.float32(0.06) * fine[crop])
        dashes = hit.along / 16.0
        paint = (hit.distance < 0.9) & (dashes - np.floor(dashes) < 0.5)
        paint &= hit.line.half_width >= 4.5
        for b in range(image.shape[0]):
            colour = np.where(paint, _PAINT[b], _ASPHALT[b] * factor)
            view = image[b][crop]
            view += (colour - view) * alpha


def _roof_factor(height: int, width: int) -> NDArray[np.float32]:
    """Gabled shading (lit and shaded halves) with a darker one-pixel rim."""
    r = np.arange(height)[:, None]
    c = np.arange(width)[None, :]
    lit = (2 * r < height) if width >= height else (2 * c < width)
    factor = np.where(lit, np.float32(1.08), np.float32(0.9))
    rim = (r == 0) | (r == height - 1) | (c == 0) | (c == width - 1)
    return np.where(rim, np.float32(0.72), factor).astype(np.float32)


def _paint_buildings(
    b: _Buildings, region: _Region, fine: NDArray, image: NDArray, labels: tuple[NDArray, NDArray]
) -> None:
    """Cast shadows on the ground, then roofs; stamp semantic and instance labels."""
    semantic, instance = labels
    for i in range(b.ids.size):
        s = int(b.shadow[i])
        y, x = int(b.top[i]) - region.y0 + s, int(b.left[i]) - region.x0 + s
        image[:, y : y + int(b.height[i]), x : x + int(b.width[i])] *= np.float32(0.52)
    for i in range(b.ids.size):
        h, w = int(b.height[i]), int(b.width[i])
        y, x = int(b.top[i]) - region.y0, int(b.left[i]) - region.x0
        crop = (slice(y, y + h), slice(x, x + w))
        shade = _roof_factor(h, w) * (np.float32(1.0) + np.float32(0.05) * fine[crop])
        shade *= b.brightness[i]
        for band in range(image.shape[0]):
            image[band][crop] = _ROOFS[b.roof[i], band] * shade
        semantic[crop] = BUILDING
        instance[crop] = b.ids[i]


def _atmosphere(spec: SatelliteSceneSpec, region: _Region, image: NDArray) -> None:
    """Low-frequency illumination gain, haze and per-pixel sensor noise."""
    ys, xs = region.ys(), region.xs()
    gain = np.float32(1.0) + np.float32(0.1) * fbm(ys, xs, seed=spec.seed, scale=1500.0, octaves=2, stream=_S_ILLUM)
    haze = fbm(ys, xs, seed=spec.seed, scale=2500.0, octaves=2, stream=_S_HAZE)
    haze = np.float32(spec.haze * 0.5) * (haze + np.float32(1.0))
    gain *= np.float32(1.0) - haze
    sigma = np.float32(spec.noise_level * math.sqrt(6.0))
    for b in range(spec.bands):
        h = hash_u64(ys, xs, spec.seed, _S_NOISE + b)
        noise = (_unit(h, 0) + _unit(h, 24) - np.float32(1.0)) * sigma  # triangular, std = noise_level
        image[b] *= gain
        image[b] += haze * _HAZE_COLOUR[b] + noise


def render(spec: SatelliteSceneSpec, window: WindowLike | None = None) -> SceneWindow:
    """Render one window of a synthetic scene.

    The result is a pure function of ``spec`` and the global pixel coordinates:
    a window equals the same crop of any larger window, bit for bit. Cost and
    memory grow with the window area (a few float32 arrays of the window grown to
    whole building cells), never with the scene size.

    Parameters
    ----------
    spec : SatelliteSceneSpec
        The scene.
    window : Window, optional
        ``segcore.geometry.window.Window`` (or any object with 2-D ``start`` and
        ``stop``) inside the scene; default: the whole scene (mind its size).

    Returns
    -------
    SceneWindow
        ``image`` ``(bands, h, w)`` uint8, ``semantic`` ``(h, w)`` uint8 and
        ``instance`` ``(h, w)`` uint32 of the window.

    Raises
    ------
    ConfigError
        If the window is empty, not 2-D or not inside the scene.

    Examples
    --------
    >>> from segcore.geometry.window import Window
    >>> spec = SatelliteSceneSpec(seed=3, height=96, width=128)
    >>> whole = render(spec)
    >>> part = render(spec, Window((10, 20), (40, 100)))
    >>> part.image.shape, part.semantic.dtype.name, part.instance.dtype.name
    ((3, 30, 80), 'uint8', 'uint32')
    >>> bool(np.array_equal(part.image, whole.image[:, 10:40, 20:100]))
    True
    """
    if not isinstance(spec, SatelliteSceneSpec):
        raise ConfigError(f"spec: expected a SatelliteSceneSpec, received {type(spec).__name__}")
    target = _window_region(spec, window)
    region = _cell_aligned(target, spec.cell_size)
    fields = _fields(spec, region)
    buildings = _buildings(spec, region, fields.semantic)
    fine = fbm(region.ys(), region.xs(), seed=spec.seed, scale=3.0, octaves=2, stream=_S_TEX_FINE)
    image = _paint_ground(spec, region, fields)
    _paint_forest(spec, region, fields, image)
    _paint_water(spec, region, fields, image)
    _paint_roads(fields, region, fine, image)
    semantic = fields.semantic
    instance = np.zeros(region.shape, dtype=np.uint32)
    _paint_buildings(buildings, region, fine, image, (semantic, instance))
    _atmosphere(spec, region, image)
    crop = region.crop(target)
    pixels = np.clip(image[(slice(None), *crop)] + np.float32(0.5), 0.0, 255.0).astype(np.uint8)
    return SceneWindow(pixels, semantic[crop].copy(), instance[crop].copy())
