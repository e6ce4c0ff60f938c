"""Large buildings in synthetic satellite scenes (``SatelliteSceneSpec.large_buildings``)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from segcore.errors import ConfigError
from segcore.geometry.window import Window
from segcore.synthetic.buildings import footprint
from segcore.synthetic.satellite import SatelliteSceneSpec, SceneWindow, render

BUILDING, ROAD, WATER = 4, 3, 2
SMALL_MAX = 40  # the sides of ordinary buildings are 8-40 px
BUSY = {"building_density": 4.0, "river_density": 0.0, "lake_cover": 0.03, "road_density": 1.5}


def _boxes(instance: np.ndarray) -> dict[int, tuple[slice, slice]]:
    found = ndimage.find_objects(instance.astype(np.int64))
    return {i + 1: box for i, box in enumerate(found) if box is not None}


def _side(box: tuple[slice, slice]) -> int:
    return max(s.stop - s.start for s in box)


@pytest.mark.parametrize("value", [-0.1, 1.01, float("nan"), True, "0.5", None])
def test_spec_rejects_bad_large_buildings(value):
    with pytest.raises(ConfigError, match="SatelliteSceneSpec.large_buildings"):
        SatelliteSceneSpec(seed=0, height=64, width=64, large_buildings=value)


@pytest.mark.parametrize("notch", [(0, 0, 0), (2, 3, 0), (2, 3, 1), (4, 1, 2), (1, 5, 3)])
def test_footprint_is_the_box_less_one_corner(notch):
    mask = footprint(6, 7, notch)
    h, w, corner = notch
    rows = slice(0, h) if corner < 2 else slice(6 - h, 6)
    cols = slice(0, w) if corner in (0, 2) else slice(7 - w, 7)
    assert not mask[rows, cols].any()
    assert mask.sum() == 42 - h * w
    assert ndimage.label(mask)[1] == 1


@pytest.fixture(scope="module")
def pair() -> tuple[SatelliteSceneSpec, SceneWindow, SceneWindow]:
    """The same scene without and with large buildings."""
    spec = SatelliteSceneSpec(seed=6, height=640, width=768, cell_size=128, **BUSY)
    large = SatelliteSceneSpec(seed=6, height=640, width=768, cell_size=128, large_buildings=0.6,
                               **BUSY)
    return large, render(spec), render(large)


def test_large_buildings_change_only_their_own_cells(pair):
    """Ordinary buildings keep their draws: a scene with large buildings differs from the
    one without only in cells where a large candidate stands (or was rejected)."""
    spec, plain, large = pair
    before, after = _boxes(plain.instance), _boxes(large.instance)
    big = {i for i, box in after.items() if _side(box) > SMALL_MAX}
    assert len(big) >= 3 and len(after) - len(big) >= 3
    for i in set(after) - big:  # ordinary buildings are the ones of the plain scene
        assert i in before
        assert np.array_equal(plain.instance == i, large.instance == i)
    changed = np.zeros(spec.cells, bool)
    for i in big | (set(before) - set(after)):
        changed[divmod(i - 1, spec.cells[1])] = True
    cell_of_pixel = np.kron(changed, np.ones((spec.cell_size,) * 2, bool))[: spec.height, : spec.width]
    differ = (plain.image != large.image).any(0) | (plain.semantic != large.semantic)
    assert differ.any() and not (differ & ~cell_of_pixel).any()


@pytest.mark.parametrize("cell", [128, 256])
def test_large_buildings_fill_most_of_their_cell(cell):
    spec = SatelliteSceneSpec(seed=6, height=1024, width=1024, cell_size=cell, large_buildings=1.0,
                              **BUSY)
    scene = render(spec)
    building = scene.semantic == BUILDING
    assert np.array_equal(building, scene.instance != 0)
    boxes = _boxes(scene.instance)
    assert len(boxes) >= 4
    assert ndimage.label(building)[1] == len(boxes)  # one piece each, never touching
    shapes = {"rectangle": 0, "L": 0}
    for i, box in boxes.items():
        sides = [s.stop - s.start for s in box]
        assert all(0.55 * (cell - 8) - 1 <= side <= 0.9 * (cell - 6) for side in sides), sides
        assert all(s.start // cell == (s.stop - 1) // cell for s in box), "inside its cell"
        mask = scene.instance[box] == i
        corners = [(0, 0), (0, -1), (-1, 0), (-1, -1)]
        cut = [c for c in corners if not mask[c]]
        assert len(cut) <= 1
        if cut:
            shapes["L"] += 1
            notch = (int((~mask[:, cut[0][1]]).sum()), int((~mask[cut[0][0], :]).sum()),
                     corners.index(cut[0]))
            assert np.array_equal(mask, footprint(*mask.shape, notch))
        else:
            shapes["rectangle"] += 1
            assert mask.all()
    assert min(shapes.values()) >= 1, shapes
    near = ndimage.binary_dilation(building, np.ones((5, 5), bool))
    assert not np.any(near & np.isin(scene.semantic, [WATER, ROAD]))


WINDOWS = [((0, 0), (640, 768)), ((100, 130), (400, 500)), ((255, 255), (257, 600)),
           ((37, 0), (38, 1)), ((300, 380), (640, 768))]


@pytest.mark.parametrize("cell, fraction", [(128, 0.6), (256, 1.0), (160, 0.3)])
def test_large_buildings_render_window_independently(cell, fraction):
    spec = SatelliteSceneSpec(seed=3, height=640, width=768, cell_size=cell,
                              large_buildings=fraction, **BUSY)
    whole = render(spec)
    assert any(_side(b) > SMALL_MAX for b in _boxes(whole.instance).values())
    for start, stop in WINDOWS:
        part = render(spec, Window(start, stop))
        crop = (slice(start[0], stop[0]), slice(start[1], stop[1]))
        assert np.array_equal(part.image, whole.image[(slice(None), *crop)])
        assert np.array_equal(part.semantic, whole.semantic[crop])
        assert np.array_equal(part.instance, whole.instance[crop])


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32), cell=st.sampled_from([16, 32, 64]),
    fraction=st.sampled_from([0.3, 1.0]), y0=st.integers(0, 199), x0=st.integers(0, 199),
    h=st.integers(1, 120), w=st.integers(1, 120),
)
def test_window_equals_crop_with_large_buildings(seed, cell, fraction, y0, x0, h, w):
    spec = SatelliteSceneSpec(seed=seed, height=200, width=200, cell_size=cell,
                              large_buildings=fraction, building_density=4.0)
    whole = render(spec)
    y1, x1 = min(y0 + h, 200), min(x0 + w, 200)
    part = render(spec, Window((y0, x0), (y1, x1)))
    assert np.array_equal(part.image, whole.image[:, y0:y1, x0:x1])
    assert np.array_equal(part.instance, whole.instance[y0:y1, x0:x1])
