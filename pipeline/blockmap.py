"""Block passes: one function mapped over the blocks of a scene, wherever it runs.

Every pass after inference (and ingest before it) is a function of one block of the
scene's Zarr store that returns a small result (counts, a table, nothing): copy a
window of the input, relabel a chunk, count classes, fuse a chunk, compare a chunk
with the truth, decimate a chunk for a quicklook. A :class:`BlockMap` runs such a
function over many blocks and returns the results in order; the driver then merges
the small results (``FusionStats.merge``, confusion matrices, class totals).

Two implementations: :data:`serial` (a loop in this process: tools, tests, doctests)
and :class:`pipeline.distributed.RayBlocks` (Ray tasks spread over the cluster's
nodes, what ``segpipe run`` uses). The passes themselves know neither, which keeps
formats and streaming code free of Ray.

Examples
--------
>>> serial.map(pow, [1, 2, 3], 2, label="squares")
[1, 4, 9]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
