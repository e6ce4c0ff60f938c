"""Panoptic fusion: chunked == whole == a loop-based reference; segments table exact."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from segcore.errors import ConfigError
from segcore.panoptic import FusionStats, apply_plan, decide, segments_table

CLASSES = [(0, "water", False), (1, "field", False), (2, "boat", True), (3, "house", True), (5, "road", False)]
NODATA = 255
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def scenes(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[list[int]], int]:
    ndim = draw(st.sampled_from([2, 3]))
    shape = tuple(draw(st.lists(st.integers(1, 9 if ndim == 2 else 4), min_size=ndim, max_size=ndim)))
    sem = draw(hnp.arrays(np.uint8, shape, elements=st.sampled_from([0, 1, 2, 3, 5, NODATA])))
    inst = draw(hnp.arrays(np.uint32, shape, elements=st.sampled_from([0, 0, 1, 2, 3, 70000])))
    valid = draw(hnp.arrays(bool, shape, elements=st.sampled_from([True, True, True, False])))
    cuts = [sorted(draw(st.sets(st.integers(1, max(n - 1, 1)), max_size=3)) if n > 1 else []) for n in shape]
    min_area = draw(st.integers(0, 6))
    return sem, inst, valid, cuts, min_area


def chunks(shape: tuple[int, ...], cuts: list[list[int]]):
    edges = [[0, *c, n] for c, n in zip(cuts, shape)]
    for starts in itertools.product(*[list(zip(e[:-1], e[1:])) for e in edges]):
        yield tuple(slice(a, b) for a, b in starts), tuple(a for a, _ in starts)


def fuse_chunked(sem, inst, valid, cuts, min_area):
    parts = []
    for sl, origin in chunks(sem.shape, cuts):  # one accumulator per chunk, then merged
        s = FusionStats(ndim=sem.ndim)
        s.add(sem[sl], inst[sl], valid[sl], offset=origin)
        parts.append(s)
    stats = FusionStats(ndim=sem.ndim)
    for s in parts[::-1]:
        stats.merge(s)
    plan = decide(stats, CLASSES, min_stuff_area=min_area)
    out = np.zeros(sem.shape, np.uint32)
    for sl, _ in chunks(sem.shape, cuts):
        out[sl] = apply_plan(plan, sem[sl], inst[sl], valid[sl])
    return out, segments_table(plan)


def reference(sem, inst, valid, min_area):
    """Loop-based statement of the rules on a whole array."""
    isthing = {c: t for c, _, t in CLASSES}
    ok = valid & (sem != NODATA)
    label = np.zeros(sem.shape, np.int64)  # stuff class + 1 per pixel before the area rule
    out = np.zeros(sem.shape, np.uint32)
    for i in np.unique(inst[ok & (inst != 0)]):
        votes = {}
        for c in sem[ok & (inst == i)].tolist():
            votes[c] = votes.get(c, 0) + 1
        best = min(votes, key=lambda c: (-votes[c], c))
        if isthing[best]:
            out[ok & (inst == i)] = 6 + i
    free = ok & (out == 0)
    for c, _, thing in CLASSES:
        if not thing:
            label[free & (sem == c)] = c + 1
    for c, _, thing in CLASSES:
        if not thing and 0 < np.count_nonzero(label == c + 1) >= min_area:
            out[label == c + 1] = c + 1
    return out


@given(scenes())
@SETTINGS
def test_chunked_fusion_equals_whole_and_reference(scene) -> None:
    sem, inst, valid, cuts, min_area = scene
    chunked, table = fuse_chunked(sem, inst, valid, cuts, min_area)
    whole, whole_table = fuse_chunked(sem, inst, valid, [[] for _ in sem.shape], min_area)
    np.testing.assert_array_equal(chunked, whole)
    assert table == whole_table
    np.testing.assert_array_equal(chunked, reference(sem, inst, valid, min_area))


@given(scenes())
@SETTINGS
def test_segments_table_agrees_with_map(scene) -> None:
    sem, inst, valid, cuts, min_area = scene
    out, table = fuse_chunked(sem, inst, valid, cuts, min_area)
    ids, counts = np.unique(out[out != 0], return_counts=True)
    assert [e["id"] for e in table] == ids.tolist()
    for entry, count in zip(table, counts.tolist()):
        assert entry["area"] == count
        where = np.argwhere(out == entry["id"])[:, ::-1]  # x = last axis first
        lo, hi = where.min(axis=0), where.max(axis=0)
        assert entry["bbox"] == [*lo.tolist(), *(hi - lo + 1).tolist()]
        assert all(type(v) is int for v in entry["bbox"]) and type(entry["area"]) is int
        cat = {c: (n, t) for c, n, t in CLASSES}[entry["category_id"]]
        assert (entry["category"], entry["isthing"]) == cat
        assert entry["isthing"] == (entry["id"] > 6)


def _fuse(sem, inst, valid=None, min_area=0):
    s = FusionStats(ndim=np.ndim(sem))
    s.add(np.asarray(sem), np.asarray(inst), valid)
    plan = decide(s, CLASSES, min_stuff_area=min_area)
    return apply_plan(plan, np.asarray(sem), np.asarray(inst), valid), segments_table(plan)


def test_majority_vote_tie_goes_to_smallest_class() -> None:
    out, table = _fuse([[2, 2, 3, 3, 0]], [[4, 4, 4, 4, 4]])
    assert out.tolist() == [[10, 10, 10, 10, 10]]
    assert table == [{"id": 10, "category_id": 2, "category": "boat", "isthing": True, "area": 5,
                      "bbox": [0, 0, 5, 1]}]


def test_instance_with_stuff_majority_is_dropped_and_keeps_semantics() -> None:
    out, _ = _fuse([[1, 1, 2, 0]], [[4, 4, 4, 0]])
    assert out.tolist() == [[2, 2, 0, 1]]  # field stays field, the boat pixel becomes void


def test_small_stuff_becomes_void_and_unclaimed_things_void() -> None:
    out, table = _fuse([[0, 0, 0, 1, 3]], [[0, 0, 0, 0, 0]], min_area=2)
    assert out.tolist() == [[1, 1, 1, 0, 0]]
    assert [e["id"] for e in table] == [1]


def test_nodata_stays_void() -> None:
    valid = np.array([[True, False, True, True]])
    out, table = _fuse([[0, 2, 255, 2]], [[0, 7, 7, 7]], valid)
    assert out.tolist() == [[1, 0, 0, 13]]
    assert {e["id"]: e["area"] for e in table} == {1: 1, 13: 1}


def test_3d_bbox_is_x_y_z_w_h_d() -> None:
    sem = np.zeros((3, 4, 5), np.uint8)
    sem[1:3, 2, 1:4] = 2
    inst = (sem == 2).astype(np.uint32) * 9
    _, table = _fuse(sem, inst)
    assert table[-1]["bbox"] == [1, 2, 1, 3, 1, 2]


def test_uint32_overflow_raises() -> None:
    s = FusionStats(ndim=1)
    s.add(np.array([2]), np.array([2**32 - 6], dtype=np.uint64))  # + offset 6 overflows
    with pytest.raises(ConfigError, match="uint32"):
        decide(s, CLASSES)
    ok = FusionStats(ndim=1)
    ok.add(np.array([2]), np.array([2**32 - 7], dtype=np.uint64))
    plan = decide(ok, CLASSES)
    assert apply_plan(plan, np.array([2]), np.array([2**32 - 7], dtype=np.uint64)).tolist() == [2**32 - 1]


@pytest.mark.parametrize(
    "call",
    [
        lambda: decide(FusionStats(ndim=1), [(0, "a", False), (0, "b", True)]),
        lambda: FusionStats(ndim=2).add(np.zeros((2, 2), int), np.zeros((2, 3), int)),
        lambda: FusionStats(ndim=1).add(np.array([70000]), np.array([0])),
        lambda: FusionStats(ndim=1).merge(FusionStats(ndim=2)),
    ],
)
def test_bad_input_raises_config_error(call) -> None:
    with pytest.raises(ConfigError):
        call()


def test_unknown_class_in_data_raises() -> None:
    s = FusionStats(ndim=1)
    s.add(np.array([4]), np.array([0]))
    with pytest.raises(ConfigError, match=r"\[4\]"):
        decide(s, CLASSES)


def _brute_force_stats(sem, inst, valid, nodata, offset):
    """Per (instance, class): pixel count and box, by looping over the pixels."""
    table = {}
    for idx in np.ndindex(sem.shape):
        if not valid[idx] or sem[idx] == nodata:
            continue
        key = (int(inst[idx]) << 16) | int(sem[idx])
        pos = np.asarray(idx) + offset
        n, lo, hi = table.get(key, (0, pos, pos))
        table[key] = (n + 1, np.minimum(lo, pos), np.maximum(hi, pos))
    return table


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shape=st.sampled_from([(7,), (5, 6), (3, 4, 5)]),
    seed=st.integers(0, 10_000),
    classes=st.integers(1, 300),
    things=st.booleans(),
    dtype=st.sampled_from(["uint8", "uint16", "int32"]),
)
def test_chunk_statistics_equal_brute_force_on_every_path(shape, seed, classes, things, dtype):
    """uint8/uint16 pixels without an instance take a bincount path, instance pixels with a few keys a
    presence path, the rest a sort: all give the pixel loop's counts and boxes."""
    rng = np.random.default_rng(seed)
    nodata = 255 if dtype == "uint8" else 65535
    sem = rng.integers(0, min(classes, 255 if dtype == "uint8" else 400), shape).astype(dtype)
    sem[rng.random(shape) < 0.1] = nodata
    inst = (rng.integers(0, 4, shape) * rng.integers(0, 2, shape)) if things \
        else np.zeros(shape, np.int64)
    valid = rng.random(shape) > 0.15
    offset = rng.integers(0, 1000, len(shape))
    stats = FusionStats(ndim=len(shape), nodata=nodata)
    stats.add(sem, inst, valid, offset=tuple(int(o) for o in offset))
    expected = _brute_force_stats(sem, inst, valid, nodata, offset)
    assert [int(k) for k in stats.keys] == sorted(expected)
    for key, n, lo, hi in zip(stats.keys, stats.counts, stats.lo, stats.hi):
        want = expected[int(key)]
        assert int(n) == want[0]
        np.testing.assert_array_equal(lo, want[1])
        np.testing.assert_array_equal(hi, want[2])


@settings(max_examples=60, deadline=None)
@given(shape=st.sampled_from([(6, 9), (13, 4), (3, 5, 7)]), seed=st.integers(0, 2**32 - 1),
       merge=st.booleans())
def test_relabelled_statistics_equal_the_statistics_of_relabelled_chunks(shape, seed, merge):
    """``FusionStats.relabelled`` gives what ``add`` gives on the chunks after their
    instance ids went through the same map: renumbering ``1..M`` (increasing), or a map
    that merges ids and reverses their order."""
    from segcore.labels.relabel import LabelMap

    rng = np.random.default_rng(seed)
    sem = rng.integers(0, 4, shape).astype(np.uint8)
    sem[rng.uniform(size=shape) < 0.1] = 255  # nodata
    inst = np.where(rng.uniform(size=shape) < 0.5, rng.integers(1, 40, shape) * 3, 0)
    valid = rng.uniform(size=shape) < 0.9
    used = np.unique(inst[inst > 0]).astype(np.uint64)
    if merge:  # later ids first, neighbours sharing one new id
        new = (len(used) - np.arange(len(used))) // 2 + 1
    else:
        new = np.arange(1, len(used) + 1)
    table = LabelMap(used, new.astype(np.uint32))
    half = shape[0] // 2  # two chunks, as two blocks of a pass
    stats = FusionStats(ndim=len(shape))
    stats.add(sem[:half], inst[:half], valid[:half])
    stats.add(sem[half:], inst[half:], valid[half:], offset=(half,) + (0,) * (len(shape) - 1))
    mapped = np.where(inst > 0, table.apply(inst.astype(np.uint64)), 0)
    expected = FusionStats(ndim=len(shape))
    expected.add(sem, mapped, valid)
    got = stats.relabelled(table)
    for name in ("keys", "counts", "lo", "hi"):
        np.testing.assert_array_equal(getattr(got, name), getattr(expected, name), err_msg=name)
