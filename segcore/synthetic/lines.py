"""Roads and rivers: a short list of long bands drawn from the seed.

A :class:`Line` is a straight (road) or meandering (river) band crossing the
whole scene. The lines of a scene depend on the seed and the scene size only;
:func:`trace` evaluates one on the slab of a region it can reach, so the cost of
a window does not depend on the scene size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from segcore.synthetic import streams
from segcore.synthetic.noise import fbm1d
from segcore.synthetic.region import Region
from segcore.synthetic.spec import SatelliteSceneSpec

__all__ = ["Line", "LineHit", "rivers", "roads", "trace"]


@dataclass(frozen=True)
class Line:
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


def roads(spec: SatelliteSceneSpec) -> tuple[Line, ...]:
    """The roads of the scene: mostly near-axis, some diagonal, 6-14 px wide."""
    rng = np.random.default_rng([spec.seed, streams.LINES, 1])
    lines = []
    for i in range(_line_count(spec.road_density, spec, 2)):
        if rng.random() < 0.7:  # near-axis roads
            angle = (90.0 if rng.random() < 0.5 else 0.0) + rng.normal(0.0, 4.0)
        else:  # diagonal roads
            angle = rng.uniform(25.0, 65.0) + (90.0 if rng.random() < 0.5 else 0.0)
        a = math.radians(angle)
        lines.append(
            Line(
                py=float(rng.uniform(0, spec.height)),
                px=float(rng.uniform(0, spec.width)),
                uy=math.sin(a),
                ux=math.cos(a),
                half_width=float(rng.uniform(3.0, 7.0)),
                wobble=float(rng.uniform(0.0, 6.0)),
                wobble_scale=600.0,
                stream=streams.LINES + 2 * i,
                shade=float(rng.choice([0.85, 0.95, 1.0, 1.1, 1.3])),
            )
        )
    return tuple(lines)


def rivers(spec: SatelliteSceneSpec) -> tuple[Line, ...]:
    """The rivers of the scene: any direction, meandering, 12-28 px wide."""
    rng = np.random.default_rng([spec.seed, streams.LINES, 2])
    lines = []
    for i in range(_line_count(spec.river_density, spec, 0)):
        a = rng.uniform(0.0, math.pi)
        lines.append(
            Line(
                py=float(rng.uniform(0, spec.height)),
                px=float(rng.uniform(0, spec.width)),
                uy=math.sin(a),
                ux=math.cos(a),
                half_width=float(rng.uniform(6.0, 14.0)),
                wobble=float(rng.uniform(25.0, 80.0)),
                wobble_scale=float(rng.uniform(250.0, 500.0)),
                stream=streams.LINES + 2 * i + 1,
                shade=float(rng.uniform(0.85, 1.15)),
            )
        )
    return tuple(lines)


def _line_slab(line: Line, region: Region) -> Region | None:
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
        return Region(lo, region.x0, hi, region.x1) if lo < hi else None
    ends = [
        line.px + ((y - line.py) * line.ux - s) / line.uy
        for s in (-r, r)
        for y in (region.y0, region.y1 - 1)
    ]
    lo, hi = max(region.x0, math.floor(min(ends)) - 1), min(region.x1, math.ceil(max(ends)) + 2)
    return Region(region.y0, lo, region.y1, hi) if lo < hi else None


@dataclass(frozen=True)
class LineHit:
    """A line evaluated on a slab: distance to the (meandering) axis and position along it."""

    line: Line
    slab: Region
    distance: NDArray[np.float32]
    along: NDArray[np.float32]


def trace(line: Line, region: Region, seed: int) -> LineHit | None:
    """``line`` evaluated on the part of ``region`` it can reach; None if it misses it."""
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
    return LineHit(line, slab, np.abs(signed).astype(np.float32), along.astype(np.float32))
