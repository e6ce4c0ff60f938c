"""A scene's own intensity statistics, for models normalised per scene.

A MONAI bundle whose preprocessing is ``NormalizeIntensityd`` or ``ScaleIntensityd``
without fixed values normalises each volume with that volume's mean / standard
deviation or minimum / maximum (:class:`~pipeline.bundle.SceneStatistics`). A tile worker
sees one window at a time, so the statistics are computed once per scene, before its
first window, by one pass over the store's ``image`` (the grid the model runs on) in
slabs of its chunks (memory: one slab), over the valid samples only; every window of
the scene is then normalised with the same values.

Moments are merged with Chan et al.'s pairwise formula in float64, so the result does
not depend on the slab size beyond rounding, and every worker that computes it gets
the same numbers (same slabs, same order).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.blockmap import BlockMap, serial
from pipeline.bundle import SceneStatistics
from pipeline.store import IMAGE, VALID


@dataclass(frozen=True)
class Moments:
    """Count, mean, sum of squared deviations, minimum and maximum per channel ``(C,)``."""

    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray
    minimum: np.ndarray
    maximum: np.ndarray

    @classmethod
    def empty(cls, channels: int) -> Moments:
        zeros = np.zeros(channels)
        return cls(zeros, zeros, zeros, np.full(channels, np.inf), np.full(channels, -np.inf))

    @classmethod
    def of(cls, samples: list[np.ndarray]) -> Moments:
        """Moments of one 1-D float64 sample array per channel."""
        count = np.array([s.size for s in samples], dtype=np.float64)
        mean = np.array([s.mean() if s.size else 0.0 for s in samples])
        m2 = np.array([((s - m) ** 2).sum() if s.size else 0.0 for s, m in zip(samples, mean)])
        lo = np.array([s.min() if s.size else np.inf for s in samples])
        hi = np.array([s.max() if s.size else -np.inf for s in samples])
        return cls(count, mean, m2, lo, hi)

    def merge(self, other: Moments) -> Moments:
        """Moments of both sample sets together (per channel).

        Examples
        --------
        >>> a, b = np.array([1.0, 2.0]), np.array([3.0, 4.0, 5.0])
        >>> m = Moments.of([a]).merge(Moments.of([b]))
        >>> float(m.mean[0]), float(m.m2[0] / m.count[0]) == float(np.var([1, 2, 3, 4, 5]))
        (3.0, True)
        """
        count = self.count + other.count
        safe = np.where(count > 0, count, 1.0)
        delta = other.mean - self.mean
        mean = self.mean + delta * other.count / safe
        m2 = self.m2 + other.m2 + delta**2 * self.count * other.count / safe
        return Moments(count, mean, m2, np.minimum(self.minimum, other.minimum),
                       np.maximum(self.maximum, other.maximum))

    def pooled(self) -> Moments:
        """The moments of every channel's samples together, repeated per channel."""
        total = Moments.empty(1)
        for c in range(len(self.count)):
            total = total.merge(Moments(self.count[c:c + 1], self.mean[c:c + 1],
                                        self.m2[c:c + 1], self.minimum[c:c + 1],
                                        self.maximum[c:c + 1]))
        n = len(self.count)
        return Moments(*(np.repeat(v, n) for v in (total.count, total.mean, total.m2,
                                                   total.minimum, total.maximum)))


def block_moments(image: np.ndarray, valid: np.ndarray, *, nonzero: bool) -> Moments:
    """Moments of a block ``(C, *S)`` over its valid samples ``(*S)`` bool (and, with
    ``nonzero``, over the non-zero ones of each channel)."""
    samples = []
    for channel in image:
        values = channel[valid].astype(np.float64)
        samples.append(values[values != 0] if nonzero else values)
    return Moments.of(samples)


def _slab_moments(rows: slice, image, valid, nonzero: bool) -> Moments:
    """Moments of one slab ``image[:, rows]`` (a block task)."""
    return block_moments(image[:, rows], np.asarray(valid[rows], dtype=bool), nonzero=nonzero)


def scene_moments(group, *, nonzero: bool, blocks: BlockMap = serial) -> Moments:
    """Moments of a store's ``image`` ``(C, *S)`` over ``valid``, one slab of chunks along
    the first spatial axis per block (on the cluster with a Ray ``blocks``), merged in
    slab order."""
    image, valid = group[IMAGE], group[VALID]
    step = image.chunks[1]
    slabs = [slice(start, min(start + step, image.shape[1]))
             for start in range(0, image.shape[1], step)]
    total = Moments.empty(image.shape[0])
    for part in blocks.map(_slab_moments, slabs, image, valid, nonzero, label="intensity"):
        total = total.merge(part)
    return total


def normalisation(spec: SceneStatistics, moments: Moments) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``(mean, std)`` ``(C,)`` float64 so that ``(x - mean) / std`` is the
    MONAI transform's result on this scene.

    * ``mean_std`` (``NormalizeIntensityd``): the fixed subtrahend/divisor where given,
      else the scene's mean and (population) standard deviation; a zero divisor is 1;
      no sample to compute them over leaves the samples as they are.
    * ``min_max`` (``ScaleIntensityd``): ``(x - lo) / (hi - lo) * (maxv - minv) + minv``;
      a constant scene becomes ``x * minv``.

    Examples
    --------
    >>> m = Moments.of([np.array([0.0, 10.0])])
    >>> normalisation(SceneStatistics(statistic="min_max", minv=-1.0, maxv=1.0), m)
    (array([5.]), array([5.]))
    """
    stats = moments if spec.channel_wise else moments.pooled()
    if spec.statistic == "min_max":
        lo, hi = stats.minimum, stats.maximum
        span = np.where(hi > lo, hi - lo, 0.0)
        std = np.where(span > 0, span / (spec.maxv - spec.minv), 1.0)
        mean = np.where(span > 0, lo - spec.minv * std, lo - lo * spec.minv)
        empty = stats.count == 0
        return np.where(empty, 0.0, mean), np.where(empty, 1.0, std)
    none = stats.count == 0
    mean = np.where(none, 0.0, stats.mean)
    std = np.where(none, 1.0, np.sqrt(stats.m2 / np.where(none, 1.0, stats.count)))
    if spec.subtrahend is not None:
        mean = np.asarray(spec.subtrahend, dtype=np.float64)
    if spec.divisor is not None:
        std = np.asarray(spec.divisor, dtype=np.float64)
    return mean, np.where(std == 0, 1.0, std)


@dataclass(frozen=True)
class SceneNormalisation:
    """A scene's own per-channel ``mean`` and ``std`` ``(C,)``: the model input is
    ``(x * value_scale - mean) / std`` (sent with every batch of the scene's tiles)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``(mean, std)`` as float64 arrays ``(C,)``."""
        return np.asarray(self.mean, np.float64), np.asarray(self.std, np.float64)


def scene_normalisation(group, spec: SceneStatistics,
                        blocks: BlockMap = serial) -> SceneNormalisation:
    """The per-channel normalisation of the scene in ``group`` (see :func:`normalisation`),
    from one block pass over its image (done once per scene, before its first tile)."""
    mean, std = normalisation(spec, scene_moments(group, nonzero=spec.nonzero, blocks=blocks))
    return SceneNormalisation(tuple(float(v) for v in mean), tuple(float(v) for v in std))
