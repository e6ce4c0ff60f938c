"""Synthetic satellite scenes: window independence, labels, class balance, difficulty."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from segcore.errors import ConfigError
from segcore.geometry.window import Window
from segcore.synthetic.noise import fbm, fbm1d, hash_u64, hash_uniform, value_noise
from segcore.synthetic.satellite import (
    SATELLITE_CLASSES,
    SatelliteSceneSpec,
    SceneWindow,
    render,
)

BUILDING, ROAD, WATER = 4, 3, 2


# ----------------------------------------------------------------------------- noise


def test_hash_is_deterministic_and_seed_and_stream_dependent():
    ys, xs = np.arange(-5, 60)[:, None], np.arange(-3, 70)[None, :]
    a = hash_u64(ys, xs, seed=1)
    assert np.array_equal(a, hash_u64(ys, xs, seed=1))
    assert np.mean(a == hash_u64(ys, xs, seed=2)) < 0.01
    assert np.mean(a == hash_u64(ys, xs, seed=1, stream=1)) < 0.01
    assert np.unique(a).size == a.size


def test_hash_uniform_is_uniform():
    u = hash_uniform(np.arange(256)[:, None], np.arange(256)[None, :], seed=9)
    assert u.dtype == np.float32 and 0.0 <= u.min() and u.max() < 1.0
    counts = np.histogram(u, bins=10, range=(0, 1))[0]
    assert counts.min() > 0.9 * u.size / 10


@settings(max_examples=30, deadline=None)
@given(
    y0=st.integers(-500, 500), x0=st.integers(-500, 500),
    h=st.integers(1, 40), w=st.integers(1, 40),
    scale=st.floats(0.7, 90.0), seed=st.integers(0, 2**40),
)
def test_fbm_grid_path_equals_point_path(y0, x0, h, w, scale, seed):
    ys, xs = np.arange(y0, y0 + h)[:, None], np.arange(x0, x0 + w)[None, :]
    grid = fbm(ys, xs, seed=seed, scale=scale, octaves=3)
    yy, xx = np.broadcast_arrays(ys, xs)
    points = fbm(yy.ravel(), xx.ravel(), seed=seed, scale=scale, octaves=3)
    assert np.array_equal(grid.ravel(), points)


@settings(max_examples=30, deadline=None)
@given(
    y0=st.integers(0, 300), x0=st.integers(0, 300), h=st.integers(1, 50), w=st.integers(1, 50),
    dy=st.integers(0, 30), dx=st.integers(0, 30), scale=st.floats(1.0, 200.0),
)
def test_fbm_is_window_independent(y0, x0, h, w, dy, dx, scale):
    big = fbm(np.arange(y0, y0 + h + dy)[:, None], np.arange(x0, x0 + w + dx)[None, :], seed=3, scale=scale)
    small = fbm(np.arange(y0 + dy, y0 + h + dy)[:, None], np.arange(x0 + dx, x0 + w + dx)[None, :], seed=3, scale=scale)
    assert np.array_equal(small, big[dy:, dx:])
    t = np.linspace(-50.0, 400.0, 97)
    assert np.array_equal(fbm1d(t[dy:], seed=4, scale=scale), fbm1d(t, seed=4, scale=scale)[dy:])


def test_fbm_range_and_smoothness():
    ys, xs = np.arange(512)[:, None], np.arange(512)[None, :]
    v = fbm(ys, xs, seed=0, scale=64.0)
    assert v.dtype == np.float32 and -1.0 <= v.min() and v.max() <= 1.0
    assert 0.15 < v.std() < 0.4
    assert np.abs(np.diff(value_noise(ys, xs, seed=0, scale=64.0), axis=1)).max() < 0.1


@pytest.mark.parametrize("kwargs", [{"scale": 0.0}, {"scale": float("nan")}, {"scale": 4.0, "octaves": 0}])
def test_fbm_rejects_bad_parameters(kwargs):
    with pytest.raises(ConfigError):
        fbm(np.zeros(2), np.zeros(2), seed=0, **kwargs)


# ----------------------------------------------------------------------------- spec


def test_class_table():
    assert [c.id for c in SATELLITE_CLASSES] == [0, 1, 2, 3, 4]
    assert [c.name for c in SATELLITE_CLASSES] == ["background", "vegetation", "water", "road", "building"]
    assert [c.isthing for c in SATELLITE_CLASSES] == [False, False, False, False, True]


@pytest.mark.parametrize(
    "field, value",
    [("seed", -1), ("height", 0), ("width", 2.5), ("bands", 5), ("bands", True), ("forest_cover", 1.0),
     ("lake_cover", -0.1), ("noise_level", float("nan")), ("cell_size", 8), ("building_density", 9.0)],
)
def test_spec_rejects_bad_values(field, value):
    kwargs = {"seed": 0, "height": 64, "width": 64, field: value}
    with pytest.raises(ConfigError, match=field):
        SatelliteSceneSpec(**kwargs)


def test_max_instance_id_counts_cells():
    spec = SatelliteSceneSpec(seed=0, height=100, width=97, cell_size=48)
    assert spec.cells == (3, 3) and spec.max_instance_id == 9


@pytest.mark.parametrize(
    "window", [Window((0, 0), (65, 10)), Window((5, 5), (5, 9)), Window((0,), (3,)), "0:4"]
)
def test_render_rejects_bad_windows(window):
    with pytest.raises(ConfigError, match="window"):
        render(SatelliteSceneSpec(seed=0, height=64, width=64), window)


# ----------------------------------------------------------------------------- render


def _assert_same(a: SceneWindow, b: SceneWindow) -> None:
    assert np.array_equal(a.image, b.image)
    assert np.array_equal(a.semantic, b.semantic)
    assert np.array_equal(a.instance, b.instance)


def _crop(scene: SceneWindow, y0: int, x0: int, y1: int, x1: int) -> SceneWindow:
    return SceneWindow(scene.image[:, y0:y1, x0:x1], scene.semantic[y0:y1, x0:x1], scene.instance[y0:y1, x0:x1])


@st.composite
def spec_and_windows(draw):
    spec = SatelliteSceneSpec(
        seed=draw(st.integers(0, 2**32)),
        height=draw(st.integers(1, 220)),
        width=draw(st.integers(1, 220)),
        bands=draw(st.sampled_from([3, 4])),
        cell_size=draw(st.sampled_from([16, 24, 48])),
        building_density=draw(st.sampled_from([1.0, 4.0])),
        road_density=draw(st.sampled_from([2.0, 12.0])),
        river_density=draw(st.sampled_from([0.0, 6.0])),
        forest_cover=0.3,
        lake_cover=0.2,
    )
    oy0 = draw(st.integers(0, spec.height - 1))
    ox0 = draw(st.integers(0, spec.width - 1))
    oy1 = draw(st.integers(oy0 + 1, spec.height))
    ox1 = draw(st.integers(ox0 + 1, spec.width))
    iy0 = draw(st.integers(oy0, oy1 - 1))
    ix0 = draw(st.integers(ox0, ox1 - 1))
    iy1 = draw(st.integers(iy0 + 1, oy1))
    ix1 = draw(st.integers(ix0 + 1, ox1))
    return spec, Window((oy0, ox0), (oy1, ox1)), Window((iy0, ix0), (iy1, ix1))


@settings(max_examples=40, deadline=None)
@given(spec_and_windows())
def test_render_window_equals_crop_of_containing_window(case):
    spec, outer, inner = case
    big, small = render(spec, outer), render(spec, inner)
    (y0, x0), (y1, x1) = inner.relative_to(outer).start, inner.relative_to(outer).stop
    _assert_same(small, _crop(big, y0, x0, y1, x1))
    assert small.image.shape == (spec.bands, *inner.shape)


def test_tiles_stitch_to_the_whole_scene():
    spec = SatelliteSceneSpec(seed=21, height=300, width=410, building_density=3.0, road_density=6.0)
    whole = render(spec)
    for y in range(0, 300, 128):
        for x in range(0, 410, 100):
            window = Window((y, x), (min(y + 128, 300), min(x + 100, 410)))
            _assert_same(render(spec, window), _crop(whole, y, x, *window.stop))


def test_same_seed_same_scene_other_seed_other_scene():
    a = render(SatelliteSceneSpec(seed=5, height=128, width=128))
    _assert_same(a, render(SatelliteSceneSpec(seed=5, height=128, width=128)))
    b = render(SatelliteSceneSpec(seed=6, height=128, width=128))
    assert np.mean(a.image != b.image) > 0.5


def test_window_of_a_huge_scene_costs_only_the_window():
    spec = SatelliteSceneSpec(seed=1, height=1_000_000, width=1_000_000)
    scene = render(spec, Window((500_000, 700_000), (500_064, 700_080)))
    assert scene.image.shape == (3, 64, 80)
    assert scene.instance.max() <= spec.max_instance_id


# ----------------------------------------------------------------------------- 1024² scenes


@pytest.fixture(scope="module")
def scenes() -> tuple[SceneWindow, SceneWindow]:
    return (
        render(SatelliteSceneSpec(seed=11, height=1024, width=1024, bands=4)),
        render(SatelliteSceneSpec(seed=12, height=1024, width=1024, bands=4)),
    )


FRACTIONS = {0: (0.35, 0.70), 1: (0.12, 0.40), 2: (0.02, 0.20), 3: (0.02, 0.10), 4: (0.02, 0.12)}


def test_all_classes_present_with_sensible_fractions(scenes):
    for scene in scenes:
        fractions = np.bincount(scene.semantic.ravel(), minlength=5) / scene.semantic.size
        print("class fractions", np.round(fractions, 3))
        assert fractions.size == 5
        for cls, (low, high) in FRACTIONS.items():
            assert low <= fractions[cls] <= high, (cls, fractions)


def test_image_uses_most_of_the_range_and_nir_separates_vegetation(scenes):
    scene = scenes[0]
    assert scene.image.min() < 40 and scene.image.max() > 220
    nir = scene.image[3].astype(float)
    means = [nir[scene.semantic == c].mean() for c in range(3)]
    assert means[1] > means[0] + 40 > means[2] + 80


def test_instances_are_rectangles_with_unique_ids(scenes):
    spec = SatelliteSceneSpec(seed=11, height=1024, width=1024, bands=4)
    scene = scenes[0]
    building = scene.semantic == BUILDING
    assert np.array_equal(building, scene.instance != 0)
    ids = np.unique(scene.instance[building])
    assert ids.size > 30 and ids.max() <= spec.max_instance_id
    boxes = ndimage.find_objects(scene.instance.astype(np.int64))
    for i in ids:
        box = boxes[i - 1]
        sides = [s.stop - s.start for s in box]
        assert np.all(scene.instance[box] == i), i  # the id fills its bounding box: one rectangle
        assert all(8 <= side <= 40 for side in sides), sides
    labels, count = ndimage.label(building)
    assert count == ids.size  # buildings never touch each other


def test_buildings_keep_clear_of_water_and_roads(scenes):
    for scene in scenes:
        near = ndimage.binary_dilation(scene.semantic == BUILDING, np.ones((5, 5), bool))
        assert not np.any(near & np.isin(scene.semantic, [WATER, ROAD]))


# ----------------------------------------------------------------------------- difficulty


def _miou(pred: np.ndarray, truth: np.ndarray, k: int = 5) -> float:
    cm = np.bincount(truth * k + pred, minlength=k * k).reshape(k, k)
    inter = np.diag(cm)
    return float(np.mean(inter / np.maximum(cm.sum(0) + cm.sum(1) - inter, 1)))


def _features(image: np.ndarray, local: bool) -> np.ndarray:
    bands = image[:3].astype(np.float32)
    if not local:
        return bands.reshape(3, -1).T
    feats = [ndimage.uniform_filter(b, size) for b in bands for size in (3, 5)]
    return np.stack(feats).reshape(len(feats), -1).T


def _nearest_mean(train_x, train_y, test_x):
    means = np.stack([train_x[train_y == c].mean(0) for c in range(5)])
    return np.argmin(((test_x[:, None, :] - means[None]) ** 2).sum(-1), axis=1)


def _gaussian(train_x, train_y, test_x):
    scores = []
    for c in range(5):
        z = train_x[train_y == c]
        cov = np.cov(z.T) + 1e-3 * np.eye(z.shape[1])
        d = test_x - z.mean(0)
        maha = np.einsum("ij,jk,ik->i", d, np.linalg.inv(cov), d)
        scores.append(-0.5 * maha - 0.5 * np.linalg.slogdet(cov)[1] + np.log(np.mean(train_y == c)))
    return np.argmax(scores, axis=0)


def test_colour_alone_is_not_enough_but_local_features_go_far(scenes):
    """Fit on one seed, test on another (every other pixel of the test scene)."""
    train, test = scenes
    ytr, yte = train.semantic.ravel(), test.semantic[::2, ::2].ravel()

    def every_other(x: np.ndarray) -> np.ndarray:
        return x.reshape(1024, 1024, -1)[::2, ::2].reshape(-1, x.shape[1])

    colour = _nearest_mean(_features(train.image, False), ytr, every_other(_features(test.image, False)))
    local = _gaussian(_features(train.image, True), ytr, every_other(_features(test.image, True)))
    per_pixel, neighbourhood = _miou(colour, yte), _miou(local, yte)
    print(f"mIoU: per-pixel nearest class mean {per_pixel:.3f}, 3x3/5x5 local means + Gaussian {neighbourhood:.3f}")
    assert per_pixel < 0.85
    assert neighbourhood > 0.7
