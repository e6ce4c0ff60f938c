"""Quicklook colours: the class overlay blends each labelled pixel with its class colour."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.report.quicklook import overlay


def _blend_pixel_by_pixel(rgb, labels, colors, alpha):
    """The definition, one pixel at a time in float32 (what PNG viewers are shown)."""
    out = rgb.copy()
    for (r, c), label in np.ndenumerate(labels):
        if 0 <= label < len(colors):
            mixed = (np.float32(1 - alpha) * rgb[r, c].astype(np.float32)
                     + np.float32(alpha) * np.asarray(colors[label], np.float32))
            out[r, c] = mixed.astype(np.uint8)
    return out


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32])
@pytest.mark.parametrize("alpha", [0.45, 1.0])
def test_overlay_blends_known_classes_and_keeps_the_rest(dtype, alpha):
    rng = np.random.default_rng(4)
    rgb = rng.integers(0, 256, (23, 31, 3)).astype(np.uint8)
    labels = rng.integers(0, 9, (23, 31)).astype(dtype)  # 6 classes; 6-8 unknown
    if np.dtype(dtype).kind == "i":
        labels[0, :5] = -1  # never a class
    colors = [tuple(int(v) for v in rng.integers(0, 256, 3)) for _ in range(6)]
    got = overlay(rgb, labels, colors, alpha=alpha)
    assert got.dtype == np.uint8 and got.shape == rgb.shape
    assert got.tolist() == _blend_pixel_by_pixel(rgb, labels, colors, alpha).tolist()
    unknown = (labels < 0) | (labels >= 6)
    assert unknown.any() and (got[unknown] == rgb[unknown]).all()
