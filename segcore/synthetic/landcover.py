"""Ground cover before buildings: field parcels, grass, forest, lakes, rivers and roads.

:func:`fields` evaluates the continuous fields (fbm noise, parcels) on a region
and burns them into ground labels: vegetation (grass parcels, forest), water
(lakes, rivers) and roads, in that order of precedence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from numpy.typing import NDArray

from segcore.synthetic import palette, streams
from segcore.synthetic.classes import ROAD, VEGETATION, WATER
from segcore.synthetic.lines import LineHit, rivers, roads, trace
from segcore.synthetic.noise import fbm, hash_u64, hash_uniform
from segcore.synthetic.region import Region
from segcore.synthetic.spec import SatelliteSceneSpec
from segcore.synthetic.streams import bits, unit

__all__ = ["Fields", "fields", "threshold"]

_FBM_STD = 0.275  # empirical standard deviation of fbm(octaves=4)
_PARCEL_H, _PARCEL_W = 112, 160
# Plough-stripe directions: a fixed table (Python math, evaluated once).
_STRIPE_DIRS = np.array(
    [[math.sin(k * math.pi / 8), math.cos(k * math.pi / 8)] for k in range(8)], dtype=np.float32
)


def threshold(cover: float) -> float:
    """fbm level exceeded by about ``cover`` of the pixels (normal approximation)."""
    if cover <= 0:
        return 2.0  # fbm never reaches it
    return _FBM_STD * NormalDist().inv_cdf(1.0 - cover)


@dataclass(frozen=True)
class Fields:
    """Continuous fields and ground labels on a region (before buildings)."""

    parcel: NDArray[np.uint8]
    parcel_edge: NDArray[np.bool_]
    stripe: NDArray[np.float32]
    grass: NDArray[np.bool_]
    forest: NDArray[np.float32]
    lake: NDArray[np.float32]
    rivers: tuple[LineHit, ...]
    roads: tuple[LineHit, ...]
    semantic: NDArray[np.uint8]


def _parcels(
    spec: SatelliteSceneSpec, region: Region
) -> tuple[NDArray[np.uint8], NDArray[np.bool_], NDArray[np.float32]]:
    """Field parcels in a brick layout: palette index, hedge mask, plough stripes.

    The palette index points into ``palette.FIELDS``: soils first, then grass (vegetation).
    """
    ys, xs = region.ys(), region.xs()
    row = ys // _PARCEL_H
    shift = hash_uniform(row, 0, spec.seed, streams.PARCEL_ROW).astype(np.float64) * _PARCEL_W
    u = (xs + shift) / _PARCEL_W
    col = np.floor(u)
    edge = ((ys - row * _PARCEL_H) < 2) | ((u - col) * _PARCEL_W < 2.0)
    del u
    h = hash_u64(row, col.astype(np.int64), spec.seed, streams.PARCEL)
    del col
    grass = unit(h, 40) < np.float32(spec.grass_fraction)
    kind = np.where(
        grass, len(palette.SOIL) + bits(h, 28, len(palette.GRASS)), bits(h, 20, len(palette.SOIL))
    )
    direction = bits(h, 3, 8)
    t = ys.astype(np.float32) * _STRIPE_DIRS[direction, 0]
    t += xs.astype(np.float32) * _STRIPE_DIRS[direction, 1]
    t /= (5 + bits(h, 6, 6)).astype(np.float32)
    t -= np.floor(t)
    t -= np.float32(0.5)
    stripe = np.abs(t) - np.float32(0.25)  # triangle wave in [-0.25, 0.25]
    stripe *= unit(h, 12) * np.float32(0.3)
    return kind.astype(np.uint8), edge, stripe


def fields(spec: SatelliteSceneSpec, region: Region) -> Fields:
    """Fields and ground labels (background, vegetation, water, road) on ``region``."""
    ys, xs = region.ys(), region.xs()
    parcel, edge, stripe = _parcels(spec, region)
    grass = (parcel >= len(palette.SOIL)) & ~edge
    forest = fbm(ys, xs, seed=spec.seed, scale=220.0, stream=streams.FOREST)
    lake = fbm(ys, xs, seed=spec.seed, scale=360.0, stream=streams.LAKE)
    semantic = np.zeros(region.shape, dtype=np.uint8)
    semantic[grass | (forest > threshold(spec.forest_cover))] = VEGETATION
    semantic[lake > threshold(spec.lake_cover)] = WATER
    river_hits = tuple(h for line in rivers(spec) if (h := trace(line, region, spec.seed)))
    road_hits = tuple(h for line in roads(spec) if (h := trace(line, region, spec.seed)))
    for hits, cls in ((river_hits, WATER), (road_hits, ROAD)):
        for hit in hits:
            view = semantic[region.crop(hit.slab)]
            view[hit.distance <= hit.line.half_width] = cls
    return Fields(parcel, edge, stripe, grass, forest, lake, river_hits, road_hits, semantic)
