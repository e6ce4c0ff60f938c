"""The RGB PNG writer of the quicklooks, read back by Pillow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.report.png import write_rgb_png


@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (7, 3), (300, 211), (64, 1024)])
@pytest.mark.parametrize("kind", ["noise", "flat", "stripes"])
def test_pillow_reads_back_the_pixels(tmp_path: Path, shape, kind) -> None:
    rng = np.random.default_rng(sum(shape))
    if kind == "noise":
        rgb = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    elif kind == "flat":
        rgb = np.full((*shape, 3), (250, 3, 128), np.uint8)
    else:  # byte differences that wrap around modulo 256 in the Sub filter
        rgb = np.zeros((*shape, 3), np.uint8)
        rgb[:, ::2] = 255
    path = tmp_path / "a.png"
    write_rgb_png(path, rgb)
    with Image.open(path) as image:
        assert image.mode == "RGB" and image.size == shape[::-1]
        np.testing.assert_array_equal(np.asarray(image), rgb)


@pytest.mark.parametrize("bad", [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8),
                                 np.zeros((4, 4, 3), np.float32), np.zeros((0, 4, 3), np.uint8)])
def test_other_arrays_are_refused(tmp_path: Path, bad) -> None:
    with pytest.raises(ValueError, match=r"rgb: expected a non-empty \(H, W, 3\) uint8"):
        write_rgb_png(tmp_path / "a.png", bad)
    assert not (tmp_path / "a.png").exists()
