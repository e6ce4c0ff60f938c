"""Where model actors go: what each reserves and which node each landed on.

A GPU actor's work is on the GPU; its CPU share only feeds it (Zarr reads and
decoding), so it reserves CPU in proportion to its GPU share: a whole GPU ->
1 CPU, half a GPU -> 0.5 CPU. Two half-GPU actors per GPU then fit on any node
with at least one CPU per GPU (a 2-CPU/2-GPU node holds 4 of them, where a flat
1 CPU per actor would hold only 2 and leave half of every GPU idle).
CPU-only actors reserve one whole core each.
"""

from __future__ import annotations

import os

import ray

# How actors are spread over nodes: Ray's SPREAD places them round-robin over the
# nodes that fit them, so a multi-node run uses every node's GPUs/CPUs instead of
# filling the driver's node first.
SCHEDULING_STRATEGY = "SPREAD"


def default_cpus_per_worker(gpus_per_worker: float) -> float:
    """CPUs one actor reserves: 1 on CPU, ``min(1, gpus_per_worker)`` with GPUs."""
    if gpus_per_worker > 0:
        return min(1.0, float(gpus_per_worker))
    return 1.0


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
