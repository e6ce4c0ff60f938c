"""Quicklook colours: the class overlay blends each labelled pixel with its class colour, and
the class image (a palette PNG) decodes to the class colours on black."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipeline.report.quicklook import class_image, overlay, rgb_preview


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


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32])
@pytest.mark.parametrize("classes", [6, 255, 300])
def test_class_image_png_decodes_to_the_class_colours(dtype, classes, tmp_path):
    rng = np.random.default_rng(classes)
    labels = rng.integers(0, classes + 3, (23, 31)).astype(dtype)  # the last 3: not classes
    if np.dtype(dtype).kind == "i":
        labels[0, :5] = -1
    labels[1, :3] = 255 if np.dtype(dtype).itemsize == 1 else 65535 if dtype == np.uint16 else 7
    colors = [tuple(int(v) for v in rng.integers(0, 256, 3)) for _ in range(classes)]
    image = class_image(labels, colors)
    assert image.mode == ("P" if classes <= 255 else "RGB")
    image.save(tmp_path / "classes.png", compress_level=1)
    decoded = np.asarray(Image.open(tmp_path / "classes.png").convert("RGB"))
    expected = overlay(np.zeros((*labels.shape, 3), np.uint8), labels, colors, alpha=1.0)
    assert decoded.tolist() == expected.tolist()
    if classes <= 255:  # the values: class ids, 255 for the rest
        ids = np.asarray(Image.open(tmp_path / "classes.png"))
        known = (labels >= 0) & (labels < classes)
        assert (ids[known] == labels[known]).all() and (ids[~known] == 255).all()


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
@pytest.mark.parametrize("valid_share", [1.0, 0.7, 0.0])
def test_integer_stretch_equals_the_float_one(dtype, valid_share) -> None:
    """8- and 16-bit bands are stretched from a histogram and a table: the same pixels as
    the percentiles and arithmetic on float copies (the path float bands take)."""
    rng = np.random.default_rng(7)
    top = 255 if dtype == "uint8" else 6000
    image = rng.gamma(2.0, top / 6, (4, 300, 410)).clip(0, top).astype(dtype)
    valid = rng.random((300, 410)) < valid_share
    ours = rgb_preview(None, 1, strided=(image, valid))
    floats = rgb_preview(None, 1, strided=(image.astype(np.float32), valid))
    np.testing.assert_array_equal(ours, floats)
    assert not valid.any() or ours[valid].std() > 0
