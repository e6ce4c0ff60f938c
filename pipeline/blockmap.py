"""Block passes: one function mapped over the blocks of a scene, wherever it runs.

Every pass after inference (and ingest before it) is a function of one block of the
scene's Zarr store that returns a small result (counts, a table, nothing): copy a
window of the input, relabel a chunk, count classes, fuse a chunk, compare a chunk
with the truth, decimate a chunk for a quicklook. A :class:`BlockMap` runs such a
function over many blocks and returns the results in order; the driver then merges
the small results (``FusionStats.merge``, confusion matrices, class totals).

Three implementations: :data:`serial` (a loop in this process: tools, tests,
doctests), :class:`ThreadBlocks` (threads of this process: small runs without Ray)
and :class:`pipeline.distributed.RayBlocks` (Ray tasks spread over the cluster's
nodes, what ``segpipe run`` uses on a cluster and for large scenes). The passes
themselves know none of them, which keeps formats and streaming code free of Ray.

Examples
--------
>>> serial.map(pow, [1, 2, 3], 2, label="squares")
[1, 4, 9]
"""

from __future__ import annotations

import math
import os
import pickle
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class BlockMap(Protocol):
    """Runs ``fn(item, *shared)`` for every item; results in the order of ``items``.

    ``fn`` must be a module-level function (it may be sent to another process);
    ``shared`` arguments are sent once, not once per item; ``label`` names the pass
    (task names, progress, the record of which nodes ran it).
    """

    def map(self, fn: Callable[..., R], items: Sequence[Any], *shared: Any,
            label: str) -> list[R]: ...


class SerialBlocks:
    """A loop in this process (the reference implementation)."""

    def map(self, fn: Callable[..., R], items: Sequence[Any], *shared: Any,
            label: str = "") -> list[R]:
        return [fn(item, *shared) for item in items]


serial = SerialBlocks()


def contiguous_groups(items: Sequence[Any], parts: int) -> list[list[Any]]:
    """``items`` cut into at most ``parts`` contiguous groups of near-equal size.

    Neighbouring chunks stay together, so a group reads a strip, not scattered chunks.

    Examples
    --------
    >>> contiguous_groups(list(range(7)), 3)
    [[0, 1, 2], [3, 4, 5], [6]]
    """
    size = max(1, math.ceil(len(items) / max(1, parts)))
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


class ThreadBlocks:
    """Threads of this process, one per core (decoding, compression and numpy release
    the GIL). Each group of blocks gets its own copy of the ``shared`` arguments, as a
    Ray task would (open readers are not shared between threads).

    Examples
    --------
    >>> ThreadBlocks(threads=2).map(pow, [1, 2, 3], 2, label="squares")
    [1, 4, 9]
    """

    def __init__(self, threads: int | None = None) -> None:
        self.threads = max(1, threads or os.cpu_count() or 1)

    def map(self, fn: Callable[..., R], items: Sequence[Any], *shared: Any,
            label: str = "") -> list[R]:
        items = list(items)
        if self.threads == 1 or len(items) <= 1:
            return serial.map(fn, items, *shared)
        packed = pickle.dumps(shared, protocol=pickle.HIGHEST_PROTOCOL)  # in memory only

        def run(group: list[Any]) -> list[R]:
            own = pickle.loads(packed)  # bytes made just above in memory, never stored
            return [fn(item, *own) for item in group]

        groups = contiguous_groups(items, self.threads * 3)
        with ThreadPoolExecutor(max_workers=min(self.threads, len(groups)),
                                thread_name_prefix=f"segpipe-{label or 'blocks'}") as pool:
            return [value for part in pool.map(run, groups) for value in part]
