"""Tests for segcore.geodesy: ellipsoid parsing and exact pixel areas."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segcore.errors import ConfigError
from segcore.geodesy import (
    WGS84,
    ellipsoid_from_wkt,
    ellipsoid_surface_area,
    geographic_row_areas,
    pixel_areas,
)

A_WGS, RF_WGS = WGS84
# GeographicLib's value for the WGS 84 ellipsoid (Karney), in m².
WGS84_AREA_M2 = 510065621724088.37


def _integral_area(phi1_deg: float, phi2_deg: float, dlon_deg: float, a: float,
                   rf: float) -> float:
    """Gauss-Legendre integral of M(phi) N(phi) cos(phi) dphi dlambda."""
    e2 = 0.0 if rf == 0 else (2.0 - 1.0 / rf) / rf
    nodes, weights = np.polynomial.legendre.leggauss(40)
    lo, hi = math.radians(min(phi1_deg, phi2_deg)), math.radians(max(phi1_deg, phi2_deg))
    phi = 0.5 * (hi - lo) * nodes + 0.5 * (hi + lo)
    w2 = 1.0 - e2 * np.sin(phi) ** 2
    m = a * (1.0 - e2) / w2**1.5
    n = a / np.sqrt(w2)
    integral = 0.5 * (hi - lo) * np.sum(weights * m * n * np.cos(phi))
    return float(integral * math.radians(abs(dlon_deg)))


# --------------------------------------------------------------------------- ellipsoids


@pytest.mark.parametrize(
    ("wkt", "expected"),
    [
        ('PROJCS["UTM",GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,'
         '298.257223563,AUTHORITY["EPSG","7030"]]]]]', (6378137.0, 298.257223563)),
        ('GEOGCRS["x",DATUM["y",ELLIPSOID["GRS 1980",6378137,298.257222101,'
         'LENGTHUNIT["metre",1]]]]', (6378137.0, 298.257222101)),
        ('GEOGCS["s",DATUM["d",SPHEROID["Sphere ""quoted""",6371007.181,0]]]', (6371007.181, 0.0)),
        ('ellipsoid["lower case",6.378388e6,297.0]', (6378388.0, 297.0)),
        ('LOCAL_CS["engineering"]', WGS84),
        ("", WGS84),
    ],
)
def test_ellipsoid_from_wkt(wkt: str, expected: tuple[float, float]) -> None:
    assert ellipsoid_from_wkt(wkt) == pytest.approx(expected, rel=1e-15)


@pytest.mark.parametrize("wkt", ['SPHEROID["bad",-5,298]', 'SPHEROID["bad",6378137,0.5]'])
def test_ellipsoid_from_wkt_rejects_nonsense(wkt: str) -> None:
    with pytest.raises(ConfigError, match="expected"):
        ellipsoid_from_wkt(wkt)


def test_total_area_matches_geographiclib() -> None:
    assert ellipsoid_surface_area(A_WGS, RF_WGS) == pytest.approx(WGS84_AREA_M2, rel=1e-13)
    assert ellipsoid_surface_area(6371000.0, 0.0) == pytest.approx(4 * math.pi * 6371000.0**2)


# --------------------------------------------------------------------------- row areas


@pytest.mark.parametrize(("dlat", "dlon", "cols"),
                         [(-0.1, 0.1, 3600), (0.25, 360.0, 1), (-1.0, 1.0, 360)])
def test_whole_globe_sums_to_ellipsoid_area(dlat: float, dlon: float, cols: int) -> None:
    rows = round(180 / abs(dlat))
    top = 90.0 if dlat < 0 else -90.0
    total = geographic_row_areas(top, dlat, dlon, rows, a=A_WGS, rf=RF_WGS).sum() * cols
    assert total == pytest.approx(WGS84_AREA_M2, rel=1e-9)


@pytest.mark.parametrize("lat", [-89.9999, -60.0, -1e-4, 0.0, 12.345, 45.0, 60.0, 89.9])
@pytest.mark.parametrize("dlat", [-1e-4, -0.01, -1.0])
def test_row_area_matches_numerical_integral(lat: float, dlat: float) -> None:
    top = min(lat - dlat, 90.0)
    area = geographic_row_areas(top, dlat, 1e-4, 1, a=A_WGS, rf=RF_WGS)[0]
    assert area == pytest.approx(_integral_area(top, top + dlat, 1e-4, A_WGS, RF_WGS), rel=1e-11)


@settings(max_examples=60, deadline=None)
@given(
    lat=st.floats(-89.0, 89.0),
    dlat=st.floats(1e-7, 1.0),
    rf=st.one_of(st.floats(150.0, 1e6), st.just(RF_WGS)),
)
def test_row_area_property_vs_integral(lat: float, dlat: float, rf: float) -> None:
    area = geographic_row_areas(lat, -dlat, 0.5, 1, a=A_WGS, rf=rf)[0]
    assert area == pytest.approx(_integral_area(lat, lat - dlat, 0.5, A_WGS, rf), rel=1e-10)


@pytest.mark.parametrize("lat", [-75.0, 0.0, 33.3, 60.0])
def test_sphere_formula_and_small_eccentricity_limit(lat: float) -> None:
    # rows 1 degree tall keep the textbook difference of sines well conditioned
    radius, dlat, dlon = 6371000.0, -1.0, 2.0
    sines = math.sin(math.radians(lat)) - math.sin(math.radians(lat + dlat))
    exact = radius**2 * math.radians(dlon) * sines
    sphere = geographic_row_areas(lat, dlat, dlon, 1, a=radius, rf=0.0)[0]
    assert sphere == pytest.approx(exact, rel=1e-11)
    nearly = geographic_row_areas(lat, dlat, dlon, 1, a=radius, rf=1e12)[0]
    assert nearly == pytest.approx(exact, rel=1e-9)  # continuous as e -> 0
    assert geographic_row_areas(lat, dlat, dlon, 1, a=radius, rf=math.inf)[0] == sphere


def test_sign_of_steps_does_not_matter_and_rows_are_contiguous() -> None:
    down = geographic_row_areas(10.0, -0.5, 0.5, 4, a=A_WGS, rf=RF_WGS)
    up = geographic_row_areas(8.0, 0.5, -0.5, 4, a=A_WGS, rf=RF_WGS)
    np.testing.assert_allclose(down, up[::-1], rtol=1e-14)
    block = geographic_row_areas(10.0, -2.0, 0.5, 1, a=A_WGS, rf=RF_WGS)[0]
    assert down.sum() == pytest.approx(block, rel=1e-13)


def test_edges_slightly_past_the_pole_are_clamped_far_past_rejected() -> None:
    areas = geographic_row_areas(90.05, -0.1, 0.1, 2, a=A_WGS, rf=RF_WGS)
    clamped = geographic_row_areas(90.0, -0.05, 0.1, 1, a=A_WGS, rf=RF_WGS)[0]
    assert areas[0] == pytest.approx(clamped, rel=1e-14)
    with pytest.raises(ConfigError, match="latitude"):
        geographic_row_areas(95.0, -0.1, 0.1, 2, a=A_WGS, rf=RF_WGS)
    with pytest.raises(ConfigError, match="finite"):
        geographic_row_areas(math.nan, -0.1, 0.1, 2, a=A_WGS, rf=RF_WGS)
    with pytest.raises(ConfigError, match="rows"):
        geographic_row_areas(0.0, -0.1, 0.1, -1, a=A_WGS, rf=RF_WGS)


# --------------------------------------------------------------------------- pixel_areas


def test_projected_10m_pixels_are_100_m2() -> None:
    areas = pixel_areas((10.0, 0.0, 5e5, 0.0, -10.0, 6e6), (3, 8), (0, 4),
                        geographic=False, linear_unit_m=1.0, a=A_WGS, rf=RF_WGS)
    assert areas.shape == (5, 1)
    np.testing.assert_array_equal(areas, 100.0)
    feet = pixel_areas((10.0, 0.0, 0.0, 0.0, -10.0, 0.0), (0, 1), (0, 1),
                       geographic=False, linear_unit_m=0.3048, a=A_WGS, rf=RF_WGS)
    assert feet[0, 0] == pytest.approx(100 * 0.3048**2)


def test_projected_rotated_uses_determinant() -> None:
    theta = math.radians(30)
    cos, sin = 10 * math.cos(theta), 10 * math.sin(theta)
    t = (cos, -sin, 0.0, -sin, -cos, 0.0)
    areas = pixel_areas(t, (0, 2), (0, 2), geographic=False, linear_unit_m=1.0, a=A_WGS, rf=RF_WGS)
    np.testing.assert_allclose(areas, 100.0, rtol=1e-14)


def test_geographic_latitude_60_vs_equator() -> None:
    step = 1e-4

    def one(lat_top: float) -> float:
        t = (step, 0.0, 10.0, 0.0, -step, lat_top)
        areas = pixel_areas(t, (0, 1), (0, 1), geographic=True, linear_unit_m=None,
                            a=A_WGS, rf=RF_WGS)
        return float(areas[0, 0])

    equator, sixty = one(step / 2), one(60.0 + step / 2)
    half = step / 2
    assert equator == pytest.approx(_integral_area(half, -half, step, A_WGS, RF_WGS), rel=1e-11)
    assert sixty == pytest.approx(_integral_area(60 + half, 60 - half, step, A_WGS, RF_WGS),
                                  rel=1e-11)
    # cos(60) = 0.5, and the ellipsoid's larger meridian radius at 60° adds ~1%.
    assert sixty / equator == pytest.approx(0.5, rel=0.02)
    assert sixty / equator > 0.5
    assert equator == pytest.approx(11.1319 * 11.0574, rel=1e-4)  # 1e-4 deg of longitude x latitude


def test_geographic_window_offset_and_shape() -> None:
    t = (0.01, 0.0, 0.0, 0.0, -0.01, 50.0)
    geo = dict(geographic=True, linear_unit_m=None, a=A_WGS, rf=RF_WGS)
    full = pixel_areas(t, (0, 10), (0, 7), **geo)  # type: ignore[arg-type]
    part = pixel_areas(t, (4, 9), (2, 5), **geo)  # type: ignore[arg-type]
    assert full.shape == (10, 1) and part.shape == (5, 1)
    np.testing.assert_allclose(part, full[4:9], rtol=1e-14)


def test_geographic_rotated_midpoint_close_to_exact() -> None:
    exact_t = (1e-3, 0.0, 5.0, 0.0, -1e-3, 45.0)
    tilt = 1e-9  # tiny shear: forces the midpoint path, same geometry to ~1e-6
    sheared_t = (1e-3, tilt, 5.0, tilt, -1e-3, 45.0)
    geo = dict(geographic=True, linear_unit_m=None, a=A_WGS, rf=RF_WGS)
    exact = pixel_areas(exact_t, (0, 6), (0, 4), **geo)  # type: ignore[arg-type]
    mid = pixel_areas(sheared_t, (0, 6), (0, 4), **geo)  # type: ignore[arg-type]
    assert mid.shape == (6, 4)
    np.testing.assert_allclose(mid, np.broadcast_to(exact, mid.shape), rtol=1e-8)


def test_pixel_areas_errors() -> None:
    with pytest.raises(ConfigError, match="invertible"):
        pixel_areas((1.0, 0.0, 0.0, 2.0, 0.0, 0.0), (0, 1), (0, 1), geographic=False,
                    linear_unit_m=1.0, a=A_WGS, rf=RF_WGS)
    with pytest.raises(ConfigError, match="linear_unit_m"):
        pixel_areas((1.0, 0.0, 0.0, 0.0, -1.0, 0.0), (0, 1), (0, 1), geographic=False,
                    linear_unit_m=None, a=A_WGS, rf=RF_WGS)
    with pytest.raises(ConfigError, match="window_rows"):
        pixel_areas((1.0, 0.0, 0.0, 0.0, -1.0, 0.0), (3, 1), (0, 1), geographic=False,
                    linear_unit_m=1.0, a=A_WGS, rf=RF_WGS)
    with pytest.raises(ConfigError, match="latitude"):
        pixel_areas((1.0, 0.5, 0.0, 0.5, -1.0, 120.0), (0, 2), (0, 2), geographic=True,
                    linear_unit_m=None, a=A_WGS, rf=RF_WGS)
