"""Pure area math for projected grids: quadrilateral cells and their interpolated pixels,
kept per cell (CellAreas), and the equal-area plane they are measured in."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segcore.errors import ConfigError
from segcore.geodesy import (CellAreas, equal_area_plane, node_grid_cell_areas,
                             node_grid_pixel_areas, quad_areas)


def _warped_nodes(seed: int, n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    v, u = np.meshgrid(np.arange(n + 1, dtype=float), np.arange(m + 1, dtype=float),
                       indexing="ij")
    x = 3.0 * u + 0.4 * v + rng.uniform(-0.3, 0.3, u.shape)
    y = -0.2 * u + 2.0 * v + rng.uniform(-0.3, 0.3, u.shape)
    return x, y


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 10**6), n=st.integers(1, 4), m=st.integers(1, 4),
       steps=st.lists(st.integers(1, 7), min_size=8, max_size=8))
def test_pixels_of_a_cell_sum_to_its_shoelace_area(seed, n, m, steps) -> None:
    x, y = _warped_nodes(seed, n, m)
    rn = np.r_[0, np.cumsum(steps[:n])]
    cn = np.r_[0, np.cumsum(steps[4:4 + m])]
    pixels = node_grid_pixel_areas(x, y, rn, cn)
    assert pixels.shape == (rn[-1], cn[-1]) and (pixels > 0).all()
    cells = np.add.reduceat(np.add.reduceat(pixels, rn[:-1], axis=0), cn[:-1], axis=1)
    np.testing.assert_allclose(cells, quad_areas(x, y), rtol=1e-12)


def test_one_pixel_per_cell_is_the_shoelace_area() -> None:
    x, y = _warped_nodes(1, 3, 5)
    np.testing.assert_allclose(node_grid_pixel_areas(x, y, np.arange(4), np.arange(6)),
                               quad_areas(x, y), rtol=1e-12)


def test_a_linear_map_gives_equal_pixels_in_either_orientation() -> None:
    v, u = np.meshgrid([0.0, 8.0], [0.0, 4.0], indexing="ij")  # 8 rows x 4 columns of pixels
    for sign in (1.0, -1.0):  # mirrored nodes: areas stay positive
        areas = node_grid_pixel_areas(sign * (2 * u + v), 3 * v, np.array([0, 8]),
                                      np.array([0, 4]))
        np.testing.assert_allclose(areas, np.full((8, 4), 6.0))  # |det [[2, 1], [0, 3]]|


@pytest.mark.parametrize("rows, cols, shape", [
    (np.array([0, 2, 2]), np.array([0, 1]), (3, 2)),
    (np.array([1, 2]), np.array([0, 1]), (2, 2)),
    (np.array([0.0, 2.0]), np.array([0, 1]), (2, 2)),
    (np.array([0, 2]), np.array([0, 1]), (3, 2)),
])
def test_bad_node_positions_name_the_parameter(rows, cols, shape) -> None:
    with pytest.raises(ConfigError, match="row_nodes|x, y"):
        node_grid_pixel_areas(np.zeros(shape), np.zeros(shape), rows, cols)


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 10**6), n=st.integers(1, 4), m=st.integers(1, 4),
       steps=st.lists(st.integers(1, 7), min_size=8, max_size=8), flip=st.booleans())
def test_cell_terms_give_the_pixel_areas(seed, n, m, steps, flip) -> None:
    x, y = _warped_nodes(seed, n, m)
    x = -x if flip else x  # mirrored: the terms carry the sign, areas stay positive
    rn = np.r_[0, np.cumsum(steps[:n])]
    cn = np.r_[0, np.cumsum(steps[4:4 + m])]
    cells = node_grid_cell_areas(x, y, rn, cn)
    assert isinstance(cells, CellAreas) and cells.shape == (rn[-1], cn[-1])
    np.testing.assert_allclose(np.asarray(cells), node_grid_pixel_areas(x, y, rn, cn),
                               rtol=1e-12)


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 10**6), n=st.integers(1, 4), m=st.integers(1, 4),
       steps=st.lists(st.integers(1, 7), min_size=8, max_size=8), k=st.integers(1, 5))
def test_class_sizes_from_cell_tables_are_the_summed_pixel_areas(seed, n, m, steps, k) -> None:
    x, y = _warped_nodes(seed, n, m)
    rn = np.r_[0, np.cumsum(steps[:n])]
    cn = np.r_[0, np.cumsum(steps[4:4 + m])]
    cells = node_grid_cell_areas(x, y, rn, cn)
    labels = np.random.default_rng(seed).integers(0, k, (rn[-1], cn[-1]))
    planes = np.stack([labels == c for c in range(k)]).astype(np.int64)
    by_row = np.add.reduceat(planes, cn[:-1], axis=2)  # (k, h, m)
    by_col = np.add.reduceat(planes, rn[:-1], axis=1)  # (k, n, w)
    expected = np.bincount(labels.ravel(), weights=np.asarray(cells).ravel(), minlength=k)
    np.testing.assert_allclose(cells.class_sizes(by_row, by_col), expected, rtol=1e-12)


def test_a_folded_cell_has_no_cell_terms() -> None:
    # the top right node crosses over: the area changes sign inside the cell
    x = np.array([[0.0, 4.0], [0.0, 4.0]])
    y = np.array([[0.0, 5.0], [4.0, 4.0]])
    assert node_grid_cell_areas(x, y, np.array([0, 8]), np.array([0, 8])) is None
    assert (node_grid_pixel_areas(x, y, np.array([0, 8]), np.array([0, 8])) >= 0).all()


@pytest.mark.parametrize("ellipsoid", [(6378137.0, 298.257223563), (6378388.0, 297.0),
                                       (6371000.0, 0.0)])
@pytest.mark.parametrize("lon0, lat0", [(12.5, 47.3), (-70.0, -33.4), (0.0, 89.9),
                                        (170.0, -89.7), (45.0, 0.0)])
def test_equal_area_plane_areas_equal_projs_laea_areas(ellipsoid, lon0, lat0) -> None:
    from pyproj import Proj  # tests may use PROJ; segcore may not

    a, rf = ellipsoid
    # a 3 x 3 km grid of 300 m cells around a point near the centre
    dlat = 0.0027 * np.arange(11)[:, None] + 0.0 * np.arange(11)
    lat = np.clip(lat0 - 0.01 + dlat, -90.0, 90.0)
    lon = lon0 + 0.003 + 0.0027 * np.arange(11) / max(np.cos(np.radians(lat0)), 0.05)
    lon = np.broadcast_to(lon, lat.shape)
    x, y = equal_area_plane(lon, lat, lon0, lat0, a=a, rf=rf)
    shape = {"a": a, "rf": rf} if rf else {"R": a}
    px, py = Proj(proj="laea", lon_0=lon0, lat_0=lat0, **shape)(lon, lat)
    # both lose digits in 1 - sin(beta) within a fraction of a degree of a pole (9e-9
    # apart at 89.9 degrees), elsewhere to 2e-11 (quads of 300 m: the differences of nearby
    # points); class areas need far less (the method is good to about 1e-7)
    np.testing.assert_allclose(quad_areas(x, y), quad_areas(px, py), rtol=2e-8)
