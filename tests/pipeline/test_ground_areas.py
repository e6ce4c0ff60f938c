"""Pixel and class areas in projected CRSs are areas on the ellipsoid (checked with pyproj.Geod).

References are geodesic polygons of the footprint (edges densified: a geodesic and the
image of a straight map edge differ over kilometres) or of single pixels, on the CRS's
own ellipsoid. Tolerance 0.1 %; the method achieves about 1e-7 (see the module docs).
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import zarr
from pyproj import CRS, Geod, Transformer

from pipeline.formats.geotiff import GEOTIFF, GeoTiffScene, ground_areas
from pipeline.formats.ground_areas import GroundAreas
from pipeline.io.geotiff import open_raster

TOLERANCE = 1e-3


def _grid(epsg: str, lon: float, lat: float, pixel: float, *, rotate_deg: float = 0.0,
          centred: bool = False, size: int = 512) -> tuple[CRS, tuple[float, ...]]:
    crs = CRS.from_user_input(epsg)
    x0, y0 = Transformer.from_crs(crs.geodetic_crs, crs, always_xy=True).transform(lon, lat)
    t = np.radians(rotate_deg)
    a, b, d, e = pixel * np.cos(t), pixel * np.sin(t), pixel * np.sin(t), -pixel * np.cos(t)
    if centred:  # the grid's centre on (lon, lat): e.g. a polar grid around the pole
        x0, y0 = x0 - (a + b) * size / 2, y0 - (d + e) * size / 2
    return crs, (a, b, x0, d, e, y0)


def _geodesic_area(crs: CRS, transform, rows: tuple[float, float], cols: tuple[float, float],
                   n: int = 64) -> float:
    """Area of the map quadrilateral rows x cols (pixel corners), edges densified."""
    ta, tb, tc, td, te, tf = transform
    s = np.linspace(0.0, 1.0, n, endpoint=False)
    (r0, r1), (c0, c1) = rows, cols
    cs = np.r_[c0 + s * (c1 - c0), np.full(n, c1), c1 - s * (c1 - c0), np.full(n, c0)]
    rs = np.r_[np.full(n, r0), r0 + s * (r1 - r0), np.full(n, r1), r1 - s * (r1 - r0)]
    lon, lat = Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True).transform(
        ta * cs + tb * rs + tc, td * cs + te * rs + tf)
    ell = crs.ellipsoid
    area, _ = Geod(a=ell.semi_major_metre, rf=ell.inverse_flattening).polygon_area_perimeter(
        lon, lat)
    return abs(area)


def _scene_total(crs: CRS, transform, size: int, block: int = 128) -> float:
    unit = crs.axis_info[0].unit_conversion_factor
    areas = GroundAreas(crs.to_wkt(), tuple(transform), False, unit)
    total = 0.0
    for r in range(0, size, block):
        for c in range(0, size, block):
            got = areas((slice(r, r + block), slice(c, c + block)))
            total += float(np.broadcast_to(got, (block, block)).sum())
    return total


GRIDS = {
    "3857-lat0": ("EPSG:3857", 10.0, 0.0, 10.0, {}),
    "3857-lat30": ("EPSG:3857", 10.0, 30.0, 10.0, {}),
    "3857-lat60": ("EPSG:3857", 10.0, 60.0, 10.0, {}),
    "3857-lat75": ("EPSG:3857", 10.0, 75.0, 10.0, {}),
    "3857-lat60-1km-rotated": ("EPSG:3857", 10.0, 60.0, 1000.0, {"rotate_deg": 25.0}),
    "utm33n": ("EPSG:32633", 13.0, 45.0, 30.0, {}),
    "laea-europe": ("EPSG:3035", 30.0, 68.0, 100.0, {}),
    "polar-north-around-pole": ("EPSG:3413", -45.0, 90.0, 100.0, {"centred": True}),
    "polar-south": ("EPSG:3031", 60.0, -75.0, 500.0, {}),
}


@pytest.mark.parametrize("name", list(GRIDS))
def test_scene_area_matches_the_geodesic_footprint(name: str) -> None:
    epsg, lon, lat, pixel, kw = GRIDS[name]
    crs, transform = _grid(epsg, lon, lat, pixel, **kw)
    truth = _geodesic_area(crs, transform, (0, 512), (0, 512))
    assert _scene_total(crs, transform, 512) == pytest.approx(truth, rel=TOLERANCE)


@pytest.mark.parametrize("name", ["3857-lat75", "3857-lat60-1km-rotated", "polar-south"])
def test_single_pixels_match_their_geodesic_polygons(name: str) -> None:
    epsg, lon, lat, pixel, kw = GRIDS[name]
    crs, transform = _grid(epsg, lon, lat, pixel, **kw)
    unit = crs.axis_info[0].unit_conversion_factor
    areas = np.broadcast_to(GroundAreas(crs.to_wkt(), transform, False, unit)(
        (slice(64, 192), slice(100, 300))), (128, 200))
    for r, c in [(0, 0), (37, 151), (127, 199)]:
        truth = _geodesic_area(crs, transform, (64 + r, 65 + r), (100 + c, 101 + c), n=4)
        assert areas[r, c] == pytest.approx(truth, rel=TOLERANCE)


def test_class_areas_in_web_mercator_are_ground_areas(tmp_path) -> None:
    """summary.classes.*.area_m2 of report.json: the format's summarise pass."""
    crs, transform = _grid("EPSG:3857", 10.0, 60.0, 20.0)
    path = tmp_path / "mercator.tif"
    with rasterio.open(path, "w", driver="GTiff", width=256, height=256, count=1,
                       dtype="uint8", crs="EPSG:3857",
                       transform=rasterio.Affine(*transform)) as ds:
        ds.write(np.zeros((256, 256), np.uint8), 1)
    info = open_raster(path)
    labels = np.zeros((256, 256), np.uint8)
    labels[:, 128:] = 1
    labels[:16, :16] = 255  # nodata: counted nowhere
    semantic = zarr.create_array(tmp_path / "s.zarr", shape=labels.shape, chunks=(64, 64),
                                 dtype="uint8")
    semantic[:] = labels
    totals = GEOTIFF.summarise(semantic, GeoTiffScene(info, (1,), 0.0), 2)
    right = _geodesic_area(crs, transform, (0, 256), (128, 256))
    left = _geodesic_area(crs, transform, (0, 256), (0, 128)) - \
        _geodesic_area(crs, transform, (0, 16), (0, 16))
    assert totals.size[1] == pytest.approx(right, rel=TOLERANCE)
    assert totals.size[0] == pytest.approx(left, rel=TOLERANCE)
    assert totals.size[1] < 0.3 * 256 * 128 * 20.0**2  # the planar map area is ~4x larger
    assert ground_areas(info).is_geographic is False


def test_pixels_past_the_projections_domain_keep_their_planar_area() -> None:
    """An orthographic grid that runs past the horizon: corners PROJ cannot place give
    their cells the planar map area; the others are ground areas (larger than the map's
    towards the limb) and match their geodesic polygons."""
    crs = CRS.from_proj4("+proj=ortho +lat_0=0 +lon_0=0 +ellps=WGS84 +units=m")
    pixel = 20_000.0  # x from 4,000 to 9,120 km: the horizon lies near 6,378 km
    transform = (pixel, 0.0, 4_000_000.0, 0.0, -pixel, 2_000_000.0)
    areas = np.asarray(GroundAreas(crs.to_wkt(), transform, False, 1.0)(
        (slice(0, 128), slice(0, 256))))
    assert areas.shape == (128, 256) and np.isfinite(areas).all()
    to_geo = Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True)
    col, row = np.meshgrid(np.arange(257.0), np.arange(129.0))
    lon, lat = to_geo.transform(4_000_000.0 + pixel * col, 2_000_000.0 - pixel * row,
                                errcheck=False)
    placed = np.isfinite(np.asarray(lon)) & np.isfinite(np.asarray(lat))
    corners = placed[:-1, :-1] & placed[1:, :-1] & placed[:-1, 1:] & placed[1:, 1:]
    assert (~corners).sum() > 1000 and corners.sum() > 1000
    assert (areas[~corners] == pixel**2).all()
    assert (areas[corners] > pixel**2).all()
    for r, c in [(10, 10), (64, 60), (120, 90)]:
        assert corners[r, c]
        truth = _geodesic_area(crs, transform, (r, r + 1), (c, c + 1), n=4)
        assert areas[r, c] == pytest.approx(truth, rel=TOLERANCE)
