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
shadow; clustered near roads; never touching water or a road; with
``spec.large_buildings`` > 0 that fraction of them fills 55-90 % of its cell per
side instead, some L-shaped: far larger than a model's tile halo with ``cell_size``
128-256). The image adds a
low-frequency illumination gradient, haze and per-pixel sensor noise; label
edges are crisp while image edges are slightly soft.

The scene is built by one module per concept, all in :mod:`segcore.synthetic`:
:mod:`~segcore.synthetic.classes` (class table), :mod:`~segcore.synthetic.spec`
(:class:`SatelliteSceneSpec`), :mod:`~segcore.synthetic.region` (windows and
cell-aligned regions), :mod:`~segcore.synthetic.streams` (hash streams),
:mod:`~segcore.synthetic.lines` (roads and rivers),
:mod:`~segcore.synthetic.landcover` (parcels, forest, lakes: ground labels),
:mod:`~segcore.synthetic.buildings`, :mod:`~segcore.synthetic.palette` (colours)
and :mod:`~segcore.synthetic.paint` (the image). This module assembles them
(:func:`render`) and re-exports the public names.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from segcore.errors import ConfigError
from segcore.synthetic import streams
from segcore.synthetic.buildings import buildings
from segcore.synthetic.classes import SATELLITE_CLASSES, ClassInfo
from segcore.synthetic.landcover import fields
from segcore.synthetic.noise import fbm
from segcore.synthetic.paint import (
    atmosphere,
    paint_buildings,
    paint_forest,
    paint_ground,
    paint_roads,
    paint_water,
)
from segcore.synthetic.region import WindowLike, cell_aligned, window_region
from segcore.synthetic.spec import SatelliteSceneSpec

__all__ = [
    "SATELLITE_CLASSES",
    "ClassInfo",
    "SatelliteSceneSpec",
    "SceneWindow",
    "WindowLike",
    "render",
]

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
    target = window_region(spec, window)
    region = cell_aligned(target, spec.cell_size)
    ground = fields(spec, region)
    houses = buildings(spec, region, ground.semantic)
    fine = fbm(region.ys(), region.xs(), seed=spec.seed, scale=3.0, octaves=2, stream=streams.TEX_FINE)
    image = paint_ground(spec, region, ground)
    paint_forest(spec, region, ground, image)
    paint_water(spec, region, ground, image)
    paint_roads(ground, region, fine, image)
    semantic = ground.semantic
    instance = np.zeros(region.shape, dtype=np.uint32)
    paint_buildings(houses, region, fine, image, (semantic, instance))
    atmosphere(spec, region, image)
    crop = region.crop(target)
    pixels = np.clip(image[(slice(None), *crop)] + np.float32(0.5), 0.0, 255.0).astype(np.uint8)
    return SceneWindow(pixels, semantic[crop].copy(), instance[crop].copy())
