"""Coordinate-hashed noise: the same value at a global pixel, whatever window asks.

Every function here is a pure function of *global* integer (or float) coordinates
and a seed. Nothing depends on the shape or origin of the array that holds the
coordinates, so a window of a procedural scene equals the same crop of any larger
window, bit for bit. Three ingredients:

- :func:`hash_u64` / :func:`hash_uniform`: a 64-bit integer hash of
  ``(y, x, seed, stream)`` (SplitMix64 finaliser, numpy ``uint64`` arithmetic
  that wraps modulo 2**64): per-pixel white noise.
- :func:`value_noise`: lattice values from the hash, blended with the quintic
  fade ``6t^5 - 15t^4 + 10t^3`` (smooth, C2 continuous).
- :func:`fbm` / :func:`fbm1d`: fractal sums of octaves, each with its own hash
  stream, normalised to about ``[-1, 1]``.

Only IEEE-exact element-wise operations (``+ - * /``, ``floor``) touch per-pixel
data, never transcendental functions whose SIMD and scalar paths may differ in the
last bit, so results do not depend on array length or memory layout.

For coordinates given as an outer grid (``y`` of shape ``(h, 1)``, ``x`` of shape
``(1, w)``) the lattice is hashed once per lattice point and interpolated
separably: the same operations in the same order as the general path, hence the
same bits, at a fraction of the cost.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from segcore.errors import ConfigError

__all__ = ["fbm", "fbm1d", "hash_u64", "hash_uniform", "value_noise"]

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_MUL1 = 0xBF58476D1CE4E5B9
_MUL2 = 0x94D049BB133111EB
_INV_2_24 = np.float32(1.0 / (1 << 24))


def _mix_int(value: int) -> int:
    """SplitMix64 step on a Python int (exact, for seeds and stream keys)."""
    z = (value + _GOLDEN) & _MASK64
    z = ((z ^ (z >> 30)) * _MUL1) & _MASK64
    z = ((z ^ (z >> 27)) * _MUL2) & _MASK64
    return z ^ (z >> 31)


def _mix(h: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """SplitMix64 step on a ``uint64`` array (wrapping arithmetic, in place)."""
    with np.errstate(over="ignore"):  # 0-d inputs become scalars, which warn on wrap
        h += np.uint64(_GOLDEN)
        h ^= h >> np.uint64(30)
        h *= np.uint64(_MUL1)
        h ^= h >> np.uint64(27)
        h *= np.uint64(_MUL2)
        h ^= h >> np.uint64(31)
    return h


def _key(seed: int, stream: int) -> int:
    """64-bit key of ``(seed, stream)``; any Python ints, negative included."""
    return _mix_int(_mix_int(seed & _MASK64) ^ (stream & _MASK64))


def _as_u64(a: ArrayLike) -> NDArray[np.uint64]:
    """Integer coordinates as ``uint64`` (two's complement wrap for negatives)."""
    return np.asarray(a, dtype=np.int64).astype(np.uint64)


def hash_u64(y: ArrayLike, x: ArrayLike, seed: int, stream: int = 0) -> NDArray[np.uint64]:
    """64-bit hash of integer coordinates.

    Parameters
    ----------
    y, x : (...) array_like of int
        Global coordinates; broadcast against each other. Negative values are fine.
    seed : int
        Scene seed (any Python int).
    stream : int, optional
        Independent sub-stream (one per use: texture, noise band, attribute...).

    Returns
    -------
    (...) ndarray of uint64
        Well-mixed hash values, shape of ``broadcast(y, x)``.

    Examples
    --------
    >>> import numpy as np
    >>> a = hash_u64(np.arange(3)[:, None], np.arange(4), seed=7)
    >>> a.shape, a.dtype.name
    ((3, 4), 'uint64')
    >>> bool(a[1, 2] == hash_u64(1, 2, seed=7))
    True
    """
    yy, xx = np.broadcast_arrays(_as_u64(y), _as_u64(x))
    h = yy ^ np.uint64(_key(seed, stream))
    h = _mix(h)
    h ^= xx
    return _mix(h)


def hash_uniform(y: ArrayLike, x: ArrayLike, seed: int, stream: int = 0) -> NDArray[np.float32]:
    """Uniform white noise in ``[0, 1)`` from :func:`hash_u64`.

    The top 24 bits of the hash are scaled by ``2**-24``, so every value is an
    exact ``float32``.

    Parameters
    ----------
    y, x : (...) array_like of int
        Global coordinates, broadcast against each other.
    seed : int
        Scene seed.
    stream : int, optional
        Independent sub-stream.

    Returns
    -------
    (...) ndarray of float32
        Values in ``[0, 1)``.

    Examples
    --------
    >>> u = hash_uniform(np.arange(100)[:, None], np.arange(100), seed=1)
    >>> bool(0.0 <= u.min() and u.max() < 1.0), round(float(u.mean()), 1)
    (True, 0.5)
    """
    h = hash_u64(y, x, seed, stream)
    return (h >> np.uint64(40)).astype(np.float32) * _INV_2_24


def _fade(t: NDArray[np.float64]) -> NDArray[np.float32]:
    """Quintic fade ``6t^5 - 15t^4 + 10t^3`` (Horner form)."""
    return (t * t * t * (t * (t * 6.0 - 15.0) + 10.0)).astype(np.float32)


def _lattice(ylo: int, yhi: int, xlo: int, xhi: int, seed: int, stream: int) -> NDArray[np.float32]:
    """Lattice values in ``[-1, 1)`` for rows ``ylo..yhi`` and columns ``xlo..xhi``."""
    iy = np.arange(ylo, yhi + 1, dtype=np.int64)[:, None]
    ix = np.arange(xlo, xhi + 1, dtype=np.int64)[None, :]
    return hash_uniform(iy, ix, seed, stream) * np.float32(2.0) - np.float32(1.0)


def _is_outer_grid(y: NDArray, x: NDArray) -> bool:
    return y.ndim == 2 and x.ndim == 2 and y.shape[1] == 1 and x.shape[0] == 1


def _cell(coord: NDArray, scale: float) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    u = np.asarray(coord, dtype=np.float64) / scale
    i = np.floor(u)
    return i.astype(np.int64), _fade(u - i)


def _value_noise_grid(
    y: NDArray, x: NDArray, seed: int, scale: float, stream: int
) -> NDArray[np.float32]:
    """Separable evaluation on an outer grid: hash each lattice point once."""
    iy, wy = _cell(y, scale)
    ix, wx = _cell(x, scale)
    if iy.size == 0 or ix.size == 0:
        return np.zeros((y.shape[0], x.shape[1]), dtype=np.float32)
    ylo, xlo = int(iy.min()), int(ix.min())
    lat = _lattice(ylo, int(iy.max()) + 1, xlo, int(ix.max()) + 1, seed, stream)
    b = ix[0] - xlo
    left = lat[:, b]
    along_x = left + (lat[:, b + 1] - left) * wx[0]  # (lattice rows, w)
    a = iy[:, 0] - ylo
    top = along_x[a]
    return top + (along_x[a + 1] - top) * wy


def _value_noise_points(
    y: NDArray, x: NDArray, seed: int, scale: float, stream: int
) -> NDArray[np.float32]:
    """General evaluation: hash the four lattice corners of every point."""
    iy, wy = _cell(y, scale)
    ix, wx = _cell(x, scale)

    def corner(dy: int, dx: int) -> NDArray[np.float32]:
        return hash_uniform(iy + dy, ix + dx, seed, stream) * np.float32(2.0) - np.float32(1.0)

    v00 = corner(0, 0)
    top = v00 + (corner(0, 1) - v00) * wx
    v10 = corner(1, 0)
    bottom = v10 + (corner(1, 1) - v10) * wx
    return top + (bottom - top) * wy


def _check_scale(scale: float, octaves: int) -> None:
    if not (isinstance(scale, (int, float)) and np.isfinite(scale) and scale > 0):
        raise ConfigError(f"scale: expected a finite number > 0, received {scale!r}")
    if isinstance(octaves, bool) or not isinstance(octaves, int) or octaves < 1:
        raise ConfigError(f"octaves: expected an int >= 1, received {octaves!r}")


def value_noise(
    y: ArrayLike, x: ArrayLike, *, seed: int, scale: float, stream: int = 0
) -> NDArray[np.float32]:
    """Smooth value noise in ``[-1, 1)`` with lattice spacing ``scale`` pixels.

    Parameters
    ----------
    y, x : (...) array_like of int or float
        Global coordinates, broadcast against each other. An outer grid
        (``(h, 1)`` and ``(1, w)``) takes a fast separable path with identical
        results.
    seed : int
        Scene seed.
    scale : float
        Lattice spacing in pixels (feature size), ``> 0``.
    stream : int, optional
        Independent sub-stream.

    Returns
    -------
    (...) ndarray of float32
        Noise values; equal to the lattice value at lattice points.

    Examples
    --------
    >>> ys, xs = np.arange(5)[:, None], np.arange(6)[None, :]
    >>> grid = value_noise(ys, xs, seed=3, scale=4.0)
    >>> pts = value_noise(np.array([2, 4]), np.array([5, 1]), seed=3, scale=4.0)
    >>> bool(grid[2, 5] == pts[0] and grid[4, 1] == pts[1])
    True
    """
    _check_scale(scale, 1)
    ya, xa = np.asarray(y), np.asarray(x)
    if _is_outer_grid(ya, xa):
        return _value_noise_grid(ya, xa, seed, float(scale), stream)
    ya, xa = np.broadcast_arrays(ya, xa)
    return _value_noise_points(ya, xa, seed, float(scale), stream)


def fbm(
    y: ArrayLike,
    x: ArrayLike,
    *,
    seed: int,
    scale: float,
    octaves: int = 4,
    gain: float = 0.5,
    stream: int = 0,
) -> NDArray[np.float32]:
    """Fractal Brownian motion: octaves of :func:`value_noise`, halving the scale.

    Octave ``k`` has scale ``scale / 2**k``, amplitude ``gain**k`` and its own
    hash stream; the sum is divided by the total amplitude, so values lie in
    ``[-1, 1]`` (standard deviation about 0.3 for the defaults).

    Parameters
    ----------
    y, x : (...) array_like of int or float
        Global coordinates, broadcast against each other.
    seed : int
        Scene seed.
    scale : float
        Largest feature size in pixels, ``> 0``.
    octaves : int, optional
        Number of octaves, ``>= 1``.
    gain : float, optional
        Amplitude ratio between successive octaves.
    stream : int, optional
        Independent sub-stream (use a different one for every field).

    Returns
    -------
    (...) ndarray of float32
        Noise in ``[-1, 1]``.

    Raises
    ------
    ConfigError
        If ``scale <= 0`` or ``octaves < 1``.

    Examples
    --------
    >>> ys, xs = np.arange(40, 60)[:, None], np.arange(100, 130)[None, :]
    >>> big = fbm(np.arange(0, 80)[:, None], np.arange(90, 140)[None, :], seed=5, scale=16)
    >>> bool(np.array_equal(fbm(ys, xs, seed=5, scale=16), big[40:60, 10:40]))
    True
    """
    _check_scale(scale, octaves)
    total: NDArray[np.float32] | None = None
    amplitude, norm = 1.0, 0.0
    for k in range(octaves):
        layer = value_noise(y, x, seed=seed, scale=scale / 2.0**k, stream=(stream << 8) + k)
        layer *= np.float32(amplitude)
        total = layer if total is None else total + layer
        norm += amplitude
        amplitude *= gain
    assert total is not None
    total *= np.float32(1.0 / norm)
    return total


def fbm1d(
    t: ArrayLike, *, seed: int, scale: float, octaves: int = 3, stream: int = 0
) -> NDArray[np.float32]:
    """One-dimensional fractal noise of a coordinate ``t`` (e.g. distance along a line).

    Lattice values are hashed once for the range of ``t`` present and gathered,
    so the cost is one pass over ``t`` per octave.

    Parameters
    ----------
    t : (...) array_like of float
        Global 1-D coordinate per element.
    seed : int
        Scene seed.
    scale : float
        Largest feature length, ``> 0``.
    octaves : int, optional
        Number of octaves, ``>= 1``.
    stream : int, optional
        Independent sub-stream.

    Returns
    -------
    (...) ndarray of float32
        Noise in ``[-1, 1]``.

    Examples
    --------
    >>> t = np.linspace(0.0, 100.0, 7)
    >>> bool(np.array_equal(fbm1d(t, seed=2, scale=30)[2:5], fbm1d(t[2:5], seed=2, scale=30)))
    True
    """
    _check_scale(scale, octaves)
    ta = np.asarray(t, dtype=np.float64)
    total = np.zeros(ta.shape, dtype=np.float32)
    if ta.size == 0:
        return total
    amplitude, norm = 1.0, 0.0
    for k in range(octaves):
        i, w = _cell(ta, scale / 2.0**k)
        lo, hi = int(i.min()), int(i.max()) + 1
        lat = _lattice(0, 0, lo, hi, seed, (stream << 8) + k)[0]
        left = lat[i - lo]
        total += (left + (lat[i - lo + 1] - left) * w) * np.float32(amplitude)
        norm += amplitude
        amplitude *= 0.5
    total *= np.float32(1.0 / norm)
    return total
