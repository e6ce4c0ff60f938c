"""Tests of segcore.labels: union-find, sequential relabelling, cross-tile stitching."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import ndimage
from skimage.segmentation import relabel_sequential as sk_relabel_sequential

from segcore.errors import ConfigError
from segcore.geometry.grid import TileGrid
from segcore.labels import (
    IdRange,
    LabelMap,
    MatchRule,
    UnionFind,
    core_instances,
    halo_cut_ids,
    label_dtype,
    match_overlaps,
    neighbour_overlaps,
    offset_ids,
    overlap_table,
    relabel_sequential,
    stitch_plan,
)

UINT64_MAX = 2**64 - 1

# --------------------------------------------------------------------- union-find

ids = st.integers(0, UINT64_MAX)


@given(st.lists(st.tuples(ids, ids), max_size=40))
@settings(max_examples=60, deadline=None)
def test_union_find_matches_naive_components(pairs: list[tuple[int, int]]) -> None:
    uf = UnionFind()
    for a, b in pairs:
        uf.union(a, b)
    naive: list[set[int]] = []
    for a, b in pairs:
        hit = [s for s in naive if a in s or b in s]
        merged = {a, b}.union(*hit)
        naive = [s for s in naive if s not in hit] + [merged]
    expected = sorted((sorted(s) for s in naive if len(s) > 1), key=lambda g: g[0])
    assert uf.groups() == expected
    for a, b in pairs:
        assert uf.connected(a, b) and uf.connected(b, a)


def test_union_find_unseen_ids_are_singletons() -> None:
    uf = UnionFind([1, 2])
    assert uf.find(99) == 99 and 99 not in uf and len(uf) == 2
    assert uf.union(1, 2) and not uf.union(2, 1)
    assert uf.groups() == [[1, 2]]


def test_union_find_long_chain_is_one_group() -> None:
    uf = UnionFind()
    for i in range(5000):
        uf.union(i, i + 1)
    assert uf.groups() == [list(range(5001))]


# ----------------------------------------------------------- relabel_sequential

DTYPES = ["uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64"]


@st.composite
def label_arrays(draw: st.DrawFn) -> np.ndarray:
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    top = int(np.iinfo(dtype).max)
    values = st.one_of(st.integers(0, min(top, 20)), st.integers(max(top - 20, 0), top))
    return draw(hnp.arrays(dtype, hnp.array_shapes(min_dims=1, max_dims=3, max_side=6), elements=values))


def _assert_same_as_skimage(arr: np.ndarray, offset: int) -> None:
    out, fw, inv = relabel_sequential(arr, offset=offset)
    sk_out, sk_fw, sk_inv = sk_relabel_sequential(arr, offset=offset)
    assert out.dtype == sk_out.dtype
    np.testing.assert_array_equal(out, sk_out)
    np.testing.assert_array_equal(fw.apply(arr), sk_fw[arr])
    np.testing.assert_array_equal(inv.apply(out), arr)
    assert inv.apply(out).dtype == arr.dtype


@given(label_arrays(), st.integers(1, 1000))
@settings(max_examples=150, deadline=None)
def test_relabel_sequential_equals_skimage(arr: np.ndarray, offset: int) -> None:
    _assert_same_as_skimage(arr, offset)


@pytest.mark.parametrize(
    ("dtype", "n", "offset", "expected"),
    [
        ("uint8", 255, 1, "uint8"),  # last id 255 == max -> min_scalar_type(255)
        ("uint8", 255, 2, "uint16"),
        ("int8", 126, 1, "int8"),  # 126 < 127 keeps the input type
        ("int8", 127, 1, "uint8"),  # 127 is not < 127 -> unsigned widening
        ("uint16", 100, 65500, "uint32"),
        ("int32", 10, 2**31 - 5, "uint32"),
        ("uint32", 10, 2**32 - 5, "uint64"),
        ("int64", 3, 2**63 - 2, "uint64"),
    ],
)
def test_relabel_sequential_near_overflow(dtype: str, n: int, offset: int, expected: str) -> None:
    arr = np.arange(n + 1, dtype=dtype)
    out, _, _ = relabel_sequential(arr, offset=offset)
    assert out.dtype == np.dtype(expected)
    assert int(out[-1]) == offset + n - 1
    if offset < 2**62:  # skimage's arange path is exact only below int64
        _assert_same_as_skimage(arr, offset)


def test_relabel_sequential_uint64_extremes() -> None:
    arr = np.array([0, UINT64_MAX, 2**63, UINT64_MAX], np.uint64)
    out, fw, inv = relabel_sequential(arr)
    np.testing.assert_array_equal(out, [0, 2, 1, 2])
    assert out.dtype == np.uint64 and fw[UINT64_MAX] == 2 and inv[2] == UINT64_MAX
    last, _, _ = relabel_sequential(np.array([1, 2], np.uint64), offset=UINT64_MAX - 1)
    assert last.tolist() == [UINT64_MAX - 1, UINT64_MAX]
    with pytest.raises(ConfigError, match="exceeds 2"):
        relabel_sequential(np.array([1, 2], np.uint64), offset=UINT64_MAX)


@pytest.mark.parametrize(
    ("labels", "offset", "match"),
    [
        (np.array([1, -1]), 1, ">= 0"),
        (np.array([1.0]), 1, "integer"),
        (np.array([], np.uint8), 1, "non-empty"),
        (np.array([1]), 0, "offset"),
    ],
)
def test_relabel_sequential_rejects(labels: np.ndarray, offset: int, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        relabel_sequential(labels, offset=offset)


# -------------------------------------------------------------------- LabelMap


def test_label_map_sparse_huge_keys_and_unknown_ids() -> None:
    keys = np.array([3, 2**40, UINT64_MAX], np.uint64)
    m = LabelMap(keys, np.array([1, 2, 3], np.uint16))
    chunk = np.array([[0, UINT64_MAX], [2**40, 3]], np.uint64)
    np.testing.assert_array_equal(m.apply(chunk), [[0, 3], [2, 1]])
    assert m.apply(chunk).dtype == np.uint16 and m.keys.nbytes == 24
    with pytest.raises(ConfigError, match="no entry"):
        m.apply(np.array([4], np.uint64))
    assert LabelMap(np.zeros(0, np.uint64), np.zeros(0, np.uint32)).apply(np.zeros(3, np.uint8)).tolist() == [0, 0, 0]
    with pytest.raises(ConfigError, match="increasing"):
        LabelMap(np.array([2, 1], np.uint64), np.array([1, 2]))


@pytest.mark.parametrize(
    ("max_id", "dtype"),
    [(0, "uint16"), (65535, "uint16"), (65536, "uint32"), (2**32 - 1, "uint32"), (2**32, "uint64"), (UINT64_MAX, "uint64")],
)
def test_label_dtype_smallest(max_id: int, dtype: str) -> None:
    assert label_dtype(max_id) == np.dtype(dtype)


def test_label_dtype_requested_overflow() -> None:
    assert label_dtype(127, "int8") == np.int8
    with pytest.raises(ConfigError, match="int8 holds ids up to 127"):
        label_dtype(128, "int8")
    with pytest.raises(ConfigError, match="integer"):
        label_dtype(1, "float32")
    with pytest.raises(ConfigError, match="uint16"):
        offset_ids(np.array([0, 1], np.uint8), 65535, dtype=np.uint16)


# -------------------------------------------------------------------- matching


def test_touching_distinct_objects_stay_distinct() -> None:
    # A predicted the border between 7 and 8 one pixel off: still two objects.
    predicted = np.array([[1, 1, 1, 2, 2, 2]] * 3)
    stored = np.array([[7, 7, 8, 8, 8, 8]] * 3)
    assert match_overlaps(predicted, stored).tolist() == [[1, 7], [2, 8]]
    assert match_overlaps(predicted, stored, rule="iou").tolist() == [[1, 7], [2, 8]]
    assert match_overlaps(predicted, stored, threshold=0.0).tolist() == [[1, 7], [1, 8], [2, 8]]


def test_majority_rule_joins_pieces_that_iou_misses() -> None:
    # B sees one L; A sees its two arms as separate pieces (joined beyond A's halo).
    predicted = np.array([[1, 0, 0], [1, 0, 0], [1, 0, 0], [1, 2, 2]])
    stored = np.array([[9, 0, 0], [9, 0, 0], [9, 0, 0], [9, 9, 9]])
    assert match_overlaps(predicted, stored).tolist() == [[1, 9], [2, 9]]
    assert match_overlaps(predicted, stored, rule=MatchRule.IOU).tolist() == [[1, 9]]


def test_match_rule_typo_hint() -> None:
    with pytest.raises(ConfigError, match="did you mean 'majority'"):
        MatchRule.parse("majorty")
    with pytest.raises(ConfigError, match="shape"):
        overlap_table(np.zeros((2, 2), int), np.zeros((2, 3), int))


def test_neighbour_overlaps_corners_and_far_tiles() -> None:
    grid = TileGrid.create((9, 9), tile=3, halo=1)
    centre = neighbour_overlaps(grid, grid.tile_at((1, 1)))
    assert sorted(i for i, _ in centre) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1), (2, 2)]
    far = TileGrid.create((9,), tile=2, halo=3)
    assert [i for i, _ in neighbour_overlaps(far, far.tile_at((2,)))] == [(0,), (1,), (3,), (4,)]
    assert neighbour_overlaps(TileGrid.create((9,), tile=3), TileGrid.create((9,), tile=3).tile_at((1,))) == []


# ------------------------------------------------------- end-to-end simulation


def _predict(window: np.ndarray, connectivity: int) -> np.ndarray:
    """Perfect local instances: components of each true object inside the window."""
    structure = ndimage.generate_binary_structure(window.ndim, connectivity)
    local = np.zeros(window.shape, np.int64)
    n = 0
    for obj in np.unique(window[window != 0]):
        comp, k = ndimage.label(window == obj, structure=structure)
        local[comp > 0] = comp[comp > 0] + n
        n += k
    return local


def simulate(
    truth: np.ndarray,
    tile: int | tuple[int, ...],
    halo: int | tuple[int, ...],
    *,
    connectivity: int = 1,
    id_stride: int | None = None,
    **match: object,
):
    """The tiled process in memory: workers write cores, the driver stitches."""
    grid = TileGrid.create(truth.shape, tile, halo)
    stored = np.zeros(truth.shape, np.uint64)
    ranges, cuts, patches = [], [], []
    next_offset = 0
    for flat, t in enumerate(grid):
        local, count = core_instances(_predict(truth[t.halo.slices], connectivity), t.core_in_halo)
        offset = flat * id_stride if id_stride else next_offset
        next_offset += count
        glob = offset_ids(local, offset)
        stored[t.core.slices] = glob[t.core_in_halo.slices]
        ranges.append(IdRange(offset, count))
        cuts.append(halo_cut_ids(glob, t, grid.shape))
        for _, window in neighbour_overlaps(grid, t):
            patches.append((glob[window.relative_to(t.halo).slices], window))
    tables = [overlap_table(patch, stored[w.slices]) for patch, w in patches]
    plan = stitch_plan(tables, ranges, cut_ids=cuts, **match)  # type: ignore[arg-type]
    final = np.zeros(truth.shape, plan.label_map.dtype)
    for t in grid:  # chunk by chunk
        final[t.core.slices] = plan.label_map.apply(stored[t.core.slices])
    return final, plan


def assert_same_partition(final: np.ndarray, truth: np.ndarray) -> None:
    np.testing.assert_array_equal(final == 0, truth == 0)
    pairs = np.unique(np.stack([truth[truth > 0], final[truth > 0].astype(np.int64)], 1), axis=0)
    n_true = np.unique(truth[truth > 0]).size
    assert len(pairs) == n_true, "a true object got several final ids"
    assert np.unique(pairs[:, 1]).size == n_true, "two true objects share a final id"
    assert sorted(np.unique(final[final > 0]).tolist()) == list(range(1, n_true + 1))


def random_scene(shape: tuple[int, int], seed: int) -> np.ndarray:
    """Rectangles, L-shapes, long lines, touching pairs and corner objects."""
    rng = np.random.default_rng(seed)
    h, w = shape
    truth = np.zeros(shape, np.int32)
    nid = 0

    def paint(mask_slices: list[tuple[slice, slice]]) -> None:
        nonlocal nid
        if all(not truth[s].any() for s in mask_slices):
            nid += 1
            for s in mask_slices:
                truth[s] = nid

    for _ in range(3):  # long thin lines across many tiles
        if rng.random() < 0.5:
            r, c0 = rng.integers(0, h), rng.integers(0, w // 4)
            paint([(slice(r, r + 1), slice(c0, w - rng.integers(0, w // 4)))])
        else:
            c, r0 = rng.integers(0, w), rng.integers(0, h // 4)
            paint([(slice(r0, h - rng.integers(0, h // 4)), slice(c, c + 1))])
    for _ in range(25):
        r, c = int(rng.integers(0, h - 2)), int(rng.integers(0, w - 2))
        a, b = int(rng.integers(2, 14)), int(rng.integers(2, 14))
        if rng.random() < 0.4:  # L-shape of two arms
            paint([(slice(r, r + a), slice(c, c + 2)), (slice(r + a - 2, r + a), slice(c, c + b))])
        elif rng.random() < 0.5:  # touching pair
            paint([(slice(r, r + a), slice(c, c + b))])
            paint([(slice(r, r + a), slice(c + b, c + 2 * b))])
        else:
            paint([(slice(r, r + a), slice(c, c + b))])
    return truth


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize(("tile", "halo"), [(8, 1), (10, 3), (16, 4), ((7, 12), (2, 5))])
def test_stitching_recovers_random_scene(seed: int, tile, halo) -> None:
    truth = random_scene((45, 58), seed)
    final, plan = simulate(truth, tile, halo)
    assert_same_partition(final, truth)
    assert plan.stats.n_instances == np.unique(truth[truth > 0]).size
    assert plan.stats.n_merges == plan.stats.n_input_ids - plan.stats.n_instances


def test_stitching_with_huge_id_stride_and_threshold_zero() -> None:
    truth = random_scene((40, 40), seed=11)
    final, plan = simulate(truth, 8, 2, id_stride=2**48, threshold=0.0)
    assert_same_partition(final, truth)
    assert plan.label_map.keys.max() > 2**48 and final.dtype == np.uint16


def test_long_road_across_six_tiles() -> None:
    truth = np.zeros((20, 60), np.int32)
    truth[9:11, 2:58] = 1  # crosses 6 tiles of 10, far longer than tile + 2 * halo
    truth[12, 0:60] = 2  # a separate parallel line, one row apart
    truth[11, 25:30] = 3  # touches both lines but is distinct
    final, plan = simulate(truth, 10, 2)
    assert_same_partition(final, truth)
    assert plan.stats.n_instances == 3
    assert plan.stats.n_merged == 2  # the roads; object 3 lies in one tile
    assert plan.stats.n_cut_at_halo == 2


def test_blob_larger_than_tile_plus_two_halos() -> None:
    truth = np.zeros((40, 40), np.int32)
    yy, xx = np.mgrid[:40, :40]
    truth[(yy - 20) ** 2 + (xx - 19) ** 2 < 17**2] = 1  # diameter 34 > 8 + 2 * 2
    truth[0:3, 0:3] = 2  # in a scene corner, touching nothing
    final, plan = simulate(truth, 8, 2)
    assert_same_partition(final, truth)
    assert plan.stats.n_merged == 1 and plan.stats.n_cut_at_halo == 1
    assert plan.stats.n_input_ids > 16  # the blob was written in pieces by every tile it meets


def test_object_joined_only_outside_a_halo_is_rejoined() -> None:
    # A U whose arms enter tile (0, 1) but whose base lies beyond its halo:
    # that tile writes two ids, which the neighbours re-join.
    truth = np.zeros((20, 20), np.int32)
    truth[2:18, 12:14] = 1
    truth[2:18, 16:18] = 1
    truth[16:18, 12:18] = 1
    final, plan = simulate(truth, (10, 10), 1)
    assert_same_partition(final, truth)
    assert plan.stats.n_input_ids == 3 and plan.stats.n_instances == 1


def test_diagonal_object_through_tile_corners_full_connectivity() -> None:
    truth = np.zeros((24, 24), np.int32)
    truth[np.arange(24), np.arange(24)] = 1  # 8-connected only, passes every corner
    truth[np.arange(1, 24), np.arange(23)] = 2  # a second diagonal right beside it (face-adjacent)
    final, _ = simulate(truth, 6, 1, connectivity=2)
    assert_same_partition(final, truth)


def test_stitching_3d() -> None:
    rng = np.random.default_rng(5)
    truth = np.zeros((18, 20, 22), np.int32)
    truth[2:16, 3, 4] = 1  # line along axis 0
    truth[5, 1:19, 10:12] = 2  # plate across axis 1
    nid = 2
    for _ in range(12):
        z, y, x = (int(rng.integers(0, s - 2)) for s in truth.shape)
        a, b, c = (int(v) for v in rng.integers(2, 9, 3))
        box = (slice(z, z + a), slice(y, y + b), slice(x, x + c))
        if not truth[box].any():
            nid += 1
            truth[box] = nid
    for connectivity in (1, 3):
        final, plan = simulate(truth, (6, 7, 5), (1, 2, 1), connectivity=connectivity)
        assert_same_partition(final, truth)
    assert plan.stats.n_merged >= 2


def test_stitch_plan_rejects_bad_ranges_and_dtype_overflow() -> None:
    table = overlap_table(np.array([5]), np.array([50]))
    with pytest.raises(ConfigError, match="overlap"):
        stitch_plan([], [IdRange(0, 10), IdRange(5, 10)])
    with pytest.raises(ConfigError, match="no tile's IdRange"):
        stitch_plan([table], [IdRange(0, 10)])
    with pytest.raises(ConfigError, match="uint8 holds ids up to 255"):
        stitch_plan([], [IdRange(0, 300)], dtype=np.uint8)
    plan = stitch_plan([table], [(0, 10), (49, 1)], dtype=np.uint8)
    assert plan.label_map.dtype == np.uint8 and plan.label_map[50] == 5
    assert plan.stats.n_instances == 10 and plan.stats.n_merged == 1
