"""Synthetic 3-D phantoms: determinism, classes, lesion placement, physical units."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from segcore.errors import ConfigError
from segcore.synthetic.phantom import (
    LESION,
    ORGAN,
    PHANTOM_CLASSES,
    Phantom,
    PhantomSpec,
    render_phantom,
)

SMALL = dict(shape=(48, 48, 48), spacing=(4.0, 4.0, 4.0))


@pytest.fixture(scope="module")
def phantom() -> Phantom:
    return render_phantom(PhantomSpec(shape=(64, 64, 64), spacing=(3.0, 3.0, 3.0), seed=5,
                                      lesions=(4, 6)))


def test_class_table() -> None:
    assert [(c.id, c.name, c.isthing) for c in PHANTOM_CLASSES] == [
        (0, "background", False), (1, "organ", False), (2, "lesion", True)]


def test_dtypes_shapes_and_classes(phantom: Phantom) -> None:
    assert phantom.image.dtype == np.int16 and phantom.semantic.dtype == np.uint8
    assert phantom.instance.dtype == np.uint32
    assert phantom.image.shape == phantom.semantic.shape == phantom.instance.shape == (64, 64, 64)
    assert phantom.spacing == (3.0, 3.0, 3.0)
    assert set(np.unique(phantom.semantic).tolist()) == {0, 1, 2}
    n = phantom.lesion_count
    assert 4 <= n <= 6
    assert sorted(np.unique(phantom.instance).tolist()) == list(range(n + 1))
    assert np.array_equal(phantom.instance > 0, phantom.semantic == LESION)
    assert 0.05 < (phantom.semantic > 0).mean() < 0.6  # organ: a good fraction


def test_intensities_are_raw_units_with_clear_contrast(phantom: Phantom) -> None:
    img, sem = phantom.image.astype(np.float64), phantom.semantic
    assert img.min() >= 0 and np.median(img[sem == 0]) < 100
    organ = np.median(img[sem == ORGAN])
    assert 450 < organ < 750
    for i in range(1, phantom.lesion_count + 1):
        core = ndimage.binary_erosion(phantom.instance == i)
        values = img[core] if core.any() else img[phantom.instance == i]
        assert abs(np.median(values) - organ) > 150  # clearly darker or brighter


def test_deterministic_for_a_seed() -> None:
    a, b = render_phantom(PhantomSpec(seed=2, **SMALL)), render_phantom(PhantomSpec(seed=2, **SMALL))
    c = render_phantom(PhantomSpec(seed=3, **SMALL))
    for name in ("image", "semantic", "instance"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.semantic, c.semantic)


def test_lesions_are_inside_the_organ_and_separate(phantom: Phantom) -> None:
    ball = ndimage.generate_binary_structure(3, 3)
    inst = phantom.instance
    for i in range(1, phantom.lesion_count + 1):
        mask = inst == i
        _, parts = ndimage.label(mask, structure=ball)
        assert parts == 1
        ring = ndimage.binary_dilation(mask, structure=ball) & ~mask
        # surrounded by organ only: neither background nor another lesion touches it
        assert np.all(phantom.semantic[ring] == ORGAN)


def test_spacing_changes_the_grid_not_the_anatomy() -> None:
    coarse = render_phantom(PhantomSpec(shape=(32, 48, 48), spacing=(6.0, 4.0, 4.0), seed=7,
                                        noise=0.0))
    fine = render_phantom(PhantomSpec(shape=(64, 96, 96), spacing=(3.0, 2.0, 2.0), seed=7,
                                      noise=0.0))
    assert coarse.lesion_count == fine.lesion_count
    for label in (ORGAN, LESION):
        v_coarse = (coarse.semantic == label).sum() * 96.0
        v_fine = (fine.semantic == label).sum() * 12.0
        assert v_coarse == pytest.approx(v_fine, rel=0.12 if label == LESION else 0.03)
    # the same lesion (id) sits at the same place in mm
    for i in range(1, fine.lesion_count + 1):
        c_coarse = (np.argwhere(coarse.instance == i).mean(0) + 0.5) * (6.0, 4.0, 4.0)
        c_fine = (np.argwhere(fine.instance == i).mean(0) + 0.5) * (3.0, 2.0, 2.0)
        assert np.allclose(c_coarse, c_fine, atol=2.5)


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(shape=(4, 4)), "shape"),
    (dict(spacing=(1.0, 0.0, 1.0)), "spacing"),
    (dict(lesions=(5, 2)), "lesions"),
    (dict(bias=1.5), "bias"),
])
def test_spec_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        PhantomSpec(**kwargs)
