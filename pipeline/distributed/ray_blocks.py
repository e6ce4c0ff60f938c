"""Block passes as Ray tasks (:class:`pipeline.blockmap.BlockMap` on a Ray cluster).

Items are cut into contiguous groups (neighbouring chunks stay together, so a task
reads a strip, not scattered chunks); each group is one Ray task. Tasks are spread
round-robin over the nodes (``SPREAD``) and at most one per cluster CPU is in flight,
so the driver never queues a whole scene of work and memory stays bounded by the
blocks in flight. Only the tasks' small results come back.

On a runtime this process started itself (one node: this machine) the ingest and
quicklook passes run in threads of this process instead (``local``,
:data:`LOCAL_PASSES`): they are GDAL decoding and Zarr (de)compression, which release
the GIL, and threads skip what a task pays on a fresh worker (importing the readers,
opening the input) while the model actors load, or the export runs, on the same
cores. Measured at 8192² with the near-free model (``bench/machinery.py``, 2 cores,
two runs each): ingest 2.0-2.2 s in threads against 3.2-4.4 s as tasks on the first
scene. The other passes stay tasks: their Python parts hold the GIL, so threads
would not scale with a workstation's cores.

Tasks reserve no CPU of their own (``num_cpus=0``): the model actors hold the cluster's
CPUs for the whole run while they are idle between inference passes, and a task
that waited for a free CPU would wait forever. The in-flight limit does the
reservation's job instead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import ray

from pipeline.blockmap import BlockMap, contiguous_groups
from pipeline.heap import release_free_memory

R = TypeVar("R")
_TASKS_PER_CPU = 3  # groups per CPU: small enough to balance, large enough to amortise
_DRAIN_S = 600.0  # how long a failed pass waits for its other tasks before it raises
# Passes a local runtime runs in this process's threads (see the module docstring).
LOCAL_PASSES = frozenset({"ingest", "quicklook"})


def _run_group(fn: Callable[..., Any], items: list[Any], *shared: Any) -> tuple[str, list[Any]]:
    node = ray.get_runtime_context().get_node_id()
    results = []
    for item in items:
        results.append(fn(item, *shared))
        release_free_memory()  # the worker lives on: its memory stays flat over the blocks
    return node, results


_remote_group = ray.remote(num_cpus=0, max_retries=2)(_run_group)


_SEEN: dict[str, set[str]] = {}
_PASS_MODULES = ("pipeline.formats.geotiff", "pipeline.formats.nifti",
                 "pipeline.formats.stac", "pipeline.formats.dicom",
                 "pipeline.streaming.panoptic", "pipeline.streaming.metrics",
                 "pipeline.streaming.centres", "pipeline.report.quicklook", "pipeline.io.cog")


INSTANCE_PASS_MODULES = ("scipy.spatial",)
"""What the instance pass of a model with instances imports besides :data:`_PASS_MODULES`:
the k-d tree of a scene's centres (:class:`segcore.instances.centres.CentreIndex`), which
took 0.27 s to import in each block worker's first instance task (of a 0.43 s pass on a
2048² scene)."""


def _import_pass_modules(extra: tuple[str, ...] = ()) -> str:
    import importlib

    for name in (*_PASS_MODULES, *extra):
        importlib.import_module(name)
    return ray.get_runtime_context().get_node_id()


def warm_up(extra: tuple[str, ...] = ()) -> list[Any]:
    """Start one task per cluster CPU that imports the block passes' modules (and the
    modules ``extra``, e.g. :data:`INSTANCE_PASS_MODULES`).

    A Ray worker imports a pass's modules on its first task (about a second); warming
    them while the model actors load takes that off the first scene. Returns the
    tasks' refs: the pool waits for them (bounded) before its first scene, so that on a
    machine of few cores the imports do not share the CPUs with the scene's passes.
    """
    task = ray.remote(num_cpus=0)(_import_pass_modules).options(
        name="segpipe:warm-up", scheduling_strategy="SPREAD")
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    return [task.remote(tuple(extra)) for _ in range(cpus)]


def nodes_seen() -> dict[str, set[str]]:
    """Per pass label, the node ids that ran its tasks in this process so far (a copy)."""
    return {label: set(nodes) for label, nodes in _SEEN.items()}


def _result(ref: Any) -> tuple[str, list[Any]]:
    """The task's result; an error raised inside the task is re-raised as itself."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, Exception):
            raise cause from None
        raise


class RayBlocks:
    """Runs block passes as Ray tasks on the connected cluster.

    ``nodes`` records, per pass label, the node ids that ran its tasks (reports, tests).
    ``local``: where the :data:`LOCAL_PASSES` run instead (threads of this process, on
    a runtime it started); None: every pass is Ray tasks.
    """

    def __init__(self, *, in_flight: int | None = None, local: BlockMap | None = None) -> None:
        self._in_flight = in_flight
        self._local = local
        self._lock = threading.Lock()
        self.nodes: dict[str, set[str]] = {}

    def _record(self, label: str, nodes: set[str]) -> None:
        with self._lock:
            self.nodes.setdefault(label, set()).update(nodes)
            _SEEN.setdefault(label, set()).update(nodes)

    def _cpus(self) -> int:
        if self._in_flight is not None:
            return max(1, self._in_flight)
        return max(1, int(ray.cluster_resources().get("CPU", 1)))

    def map(self, fn: Callable[..., R], items: Sequence[Any], *shared: Any,
            label: str = "") -> list[R]:
        items = list(items)
        if not items:
            return []
        if self._local is not None and label in LOCAL_PASSES:
            results = self._local.map(fn, items, *shared, label=label)
            self._record(label, {ray.get_runtime_context().get_node_id()})
            return results
        cpus = self._cpus()
        groups = contiguous_groups(items, cpus * _TASKS_PER_CPU)
        refs = [ray.put(s) for s in shared]
        task = _remote_group.options(name=f"segpipe:{label or fn.__name__}",
                                     scheduling_strategy="SPREAD")
        results: list[list[Any] | None] = [None] * len(groups)
        pending: dict[Any, int] = {}
        nodes: set[str] = set()
        next_group = 0
        try:
            while next_group < len(groups) or pending:
                while next_group < len(groups) and len(pending) < cpus:
                    pending[task.remote(fn, groups[next_group], *refs)] = next_group
                    next_group += 1
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    index = pending.pop(ref)
                    node, values = _result(ref)
                    results[index] = values
                    nodes.add(node)
        except BaseException:
            # The pass failed: let its other tasks (at most one per CPU) finish, so none is
            # left writing into a store that is about to be discarded. Not ray.cancel: a
            # cancel racing with a task's completion aborts the driver in Ray 2.60
            # ("Tried to complete task that was not pending").
            if pending:
                ray.wait(list(pending), num_returns=len(pending), timeout=_DRAIN_S)
            raise
        self._record(label or fn.__name__, nodes)
        return [value for group in results for value in group]
