"""Ground sample distance: does a 2-D scene's pixel size match the model's?

A model made elsewhere may declare the resolution it was trained at (``ModelSpec.resolution``,
metres per pixel: an ONNX file's ``resolution`` metadata in cm/px, an MLM item's ``gsd``).
A georeferenced scene's pixel size is the square root of the ground area of its
centre pixel (:mod:`pipeline.formats.ground_areas`: metres on the CRS's ellipsoid,
so a geographic CRS is converted at the scene centre). When the two differ by more
than :data:`TOLERANCE` (relative), the run goes on at the scene's own resolution and
says so in one warning line; 2-D resampling is not done.
"""

from __future__ import annotations

import logging
import math

import numpy as np

log = logging.getLogger(__name__)

TOLERANCE = 0.10  # relative difference of the pixel sizes that is still a match


def scene_gsd_m(crs_wkt: str, transform: tuple[float, ...], shape: tuple[int, int], *,
                is_geographic: bool, linear_unit_m: float | None) -> float | None:
    """Metres per pixel at the centre of a ``shape`` ``(rows, cols)`` grid; None without
    a CRS (the unit is unknown)."""
    from pipeline.formats.ground_areas import GroundAreas

    if not crs_wkt or (not is_geographic and linear_unit_m is None):
        return None
    r, c = shape[0] // 2, shape[1] // 2
    areas = GroundAreas(crs_wkt, tuple(transform)[:6], is_geographic, linear_unit_m)
    area = float(np.asarray(areas((slice(r, r + 1), slice(c, c + 1)))).ravel()[0])
    return math.sqrt(area) if area > 0 else None


def resolution_mismatch(path: str, scene_m: float | None, model_m: float | None, *,
                        model_name: str, tolerance: float = TOLERANCE) -> str | None:
    """The warning line when ``scene_m`` and ``model_m`` (metres per pixel) differ by
    more than ``tolerance`` (relative to the model's), else None.

    Examples
    --------
    >>> resolution_mismatch("a.tif", 0.5, 0.5, model_name="m") is None
    True
    >>> resolution_mismatch("a.tif", 5.0, 0.5, model_name="fields")  # doctest: +NORMALIZE_WHITESPACE
    "a.tif: pixels of 5 m, model 'fields' expects 0.5 m (10x coarser); running at the
    scene's resolution, results may be poor"
    """
    if scene_m is None or model_m is None or abs(scene_m - model_m) <= tolerance * model_m:
        return None
    ratio = scene_m / model_m
    how = f"{ratio:.3g}x coarser" if ratio > 1 else f"{1 / ratio:.3g}x finer"
    return (f"{path}: pixels of {scene_m:.3g} m, model '{model_name}' expects {model_m:.3g} m "
            f"({how}); running at the scene's resolution, results may be poor")


def warn_resolution(info, spec) -> str | None:
    """Log (warning) and return the mismatch line of a raster ``info``
    (:class:`pipeline.io.geotiff.RasterInfo`) against a model ``spec``, if any."""
    if spec.ndim != 2 or spec.resolution is None:
        return None
    scene_m = scene_gsd_m(info.crs_wkt, tuple(info.transform), tuple(info.shape),
                          is_geographic=info.is_geographic, linear_unit_m=info.linear_unit_m)
    line = resolution_mismatch(str(info.path), scene_m, spec.resolution, model_name=spec.name)
    if line:
        log.warning(line)
    return line
