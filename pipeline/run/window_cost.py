"""Choosing tile cores by cost: the fewest, largest windows that fit memory and keep
every worker busy.

Pure arithmetic (no model, no I/O). A candidate plan splits each axis of the scene
into ``n`` cores of ``ceil(L / n)`` pixels rounded up to the stride; each core is
read with its halo, clipped at the scene edge, and padded at the far end to the
stride (what the model really computes). Per axis this gives a list of window
lengths; a plan's windows are their outer product, so its total, largest window
and window count follow from per-axis sums, maxima and counts.

The cost of a plan is the time its windows take on ``workers`` equal workers, in
pixels computed, plus a fixed :data:`WINDOW_OVERHEAD` per window a worker handles
(a call, reading and writing)::

    makespan = max(total / W, ceil(N / W) * total / N, largest) + ceil(N / W) * overhead

Plans whose largest window exceeds ``max_window`` pixels (the memory budget) are
out unless none fits (then the smallest largest window wins). Among plans within
0.1 % of the cheapest: the fewest windows, then the largest cores on the last axes
(slabs along the first axis, contiguous in C order).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

WINDOW_OVERHEAD = 32**3  # pixels' worth of fixed cost per window (call, I/O set-up)
MAX_SPLITS = 32  # every count of cores per axis up to this is considered, then ~25 % steps


@dataclass(frozen=True)
class WindowChoice:
    """A chosen core size and what it costs.

    Parameters
    ----------
    tile : tuple of int
        Core size per axis (a multiple of the stride, or the whole axis).
    windows : int
        Number of tiles (windows).
    largest : int
        Pixels of the largest window (halo and stride padding included).
    cost : float
        Estimated makespan in pixels computed (module docstring).
    """

    tile: tuple[int, ...]
    windows: int
    largest: int
    cost: float


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def axis_windows(length: int, tile: int, halo: int, stride: int) -> list[int]:
    """Window lengths along one axis: cores of ``tile`` grown by ``halo``, clipped to
    ``[0, length)``, padded to a multiple of ``stride``.

    Examples
    --------
    >>> axis_windows(160, 80, 24, 8)
    [104, 104]
    >>> axis_windows(100, 48, 8, 8)
    [56, 64, 16]
    """
    out = []
    for start in range(0, length, tile):
        lo, hi = max(0, start - halo), min(length, start + tile + halo)
        out.append(_round_up(hi - lo, stride))
    return out


def _axis_candidates(length: int, halo: int, stride: int) -> list[tuple[int, int, int, int]]:
    """``(tile, count, sum, max)`` of the distinct core sizes along one axis."""
    most = max(1, -(-length // stride))
    splits = set(range(1, min(MAX_SPLITS, most) + 1)) | {most}
    n = MAX_SPLITS
    while n < most:  # beyond MAX_SPLITS, a geometric choice of counts
        splits.add(n)
        n = math.ceil(n * 1.25)
    seen: dict[int, tuple[int, int, int, int]] = {}
    for n in sorted(splits):
        tile = min(length, _round_up(-(-length // n), stride))
        if tile not in seen:
            w = axis_windows(length, tile, halo, stride)
            seen[tile] = (tile, len(w), sum(w), max(w))
    return list(seen.values())


def choose_tile(shape: tuple[int, ...], *, halo: int, stride: int, workers: int,
                max_window: int) -> WindowChoice:
    """The cheapest core size for ``shape`` (module docstring).

    Parameters
    ----------
    shape : tuple of int
        Scene shape (pixels or voxels).
    halo : int
        Halo per side, a multiple of ``stride``.
    stride : int
        Model stride.
    workers : int
        Workers that run windows at the same time.
    max_window : int
        Largest window (pixels) that fits a worker's memory.

    Returns
    -------
    WindowChoice

    Examples
    --------
    >>> choose_tile((160, 160, 160), halo=24, stride=8, workers=1, max_window=10**8).tile
    (160, 160, 160)
    >>> choose_tile((160, 160, 160), halo=24, stride=8, workers=2, max_window=10**8).tile
    (80, 160, 160)
    >>> choose_tile((160, 160, 160), halo=24, stride=8, workers=1, max_window=2 * 10**6).tile
    (80, 80, 160)
    """
    axes = [_axis_candidates(n, halo, stride) for n in shape]
    grids = np.meshgrid(*[np.arange(len(a)) for a in axes], indexing="ij")
    picks = [g.ravel() for g in grids]

    def column(k: int) -> list[np.ndarray]:
        return [np.array([c[k] for c in a], dtype=np.float64)[p] for a, p in zip(axes, picks)]

    count, total, largest = (np.prod(column(k), axis=0) for k in (1, 2, 3))
    rounds = np.ceil(count / workers)
    cost = np.maximum.reduce([total / workers, rounds * total / count, largest])
    cost = cost + rounds * WINDOW_OVERHEAD
    ok = largest <= max_window
    if not ok.any():
        ok = largest == largest.min()
    best = cost[ok].min()
    near = np.flatnonzero(ok & (cost <= best * 1.001))
    tiles = [tuple(int(axes[a][picks[a][i]][0]) for a in range(len(shape))) for i in near]
    order = sorted(range(len(near)), key=lambda j: (count[near[j]], [-t for t in tiles[j][::-1]]))
    i = near[order[0]]
    return WindowChoice(tile=tiles[order[0]], windows=int(count[i]), largest=int(largest[i]),
                        cost=float(cost[i]))


def window_pixels(shape: tuple[int, ...], tile: tuple[int, ...], halo: int, stride: int) -> int:
    """Pixels of the largest window of a plan (halo and stride padding included)."""
    return math.prod(max(axis_windows(n, t, halo, stride)) for n, t in zip(shape, tile))
