"""The scene-wide centre pass does not depend on the tiling, by construction.

Property: for any heatmap, offsets and thing mask, peaks found per tile core (over
the tile's halo window, halo >= the NMS radius) and one scene list give exactly the
instance map of the whole image in one window, and the same partition as the
in-memory Panoptic-DeepLab grouping (:func:`group_instances`).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from segcore.errors import ConfigError
from segcore.geometry.grid import TileGrid
from segcore.instances.centres import (
    CentreIndex,
    assign_to_centres,
    scene_centres,
    select_top_k,
)
from segcore.instances.grouping import find_centres, group_instances


def _field(seed: int, shape: tuple[int, ...], blobs: int):
    """A smooth heatmap with ``blobs`` bumps, offsets towards the nearest bump (plus
    noise, so votes are scattered and ties improbable) and a thing mask."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    centres = rng.uniform(0, 1, (max(blobs, 1), len(shape))) * np.asarray(shape)
    dist = np.stack([sum((g - c[a]) ** 2 for a, g in enumerate(grids)) for c in centres])
    width = rng.uniform(2.0, 6.0, len(dist))[(slice(None),) + (None,) * len(shape)]
    heat = (np.exp(-dist / (2 * width**2)) * rng.uniform(0.3, 1.0, len(dist))[
        (slice(None),) + (None,) * len(shape)]).max(0) * (blobs > 0)
    heat += rng.uniform(0, 0.05, shape)  # small extra peaks, some below the threshold
    near = dist.argmin(0)
    offsets = np.stack([centres[near, a] - g for a, g in enumerate(grids)])
    offsets += rng.normal(0, 1.5, offsets.shape)
    things = rng.uniform(0, 1, shape) < 0.7
    return heat.astype(np.float32), offsets.astype(np.float32), things


def _tiled(heat, offsets, things, tile: int, nms: int, top_k=None):
    """The pipeline's split: peaks per core (halo = NMS radius), one scene list, ids
    assigned per core block."""
    grid = TileGrid.create(heat.shape, tile, nms // 2)
    parts = []
    for t in grid:
        window = torch.from_numpy(heat[t.halo.slices].copy())
        local = find_centres(window, threshold=0.1, nms_kernel=nms).numpy()
        core = t.core_in_halo
        inside = np.all((local >= core.start) & (local < core.stop), axis=1)
        parts.append((local[inside] + np.asarray(t.halo.start), window.numpy()[tuple(local[inside].T)]))
    centres = scene_centres(parts, heat.ndim, top_k=top_k)
    index = CentreIndex(centres)
    out = np.zeros(heat.shape, np.int64)
    for t in grid:
        s = t.core.slices
        out[s] = assign_to_centres(things[s], offsets[(slice(None), *s)], t.core.start, index)
    return out


def _whole(heat, offsets, things, nms: int, top_k=None):
    return _tiled(heat, offsets, things, max(heat.shape), nms, top_k)


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(pairs[0]) == len(np.unique(pairs[0])) == len(np.unique(pairs[1]))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), tile=st.integers(4, 40), nms=st.sampled_from([1, 3, 5, 7]),
       blobs=st.integers(0, 12), ndim=st.sampled_from([2, 3]))
def test_instances_do_not_depend_on_the_tiling(seed, tile, nms, blobs, ndim):
    shape = (48, 56) if ndim == 2 else (14, 18, 16)
    heat, offsets, things = _field(seed, shape, blobs)
    whole = _whole(heat, offsets, things, nms)
    np.testing.assert_array_equal(_tiled(heat, offsets, things, tile, nms), whole)
    # and it is Panoptic-DeepLab's grouping of the whole image (ids up to renumbering)
    reference = group_instances(heat, offsets, things, threshold=0.1, nms_kernel=nms).numpy()
    assert (reference > 0).sum() == (whole > 0).sum()
    assert _same_partition(reference, whole)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), tile=st.integers(6, 30), top_k=st.integers(0, 6))
def test_top_k_applies_to_the_scene_not_to_each_tile(seed, tile, top_k):
    heat, offsets, things = _field(seed, (40, 44), 10)
    whole = _whole(heat, offsets, things, 5, top_k)
    np.testing.assert_array_equal(_tiled(heat, offsets, things, tile, 5, top_k), whole)
    reference = group_instances(heat, offsets, things, threshold=0.1, nms_kernel=5,
                                top_k=top_k).numpy()
    assert _same_partition(reference, whole)


def test_an_object_far_larger_than_the_halo_stays_one_instance():
    """One 200 px object, tiles of 32 px with a 3 px halo: one id, not 49 pieces."""
    shape = (200, 200)
    heat = np.zeros(shape, np.float32)
    heat[100, 100] = 1.0
    yy, xx = np.mgrid[:200, :200].astype(np.float32)
    offsets = np.stack([100 - yy, 100 - xx])
    things = np.ones(shape, bool)
    out = _tiled(heat, offsets, things, 32, 7)
    assert np.unique(out).tolist() == [1]


def test_ties_go_to_the_earlier_centre():
    index = CentreIndex(np.array([[0, 0], [0, 2], [2, 0]]))
    votes = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.6]])
    assert index.nearest(votes).tolist() == [0, 0, 0, 1]


def test_a_centre_reported_twice_is_refused():
    a = (np.array([[3, 4]]), np.array([0.5]))
    with pytest.raises(ConfigError, match="two tiles"):
        scene_centres([a, a], 2)


@pytest.mark.parametrize("bad", [np.array([[0.5, 1.0]]), np.zeros((2, 3), np.int64)])
def test_centres_must_be_integer_coordinates_of_the_scene_axes(bad):
    with pytest.raises(ConfigError, match="centres"):
        scene_centres([(bad, np.zeros(len(bad)))], 2)


def test_select_top_k_keeps_the_highest_in_order():
    c = np.arange(10).reshape(5, 2)
    assert select_top_k(c, np.array([0.1, 0.9, 0.5, 0.9, 0.2]), 3).tolist() == [[2, 3], [4, 5], [6, 7]]
    assert select_top_k(c, np.zeros(5), None) is c


def test_assign_refuses_mismatched_offsets():
    with pytest.raises(ConfigError, match="offsets"):
        assign_to_centres(np.ones((4, 4), bool), np.zeros((3, 4, 4)), (0, 0),
                          CentreIndex(np.array([[1, 1]])))


@pytest.mark.parametrize("few", [0, 1000])  # always the k-d tree / always every centre
def test_ties_go_to_the_earlier_centre_either_way(few):
    index = CentreIndex(np.array([[0, 0], [0, 2], [2, 0]]), few=few)
    assert (index.tree is None) == (few > 0)
    votes = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.6]])
    assert index.nearest(votes).tolist() == [0, 0, 0, 1]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 40), ndim=st.sampled_from([2, 3]),
       votes=st.integers(0, 3000), halves=st.booleans())
def test_every_centre_compared_equals_the_k_d_tree(seed, n, ndim, votes, halves):
    """Few centres are compared with every vote instead of a k-d tree: the same nearest
    centre, ties included (votes on half pixels between integer centres are often equally
    near several; five or more equally near ones are beyond the tree's k = 4 and left out)."""
    rng = np.random.default_rng(seed)
    centres = np.unique(rng.integers(0, 12, (n, ndim)), axis=0)
    rng.shuffle(centres)
    v = rng.integers(-2, 26, (votes, ndim)) / 2.0 if halves \
        else rng.uniform(-3, 15, (votes, ndim)).astype(np.float32).astype(np.float64)
    tree, direct = CentreIndex(centres, few=0), CentreIndex(centres, few=10**6)
    a, b = tree.nearest(v), direct.nearest(v)
    d = np.sqrt(((v[:, None, :] - centres[None].astype(np.float64)) ** 2).sum(-1))
    fewer_than_five_tied = (d == d.min(axis=1, keepdims=True)).sum(axis=1) < 5
    np.testing.assert_array_equal(a[fewer_than_five_tied], b[fewer_than_five_tied])
    assert (b == d.argmin(axis=1)).all()
