"""Painting the image of a region: colours, textures, buildings and the atmosphere.

Layers are painted in order on a float32 ``(bands, h, w)`` image: ground
(parcels, hedges, plough stripes), forest, water, roads, buildings (cast shadows,
then roofs), then illumination, haze and sensor noise (:func:`atmosphere`). Label
edges are crisp while image edges are slightly soft: opacity ramps are centred on
the label edges.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from segcore.synthetic import palette, streams
from segcore.synthetic.buildings import Buildings, footprint
from segcore.synthetic.classes import BUILDING
from segcore.synthetic.landcover import Fields, threshold
from segcore.synthetic.lines import LineHit
from segcore.synthetic.noise import fbm, hash_u64
from segcore.synthetic.region import Region
from segcore.synthetic.spec import SatelliteSceneSpec
from segcore.synthetic.streams import unit

__all__ = [
    "atmosphere",
    "paint_buildings",
    "paint_forest",
    "paint_ground",
    "paint_roads",
    "paint_water",
]


def _soft(field: NDArray[np.float32], level: float, width: float) -> NDArray[np.float32]:
    """Opacity ramp across ``field == level``: 0.5 on the (crisp) label edge."""
    alpha = (field - np.float32(level)) * np.float32(1.0 / width) + np.float32(0.5)
    return np.clip(alpha, np.float32(0.0), np.float32(1.0))


def _blend(image: NDArray[np.float32], band: int, colour: NDArray | float, alpha: NDArray) -> None:
    image[band] += (colour - image[band]) * alpha


def paint_ground(spec: SatelliteSceneSpec, region: Region, f: Fields) -> NDArray[np.float32]:
    """Field parcels (soil colours, plough stripes, hedges) and grass parcels."""
    texture = fbm(region.ys(), region.xs(), seed=spec.seed, scale=24.0, octaves=3, stream=streams.TEX_SOIL)
    soil_factor = np.float32(1.0) + np.float32(0.09) * texture + f.stripe
    grass_factor = np.float32(1.0) + np.float32(0.05) * texture + np.float32(0.2) * f.stripe
    factor = np.where(f.grass, grass_factor, soil_factor)
    del texture, grass_factor
    image = np.empty((spec.bands, *region.shape), dtype=np.float32)
    for b in range(spec.bands):
        np.multiply(palette.FIELDS[f.parcel, b], factor, out=image[b])
        image[b][f.parcel_edge] = palette.HEDGE[b] * soil_factor[f.parcel_edge]
    return image


def paint_forest(spec: SatelliteSceneSpec, region: Region, f: Fields, image: NDArray) -> None:
    """Forest with crown and stand texture, softly blended across its label edge."""
    ys, xs = region.ys(), region.xs()
    crown = fbm(ys, xs, seed=spec.seed, scale=7.0, octaves=2, stream=streams.TEX_CROWN)
    stand = fbm(ys, xs, seed=spec.seed, scale=90.0, octaves=2, stream=streams.TEX_FOREST)
    factor = np.float32(1.0) + np.float32(0.45) * crown + np.float32(0.15) * stand
    alpha = _soft(f.forest, threshold(spec.forest_cover), 0.008)
    for b in range(spec.bands):
        _blend(image, b, palette.FOREST[b] * factor, alpha)


def _coverage(hit: LineHit) -> NDArray[np.float32]:
    """Anti-aliased band opacity: 1 inside, 0 beyond half a pixel outside the label edge."""
    return np.clip(hit.line.half_width + 0.5 - hit.distance, 0.0, 1.0).astype(np.float32)


def paint_water(spec: SatelliteSceneSpec, region: Region, f: Fields, image: NDArray) -> None:
    """Lakes and rivers, with sediment variations."""
    ys, xs = region.ys(), region.xs()
    sediment = fbm(ys, xs, seed=spec.seed, scale=150.0, octaves=3, stream=streams.TEX_WATER)
    alpha = _soft(f.lake, threshold(spec.lake_cover), 0.004)
    for hit in f.rivers:
        view = alpha[region.crop(hit.slab)]
        np.maximum(view, _coverage(hit), out=view)
    for b in range(spec.bands):
        _blend(image, b, palette.WATER[b] + palette.SEDIMENT[b] * sediment, alpha)


def paint_roads(f: Fields, region: Region, fine: NDArray, image: NDArray) -> None:
    """Asphalt with a per-road shade and dashed centre lines on the wider roads."""
    for hit in f.roads:
        crop = region.crop(hit.slab)
        alpha = _coverage(hit)
        factor = np.float32(hit.line.shade) * (np.float32(1.0) + np.float32(0.06) * fine[crop])
        dashes = hit.along / 16.0
        paint = (hit.distance < 0.9) & (dashes - np.floor(dashes) < 0.5)
        paint &= hit.line.half_width >= 4.5
        for b in range(image.shape[0]):
            colour = np.where(paint, palette.PAINT[b], palette.ASPHALT[b] * factor)
            view = image[b][crop]
            view += (colour - view) * alpha


def _roof_factor(height: int, width: int, shape: NDArray[np.bool_] | None = None) -> NDArray[np.float32]:
    """Gabled shading (lit and shaded halves) with a darker one-pixel rim.

    ``shape`` (``(height, width)`` bool, default the whole box) is the building's
    :func:`~segcore.synthetic.buildings.footprint`: the rim follows its edge.
    """
    r = np.arange(height)[:, None]
    c = np.arange(width)[None, :]
    lit = (2 * r < height) if width >= height else (2 * c < width)
    factor = np.where(lit, np.float32(1.08), np.float32(0.9))
    if shape is None:
        rim = (r == 0) | (r == height - 1) | (c == 0) | (c == width - 1)
    else:
        inside = np.pad(shape, 1)
        interior = inside[:-2, 1:-1] & inside[2:, 1:-1] & inside[1:-1, :-2] & inside[1:-1, 2:]
        rim = shape & ~interior
    return np.where(rim, np.float32(0.72), factor).astype(np.float32)


def _footprint(b: Buildings, i: int) -> NDArray[np.bool_] | None:
    """Building ``i``'s footprint in its box; None for a plain rectangle."""
    if int(b.notch_height[i]) == 0 or int(b.notch_width[i]) == 0:
        return None
    notch = (int(b.notch_height[i]), int(b.notch_width[i]), int(b.notch_corner[i]))
    return footprint(int(b.height[i]), int(b.width[i]), notch)


def paint_buildings(
    b: Buildings, region: Region, fine: NDArray, image: NDArray, labels: tuple[NDArray, NDArray]
) -> None:
    """Cast shadows on the ground, then roofs; stamp semantic and instance labels."""
    semantic, instance = labels
    shapes = [_footprint(b, i) for i in range(b.ids.size)]
    for i, shape in enumerate(shapes):
        s = int(b.shadow[i])
        y, x = int(b.top[i]) - region.y0 + s, int(b.left[i]) - region.x0 + s
        view = image[:, y : y + int(b.height[i]), x : x + int(b.width[i])]
        if shape is None:
            view *= np.float32(0.52)
        else:
            view[:, shape] *= np.float32(0.52)
    for i, shape in enumerate(shapes):
        h, w = int(b.height[i]), int(b.width[i])
        y, x = int(b.top[i]) - region.y0, int(b.left[i]) - region.x0
        crop = (slice(y, y + h), slice(x, x + w))
        shade = _roof_factor(h, w, shape) * (np.float32(1.0) + np.float32(0.05) * fine[crop])
        shade *= b.brightness[i]
        where = np.s_[...] if shape is None else shape
        for band in range(image.shape[0]):
            image[band][crop][where] = (palette.ROOFS[b.roof[i], band] * shade)[where]
        semantic[crop][where] = BUILDING
        instance[crop][where] = b.ids[i]


def atmosphere(spec: SatelliteSceneSpec, region: Region, image: NDArray) -> None:
    """Low-frequency illumination gain, haze and per-pixel sensor noise."""
    ys, xs = region.ys(), region.xs()
    gain = np.float32(1.0) + np.float32(0.1) * fbm(ys, xs, seed=spec.seed, scale=1500.0, octaves=2, stream=streams.ILLUM)
    haze = fbm(ys, xs, seed=spec.seed, scale=2500.0, octaves=2, stream=streams.HAZE)
    haze = np.float32(spec.haze * 0.5) * (haze + np.float32(1.0))
    gain *= np.float32(1.0) - haze
    sigma = np.float32(spec.noise_level * math.sqrt(6.0))
    for b in range(spec.bands):
        h = hash_u64(ys, xs, spec.seed, streams.NOISE + b)
        noise = (unit(h, 0) + unit(h, 24) - np.float32(1.0)) * sigma  # triangular, std = noise_level
        image[b] *= gain
        image[b] += haze * palette.HAZE[b] + noise
