"""Colours of the satellite scene as ``(R, G, B, NIR)`` in digital numbers.

Rows of the tables are what the label generators pick from (parcel kinds, roof
kinds), so their lengths are part of the scene; the 4th column is used only for
4-band scenes.
"""

from __future__ import annotations

import numpy as np

SOIL = np.array(
    [
        [176, 150, 112, 120],
        [146, 112, 80, 108],
        [118, 92, 66, 98],
        [192, 166, 112, 132],
        [204, 188, 152, 142],
        [152, 140, 96, 150],
    ],
    dtype=np.float32,
)
GRASS = np.array([[112, 152, 72, 195], [96, 136, 62, 185]], dtype=np.float32)
FIELDS = np.concatenate([SOIL, GRASS])
"""Field parcel palette: soils first, then grass (vegetation)."""
HEDGE = np.array([92, 98, 62, 150], dtype=np.float32)
FOREST = np.array([56, 92, 46, 205], dtype=np.float32)
WATER = np.array([34, 58, 84, 18], dtype=np.float32)
SEDIMENT = np.array([22, 18, 4, 6], dtype=np.float32)
ASPHALT = np.array([112, 113, 112, 86], dtype=np.float32)
PAINT = np.array([226, 226, 218, 200], dtype=np.float32)
ROOFS = np.array(
    [
        [172, 72, 56, 92],
        [192, 104, 72, 104],
        [128, 128, 134, 112],
        [86, 90, 98, 82],
        [218, 218, 212, 196],
        [124, 88, 62, 92],
        [152, 162, 172, 132],
    ],
    dtype=np.float32,
)
HAZE = np.array([200, 206, 216, 150], dtype=np.float32)
