"""``box_maximum`` (the NMS of the centre peaks) equals PyTorch's ``max_pool``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from segcore.instances.grouping import box_maximum, find_centres

_POOLS = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}


def _max_pool(values: torch.Tensor, kernel: int) -> torch.Tensor:
    """The reference: one ``max_pool`` over the whole box, border windows clipped."""
    return _POOLS[values.ndim](values[None, None], kernel, stride=1, padding=kernel // 2)[0, 0]


@settings(max_examples=120, deadline=None)
@given(shape=st.lists(st.integers(1, 12), min_size=1, max_size=3),
       kernel=st.sampled_from([1, 3, 5, 7, 9]), seed=st.integers(0, 2**32 - 1),
       specials=st.booleans())
def test_box_maximum_equals_max_pool(shape: list[int], kernel: int, seed: int,
                                     specials: bool) -> None:
    rng = np.random.default_rng(seed)
    values = rng.uniform(-2, 2, shape).astype(np.float32)
    if specials:  # ties, infinities and NaN (which max_pool propagates) in a few places
        flat = values.reshape(-1)
        picks = rng.integers(0, flat.size, 4)
        flat[picks] = np.array([np.nan, np.inf, -np.inf, flat[0]], np.float32)
    t = torch.from_numpy(values)
    ours = box_maximum(t, kernel).numpy()
    np.testing.assert_array_equal(ours, _max_pool(t, kernel).numpy())
    r = kernel // 2  # and the box maximum by definition, element by element
    for idx in np.ndindex(*values.shape):
        box = values[tuple(slice(max(0, i - r), i + r + 1) for i in idx)]
        assert ours[idx] == box.max() or (np.isnan(ours[idx]) and np.isnan(box).any())


@pytest.mark.parametrize("shape", [(624, 624), (40, 72, 72)])
def test_find_centres_on_a_model_sized_heatmap(shape: tuple[int, ...]) -> None:
    """The peaks of a smooth heatmap the size of a model window: the same as with the
    separable max_pool the centres were found with before."""
    rng = np.random.default_rng(3)
    heat = torch.from_numpy(rng.uniform(0, 1, shape).astype(np.float32))
    pooled = heat[None, None]
    for axis in range(heat.ndim):
        kernel = tuple(7 if a == axis else 1 for a in range(heat.ndim))
        padding = tuple(3 if a == axis else 0 for a in range(heat.ndim))
        pooled = _POOLS[heat.ndim](pooled, kernel, stride=1, padding=padding)
    expected = torch.nonzero((heat == pooled[0, 0]) & (heat > 0.1))
    got = find_centres(heat, threshold=0.1, nms_kernel=7)
    assert len(got) > 10
    assert torch.equal(got, expected)
