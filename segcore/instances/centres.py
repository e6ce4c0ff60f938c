"""Scene-wide instance centres: instances that do not depend on the tiling.

Panoptic-DeepLab groups thing pixels to the peaks of a centre heatmap. Grouping each
tile on its own and matching the pieces of neighbouring tiles makes the instances
depend on where the tile borders fall (an object larger than the halo is cut into
pieces that chains of overlap merges may or may not rejoin). The global centre pass
removes the tiling from the result by construction:

1. **Each tile** finds the heatmap peaks (:func:`~segcore.instances.grouping.find_centres`)
   over its halo window and keeps those in its core. A peak decision looks at the
   ``nms_kernel`` window around the pixel, so with a halo of at least ``nms_kernel // 2``
   every core pixel is decided exactly as on the whole scene, and every peak of the
   scene is found by exactly one tile (the one whose core holds it).
2. **The scene** gets one list of centres (:func:`scene_centres`): all tiles' peaks in
   row-major order, the ``top_k`` highest when that is set.
3. **Each block** of thing pixels votes ``x + offset(x)`` and joins the nearest centre of
   that list (:func:`assign_to_centres`); the id is the centre's rank ``+ 1``.

The result is a function of the heatmap, the offsets and the thing mask alone; a tile
size only decides where those are computed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from segcore.errors import ConfigError

__all__ = ["CentreIndex", "assign_to_centres", "scene_centres", "select_top_k"]


def _centre_array(name: str, values: object, ndim: int | None = None) -> NDArray[np.int64]:
    arr = np.asarray(values)
    if arr.size == 0:
        return np.zeros((0, ndim or (arr.shape[1] if arr.ndim == 2 else 0)), np.int64)
    if arr.ndim != 2 or arr.dtype.kind not in "iu" or (ndim is not None and arr.shape[1] != ndim):
        want = f"(n, {ndim})" if ndim is not None else "(n, ndim)"
        raise ConfigError(f"{name}: expected integer coordinates of shape {want}, received "
                          f"shape {arr.shape} dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def select_top_k(centres: NDArray[np.int64], scores: NDArray[np.floating],
                 top_k: int | None) -> NDArray[np.int64]:
    """The ``top_k`` highest-scoring centres (ties: the earlier centre), in input order.

    Parameters
    ----------
    centres : (n, ndim) ndarray of int
    scores : (n,) ndarray of float
    top_k : int or None
        None keeps every centre.

    Examples
    --------
    >>> c = np.array([[0, 0], [0, 5], [3, 1]])
    >>> select_top_k(c, np.array([0.5, 0.9, 0.5]), 2).tolist()
    [[0, 0], [0, 5]]
    """
    if top_k is None or len(centres) <= top_k:
        return centres
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 0:
        raise ConfigError(f"top_k: expected an integer >= 0 or None, received {top_k!r}")
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")[:top_k]
    return centres[np.sort(order)]


def scene_centres(parts: Sequence[tuple[NDArray, NDArray]], ndim: int, *,
                  top_k: int | None = None) -> NDArray[np.int64]:
    """One scene-wide centre list from the tiles' ``(centres, scores)``.

    Parameters
    ----------
    parts : sequence of ((n_i, ndim) int, (n_i,) float)
        Each tile's centres in scene coordinates and their heatmap values, in any order.
    ndim : int
        Spatial axes (2 or 3).
    top_k : int, optional
        Keep the ``top_k`` highest centres of the scene (ties by position).

    Returns
    -------
    (n, ndim) ndarray of int64
        Row-major (lexicographic) order, so the list, and every id drawn from it, does
        not depend on the order in which tiles finished.

    Examples
    --------
    >>> a = (np.array([[5, 1]]), np.array([0.3]))
    >>> b = (np.array([[0, 9], [5, 0]]), np.array([0.8, 0.2]))
    >>> scene_centres([a, b], 2).tolist()
    [[0, 9], [5, 0], [5, 1]]
    >>> scene_centres([b, a], 2, top_k=2).tolist()
    [[0, 9], [5, 1]]
    """
    coords = [_centre_array("centres", c, ndim) for c, _ in parts]
    scores = [np.asarray(s, np.float64).reshape(-1) for _, s in parts]
    for c, s in zip(coords, scores):
        if len(c) != len(s):
            raise ConfigError(f"scene_centres: expected one score per centre, received "
                              f"{len(c)} centres and {len(s)} scores")
    allc = np.concatenate(coords) if coords else np.zeros((0, ndim), np.int64)
    alls = np.concatenate(scores) if scores else np.zeros(0)
    order = np.lexsort(allc.T[::-1]) if len(allc) else np.zeros(0, np.int64)
    allc, alls = allc[order], alls[order]
    if len(allc) > 1 and (np.diff(allc, axis=0) == 0).all(axis=1).any():
        raise ConfigError("scene_centres: a centre was reported by two tiles (cores overlap)")
    return select_top_k(allc, alls, top_k)


FEW_CENTRES = 32  # up to this many centres, distances to all of them beat a k-d tree
_VOTES_PER_BATCH = 1 << 15  # votes whose distances to every centre are held at once


class CentreIndex:
    """A nearest-centre index over a scene's centres.

    More than :data:`FEW_CENTRES` centres get a k-d tree, built once; fewer are
    compared with every vote directly, which gives the same answer (the same float64
    distances, the same tie rule) without importing ``scipy.spatial`` (0.4-0.6 s).

    Parameters
    ----------
    centres : (n, ndim) ndarray of int
        The scene's centres (:func:`scene_centres`), row-major.
    """

    def __init__(self, centres: NDArray[np.int64], *, few: int = FEW_CENTRES) -> None:
        self.centres = _centre_array("centres", centres)
        self.tree = None
        if len(self.centres) > few:
            from scipy.spatial import cKDTree  # here: scipy.spatial takes 0.4-0.6 s to import

            self.tree = cKDTree(self.centres.astype(np.float64))

    def __len__(self) -> int:
        return len(self.centres)

    def nearest(self, votes: NDArray[np.floating]) -> NDArray[np.int64]:
        """Index of the nearest centre of each vote ``(p, ndim)`` (Euclidean; ties go to
        the earlier centre).

        Examples
        --------
        >>> CentreIndex(np.array([[0, 0], [0, 4]])).nearest(np.array([[0.0, 1.0], [0.0, 2.0],
        ...                                                           [1.0, 3.5]])).tolist()
        [0, 0, 1]
        """
        votes = np.asarray(votes, np.float64)
        if len(self.centres) == 0:
            raise ConfigError("CentreIndex.nearest: the scene has no centre")
        if len(votes) == 0:
            return np.zeros(0, np.int64)
        if self.tree is None:
            return self._nearest_of_all(votes)
        k = min(4, len(self.centres))
        dist, idx = self.tree.query(votes, k=k)
        if k == 1:
            return np.asarray(idx, np.int64).reshape(-1)
        dist, idx = np.atleast_2d(dist), np.atleast_2d(idx)
        tied = dist == dist[:, :1]  # equally near: the earliest centre wins
        return np.where(tied, idx, np.iinfo(np.int64).max).min(axis=1).astype(np.int64)

    def _nearest_of_all(self, votes: NDArray[np.float64]) -> NDArray[np.int64]:
        """:meth:`nearest` by the distance to every centre, in batches of votes. The
        squared distance is summed axis by axis and its square root taken, as the k-d
        tree does, so equal distances are equal here too; ``argmin`` takes the earliest."""
        centres = self.centres.astype(np.float64)
        out = np.empty(len(votes), np.int64)
        for start in range(0, len(votes), _VOTES_PER_BATCH):
            batch = votes[start:start + _VOTES_PER_BATCH]
            squared = np.zeros((len(batch), len(centres)))
            for axis in range(centres.shape[1]):
                diff = batch[:, axis, None] - centres[None, :, axis]
                squared += diff * diff
            out[start:start + len(batch)] = np.sqrt(squared).argmin(axis=1)
        return out


def assign_to_centres(things: NDArray[np.bool_], offsets: NDArray[np.floating],
                      origin: Sequence[int], index: CentreIndex) -> NDArray[np.int64]:
    """Instance ids of one block: the rank ``+ 1`` of each thing pixel's nearest centre.

    Parameters
    ----------
    things : (*S) ndarray of bool
        Thing pixels of the block.
    offsets : (ndim, *S) ndarray of float
        Pixel-to-centre vectors of the block, in pixels.
    origin : sequence of int
        Scene coordinates of the block's first pixel.
    index : CentreIndex
        The scene's centres.

    Returns
    -------
    (*S) ndarray of int64
        0 outside ``things`` (and everywhere when the scene has no centre).

    Examples
    --------
    >>> index = CentreIndex(np.array([[0, 1], [0, 4]]))
    >>> off = np.array([[[0.0, 0.0, 0.0]], [[0.0, -1.0, 1.0]]])
    >>> assign_to_centres(np.array([[True, True, False]]), off, (0, 2), index).tolist()
    [[1, 1, 0]]
    """
    things = np.asarray(things, bool)
    offsets = np.asarray(offsets)
    if offsets.shape != (things.ndim, *things.shape) or len(origin) != things.ndim:
        raise ConfigError(f"assign_to_centres: expected offsets (ndim, *S) and an origin per "
                          f"axis for things of shape {things.shape}, received offsets "
                          f"{offsets.shape} and origin {tuple(origin)}")
    out = np.zeros(things.shape, np.int64)
    if len(index) == 0 or not things.any():
        return out
    where = np.nonzero(things)
    votes = np.stack([w + o for w, o in zip(where, origin)], axis=1).astype(np.float64)
    votes += offsets[(slice(None), *where)].T
    out[where] = index.nearest(votes) + 1
    return out
