"""Hash streams of the satellite scene, and reading values out of a hash.

Every independent use of :func:`segcore.synthetic.noise.hash_u64` or
:func:`~segcore.synthetic.noise.fbm` gets its own stream id, so fields never
correlate. The ids are listed together here so that none is used twice: roads
and rivers use ``LINES + 2 * i`` and ``LINES + 2 * i + 1``, sensor noise
``NOISE + band``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["bits", "unit"]

PARCEL, PARCEL_ROW, FOREST, LAKE, SETTLE = 1, 2, 3, 4, 5
BUILD_A, BUILD_B, BUILD_C = 6, 7, 15
BUILD_LARGE, BUILD_SIZE, BUILD_NOTCH = 16, 17, 18
TEX_SOIL, TEX_CROWN, TEX_FOREST, TEX_WATER, TEX_FINE = 8, 9, 10, 11, 12
ILLUM, HAZE, NOISE, LINES = 13, 14, 20, 40


def bits(h: NDArray[np.uint64], shift: int, modulo: int) -> NDArray[np.int64]:
    """The bits of ``h`` from ``shift`` on, modulo ``modulo``, as ``int64``."""
    return ((h >> np.uint64(shift)) % np.uint64(modulo)).astype(np.int64)


def unit(h: NDArray[np.uint64], shift: int) -> NDArray[np.float32]:
    """24 bits of ``h`` starting at ``shift`` as a float in ``[0, 1)``."""
    return ((h >> np.uint64(shift)) & np.uint64(0xFFFFFF)).astype(np.float32) * np.float32(
        1.0 / (1 << 24)
    )
