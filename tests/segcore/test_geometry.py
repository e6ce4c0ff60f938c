"""Tile geometry: windows, grids with clipped halos, stride padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from segcore.errors import ConfigError, TileSizeError
from segcore.geometry import Tile, TileGrid, Window, pad_to_multiple


# --- Window --------------------------------------------------------------------


def test_window_properties() -> None:
    w = Window((1, 2, 3), (4, 6, 3))
    assert w.ndim == 3
    assert w.shape == (3, 4, 0)
    assert w.size == 0
    assert w.slices == (slice(1, 4), slice(2, 6), slice(3, 3))


def test_window_accepts_lists_and_stays_hashable() -> None:
    w = Window([0, 1], [2, 3])  # type: ignore[arg-type]
    assert w.start == (0, 1) and hash(w) == hash(Window((0, 1), (2, 3)))


@pytest.mark.parametrize(
    ("start", "stop", "match"),
    [
        ((0, 0), (1,), "same length"),
        ((-1,), (2,), "0 <= start <= stop"),
        ((3,), (2,), "0 <= start <= stop"),
        ((0.5,), (2,), "tuple of ints"),
    ],
)
def test_window_rejects_bad_bounds(start: tuple, stop: tuple, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Window(start, stop)


def test_intersection_contains_relative_to() -> None:
    a, b = Window((0, 0), (10, 10)), Window((5, 8), (15, 12))
    assert a.intersection(b) == Window((5, 8), (10, 10))
    assert a.intersection(Window((10, 0), (12, 3))) is None
    assert a.contains(Window((2, 2), (10, 10)))
    assert not a.contains(b)
    assert Window((5, 8), (10, 10)).relative_to(a) == Window((5, 8), (10, 10))
    with pytest.raises(ConfigError, match="containing"):
        b.relative_to(a)
    with pytest.raises(ConfigError, match="2 axes"):
        a.contains(Window((0,), (1,)))


# --- TileGrid: examples and validation -------------------------------------------


def test_grid_tiles_cores_and_clipped_halos() -> None:
    grid = TileGrid.create((20, 9), tile=8, halo=4, align=4)
    assert grid.tile == (8, 8) and grid.chunks == (8, 8)
    assert grid.grid_shape == (3, 2) and len(grid) == 6
    tiles = list(grid)
    assert [t.index for t in tiles] == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]
    last = grid.tile_at((2, 1))
    assert last.core == Window((16, 8), (20, 9))
    assert last.halo == Window((12, 4), (20, 9))
    assert last.core_in_halo == Window((4, 4), (8, 5))


def test_tile_larger_than_scene_is_one_tile() -> None:
    grid = TileGrid.create((30, 50), tile=1024, halo=16, align=16)
    assert grid.tile == (30, 50) and len(grid) == 1
    (only,) = grid
    assert only.core == only.halo == Window((0, 0), (30, 50))


def test_constructor_broadcasts_like_create() -> None:
    assert TileGrid((10, 10), 4, 0) == TileGrid.create((10, 10), (4, 4))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(shape=(0, 4), tile=2), "shape"),
        (dict(shape=(8, 8), tile=0), "tile: expected every entry >= 1"),
        (dict(shape=(8, 8), tile=4, halo=-1), "halo: expected every entry >= 0"),
        (dict(shape=(64, 64), tile=20, align=8), r"tile: expected a multiple of align=8.*received 20"),
        (dict(shape=(64, 64), tile=16, halo=4, align=8), r"halo: expected a multiple of align=8.*received 4"),
        (dict(shape=(64, 64), tile=(16, 16, 16)), "tile: expected an int or 2 ints"),
        (dict(shape=(64, 64), tile=16, align=0), "align"),
    ],
)
def test_grid_validation_names_the_parameter(kwargs: dict, match: str) -> None:
    with pytest.raises(TileSizeError, match=match):
        TileGrid.create(**kwargs)


def test_whole_axis_tile_need_not_be_aligned() -> None:
    grid = TileGrid.create((30, 64), tile=(40, 16), halo=8, align=8)
    assert grid.tile == (30, 16)


def test_tile_at_rejects_out_of_range() -> None:
    with pytest.raises(TileSizeError, match="tile_at index"):
        TileGrid.create((8,), 4).tile_at((2,))


def test_tile_rejects_halo_not_containing_core() -> None:
    with pytest.raises(TileSizeError, match="containing the core"):
        Tile((0,), Window((0,), (4,)), Window((1,), (4,)))


# --- TileGrid: properties ------------------------------------------------------


@st.composite
def grids(draw: st.DrawFn) -> TileGrid:
    ndim = draw(st.integers(1, 3))
    side = {1: 60, 2: 24, 3: 10}[ndim]
    align = draw(st.sampled_from([1, 2, 4]))
    shape = tuple(draw(st.integers(1, side)) for _ in range(ndim))
    tile = tuple(align * draw(st.integers(1, 8)) for _ in range(ndim))
    halo = tuple(align * draw(st.integers(0, 3)) for _ in range(ndim))
    return TileGrid.create(shape, tile, halo, align)


@settings(max_examples=60, deadline=None)
@given(grids())
def test_cores_partition_the_scene(grid: TileGrid) -> None:
    cover = np.zeros(grid.shape, dtype=np.int32)
    for tile in grid:
        cover[tile.core.slices] += 1
    assert (cover == 1).all()
    assert len(list(grid)) == len(grid)


@settings(max_examples=60, deadline=None)
@given(grids())
def test_halos_contain_cores_inside_scene_aligned(grid: TileGrid) -> None:
    scene = Window((0,) * grid.ndim, grid.shape)
    for tile in grid:
        assert tile.halo.contains(tile.core)
        assert scene.contains(tile.halo)
        assert all(o % grid.align == 0 for o in tile.halo.start)
        assert all(o % grid.align == 0 for o in tile.core.start)
        for axis in range(grid.ndim):  # halo is exactly the core grown, then clipped
            assert tile.halo.start[axis] == max(tile.core.start[axis] - grid.halo[axis], 0)
            assert tile.halo.stop[axis] == min(tile.core.stop[axis] + grid.halo[axis], grid.shape[axis])


@settings(max_examples=60, deadline=None)
@given(grids(), st.integers(0, 2**31 - 1))
def test_tiling_an_identity_model_reproduces_the_input(grid: TileGrid, seed: int) -> None:
    scene = torch.from_numpy(np.random.default_rng(seed).normal(size=(2,) + grid.shape))
    out = torch.full_like(scene, float("nan"))
    for tile in grid:
        window = scene[(slice(None),) + tile.halo.slices]
        padded, original = pad_to_multiple(window, grid.align, spatial_dims=grid.ndim)
        result = padded[(slice(None),) + tuple(slice(0, n) for n in original)]
        out[(slice(None),) + tile.core.slices] = result[(slice(None),) + tile.core_in_halo.slices]
    assert torch.equal(out, scene)


# --- pad_to_multiple -------------------------------------------------------------


def test_pad_matches_torch_reflect_at_far_end() -> None:
    x = torch.randn(2, 3, 5, 7)
    y, original = pad_to_multiple(x, 4, spatial_dims=2)
    assert original == (5, 7)
    assert torch.equal(y, F.pad(x, (0, 1, 0, 3), mode="reflect"))


def test_pad_falls_back_to_replicate_on_short_axes() -> None:
    x = torch.tensor([[1.0, 2.0]])
    y, _ = pad_to_multiple(x, 8, spatial_dims=1)
    assert y.tolist() == [[1.0, 2.0] + [2.0] * 6]
    z, _ = pad_to_multiple(torch.ones(1, 1, 1), 4, spatial_dims=2)
    assert z.shape == (1, 4, 4)


def test_pad_noop_integer_dtype_and_autograd() -> None:
    x = torch.arange(16).reshape(4, 4)
    y, original = pad_to_multiple(x, 4, spatial_dims=2)
    assert y is x and original == (4, 4)
    assert pad_to_multiple(torch.arange(3), 4, spatial_dims=1)[0].tolist() == [0, 1, 2, 1]
    w = torch.ones(3, requires_grad=True)
    pad_to_multiple(w, 4, spatial_dims=1)[0].sum().backward()
    assert w.grad.tolist() == [1.0, 2.0, 1.0]


def test_pad_equals_whole_scene_padding_for_aligned_windows() -> None:
    scene = torch.randn(1, 22)
    whole, _ = pad_to_multiple(scene, 8, spatial_dims=1)
    window, _ = pad_to_multiple(scene[:, 8:], 8, spatial_dims=1)  # origin multiple of 8
    assert torch.equal(window, whole[:, 8:])


@pytest.mark.parametrize(
    ("multiple", "spatial_dims", "match"),
    [(0, 1, "multiple"), (2, 0, "spatial_dims"), (2, 3, "spatial_dims")],
)
def test_pad_validation(multiple: int, spatial_dims: int, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        pad_to_multiple(torch.ones(2, 2), multiple, spatial_dims=spatial_dims)
