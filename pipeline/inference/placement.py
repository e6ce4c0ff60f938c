"""Where model actors go: what each reserves and which node each landed on.

A GPU actor's work is on the GPU; its CPU share only feeds it (Zarr reads and
decoding), so it reserves CPU in proportion to its GPU share: a whole GPU ->
1 CPU, half a GPU -> 0.5 CPU. Two half-GPU actors per GPU then fit on any node
with at least one CPU per GPU (a 2-CPU/2-GPU node holds 4 of them, where a flat
1 CPU per actor would hold only 2 and leave half of every GPU idle).
CPU-only actors reserve one whole core each.

The cluster may change under a run: :func:`alive_nodes` lists the nodes up now,
:func:`workers_that_fit` says how many actors a node (or the free total) holds, and
:func:`request_capacity` asks an autoscaler for nodes before they exist. A runtime
this process started itself (:func:`runtime_is_local`) is one fixed node.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import ray

# How actors are spread over nodes when no plan names one (no node has room now, so
# the actor waits for one): Ray's SPREAD. It is best effort only: with room for both
# on the head, Ray 2.60 put two SPREAD actors there in one CI run of the two-node
# test, so the pool plans the nodes itself (:func:`spread_over`) and asks for each
# with a soft node affinity.
SCHEDULING_STRATEGY = "SPREAD"


def default_cpus_per_worker(gpus_per_worker: float) -> float:
    """CPUs one actor reserves: 1 on CPU, ``min(1, gpus_per_worker)`` with GPUs."""
    if gpus_per_worker > 0:
        return min(1.0, float(gpus_per_worker))
    return 1.0


def worker_demand(gpus_per_worker: float, cpus_per_worker: float) -> dict[str, float]:
    """What one actor reserves, as a Ray resource bundle (zero entries left out).

    Examples
    --------
    >>> worker_demand(0.5, 0.5), worker_demand(0.0, 1.0)
    ({'CPU': 0.5, 'GPU': 0.5}, {'CPU': 1.0})
    """
    demand = {"CPU": float(cpus_per_worker), "GPU": float(gpus_per_worker)}
    return {k: v for k, v in demand.items() if v > 0}


def workers_that_fit(resources: Mapping[str, float], demand: Mapping[str, float]) -> int:
    """How many actors reserving ``demand`` fit into ``resources`` (may be 0).

    ``resources``: one node's resources, or the free total of the cluster (which
    ignores fragmentation: half a CPU free on each of two nodes counts as one).

    Examples
    --------
    >>> workers_that_fit({"CPU": 2.0, "GPU": 2.0}, {"CPU": 0.5, "GPU": 0.5})
    4
    >>> workers_that_fit({"CPU": 8.0}, {"CPU": 1.0, "GPU": 1.0})
    0
    """
    counts = [int(resources.get(k, 0.0) / v + 1e-9) for k, v in demand.items() if v > 0]
    return min(counts) if counts else int(resources.get("CPU", 0.0))


def spread_over(count: int, nodes: Mapping[str, Mapping[str, float]],
                demand: Mapping[str, float], placed: Mapping[str, int] | None = None,
                ) -> list[str]:
    """Nodes for ``count`` new actors: one per node before any node gets a second.

    Each actor goes to the node holding the fewest of the set's actors (``placed``
    plus those planned before it) among the nodes with room for one more (their
    total resources, ``nodes``, hold ``demand`` once more); ties go to the node
    listed first. Fewer than ``count`` names come back when the nodes are full:
    the rest wait for a node (an autoscaler's, or one that joins).

    Examples
    --------
    >>> two = {"a": {"CPU": 4.0}, "b": {"CPU": 4.0}}
    >>> spread_over(3, two, {"CPU": 1.0})
    ['a', 'b', 'a']
    >>> spread_over(2, two, {"CPU": 1.0}, placed={"a": 1})
    ['b', 'a']
    >>> spread_over(3, {"a": {"CPU": 1.0}, "g": {"CPU": 8.0}}, {"CPU": 1.0, "GPU": 1.0})
    []
    """
    taken = dict.fromkeys(nodes, 0)
    for node, n in (placed or {}).items():
        if node in taken:
            taken[node] += n
    plan: list[str] = []
    for _ in range(max(0, count)):
        room = [n for n in nodes if workers_that_fit(nodes[n], demand) > taken[n]]
        if not room:
            break
        node = min(room, key=lambda n: taken[n])
        taken[node] += 1
        plan.append(node)
    return plan


def runtime_is_local() -> bool:
    """True when this process started its Ray runtime (``ray.init`` without an address).

    Such a runtime is one node of fixed size: no autoscaler and no ``ray start`` adds
    nodes to it, so an actor it cannot place now it can never place. A runtime joined
    by address (``--ray-address``, ``RAY_ADDRESS``, a ``Cluster`` in tests) may grow.
    """
    node = getattr(ray._private.worker, "_global_node", None)
    return bool(node is not None and getattr(node, "head", False))


def alive_nodes() -> dict[str, dict[str, float]]:
    """Node id -> total resources of every node that is up now."""
    return {n["NodeID"]: dict(n.get("Resources", {})) for n in ray.nodes() if n.get("Alive")}


def request_capacity(bundles: list[dict[str, float]]) -> None:
    """Ask the cluster's autoscaler to make room for ``bundles`` (one per actor).

    The request stands until the next call; ``[]`` withdraws it. A cluster without an
    autoscaler only records it (no effect), so it is safe everywhere.
    """
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=[dict(b) for b in bundles])


def worker_node(worker: str) -> str:
    """The node id in a :attr:`TileOutcome.worker` string (``pid:actor@node``).

    Examples
    --------
    >>> worker_node("1234:ab12@f00d")
    'f00d'
    """
    return worker.rpartition("@")[2]


def shared_path(path: str | os.PathLike[str]) -> str:
    """``path`` made absolute (symlinks kept) before it is sent to actors.

    A worker's working directory is not the driver's (on another node, or under a
    ``ray start`` raylet), so a relative bundle or store path would name another
    place there; an absolute path names the same place on every node that mounts the
    shared filesystem at the same mount point.
    """
    return os.path.abspath(os.fspath(path))


def _node_id(_actor) -> str:
    return ray.get_runtime_context().get_node_id()


def actor_nodes(actors: list, timeout: float = 60.0) -> list[str]:
    """The Ray node id each actor runs on (same order as ``actors``).

    Asks each actor itself (``__ray_call__``), so it works without the dashboard
    that Ray's state API needs.
    """
    return ray.get([a.__ray_call__.remote(_node_id) for a in actors], timeout=timeout)
