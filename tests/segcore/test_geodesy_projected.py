"""Pure area math for projected grids: quadrilateral cells and their interpolated pixels."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segcore.errors import ConfigError
from segcore.geodesy import node_grid_pixel_areas, quad_areas


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
