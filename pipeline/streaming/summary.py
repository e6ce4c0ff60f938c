"""Per-class pixel counts and ground areas, streamed chunk by chunk.

Area method (README "Areas"): projected CRS: every pixel covers the planar map
area |det(A)| of the affine transform A, times the square of the CRS's linear
unit in metres. Geographic CRS: pixel rows of a north-up grid get their exact
area on the CRS ellipsoid (the zone between two parallels over the pixel's
longitude span); rotated geographic grids use the ellipsoidal area element at
each pixel centre. See ``segcore.geodesy``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import zarr

from pipeline.io.geotiff import RasterInfo
from pipeline.store import iter_blocks
from segcore.geodesy import ellipsoid_from_wkt, pixel_areas


@dataclass
class ClassTotals:
    """Running totals over chunks: pixels and m² per class id, plus nodata pixels."""

    num_classes: int
    pixels: np.ndarray = field(init=False)
    area_m2: np.ndarray = field(init=False)
    nodata_pixels: int = 0

    def __post_init__(self) -> None:
        self.pixels = np.zeros(self.num_classes, dtype=np.int64)
        self.area_m2 = np.zeros(self.num_classes, dtype=np.float64)

    def add(self, labels: np.ndarray, areas: np.ndarray) -> None:
        """Add a block ``(h, w)`` of class ids with its per-pixel areas (broadcastable)."""
        k = self.num_classes
        inside = labels < k
        self.nodata_pixels += int(labels.size - inside.sum())
        lab = labels[inside].astype(np.int64)
        self.pixels += np.bincount(lab, minlength=k)[:k]
        weights = np.broadcast_to(areas, labels.shape)[inside]
        self.area_m2 += np.bincount(lab, weights=weights, minlength=k)[:k]

    def to_dict(self, names: list[str], *, unit: str = "area_m2", scale: float = 1.0) -> dict:
        """Per class name: ``{"pixels": n, unit: total * scale}``."""
        return {
            name: {"pixels": int(self.pixels[i]), unit: float(self.area_m2[i] * scale)}
            for i, name in enumerate(names)
        }


def summarise_semantic(semantic: zarr.Array, info: RasterInfo, num_classes: int) -> ClassTotals:
    """Stream ``semantic`` chunk by chunk into class totals (nodata left out)."""
    a, rf = ellipsoid_from_wkt(info.crs_wkt)
    totals = ClassTotals(num_classes)
    for rows, cols in iter_blocks(semantic.shape, semantic.chunks):
        block = semantic[rows, cols]
        areas = pixel_areas(
            info.transform, (rows.start, rows.stop), (cols.start, cols.stop),
            geographic=info.is_geographic, linear_unit_m=info.linear_unit_m, a=a, rf=rf,
        )
        totals.add(block, areas)
    return totals


def summarise_volume(semantic: zarr.Array, spacing_mm: tuple[float, ...], num_classes: int) -> ClassTotals:
    """Voxel counts per class; ``area_m2`` holds the volume in mL (voxel mm³ / 1000).

    Report with ``totals.to_dict(names, unit="volume_ml")``.
    """
    voxel_ml = float(np.prod(spacing_mm)) / 1000.0
    totals = ClassTotals(num_classes)
    for key in iter_blocks(semantic.shape, semantic.chunks):
        totals.add(semantic[key], np.float64(voxel_ml))
    return totals
