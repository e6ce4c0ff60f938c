"""Two Ray nodes on this machine (ray.cluster_utils.Cluster) and one scene, twice:

1. while the cluster is up, a pool started *without* an address: ensure_ray must start
   its own single-node runtime, not silently join the cluster recorded in Ray's temp dir;
2. a pool that joins the cluster by address (as ``segpipe run --ray-address`` does,
   no ray.init here), 2 actors, which SPREAD puts on different nodes.

usage: two_nodes.py WORK_DIR RAY_TMP
Prints JSON: the nodes, each actor's node id, both runs' tile counts and published
store paths (the test compares the arrays).
"""

from __future__ import annotations

import sys
from pathlib import Path

import cluster_common as common
import ray
from ray.cluster_utils import Cluster

# 4 logical CPUs a node: both actors would fit on the head, and Ray's default
# scheduling puts them there (measured); SPREAD must put one on each node.
CPUS_PER_NODE = 4


def pool_run(bundle, image: Path, out: Path, *, workers: int, address: str | None) -> dict:
    from pipeline.inference.placement import actor_nodes
    from pipeline.inference.pool import WorkerPool

    pool = WorkerPool.start(str(bundle.path), workers=workers, gpus_per_worker=0.0,
                            batch_size=2, ray_address=address)
    try:
        info = {"nodes": sorted(n["NodeID"] for n in ray.nodes() if n["Alive"]),
                "cpus": ray.cluster_resources().get("CPU"),
                "namespace": ray.get_runtime_context().namespace,
                "actor_nodes": actor_nodes(pool.actors)}
        report = common.run_one(image, out, bundle, pool)
    finally:
        pool.shutdown()
        ray.shutdown()
    return {**info, "tiles": report["tiles"], "out": str(out / image.stem)}


def main(work: Path, ray_tmp: str) -> dict:
    common.setup(ray_tmp)
    bundle = common.build_bundle(work / "bundle")
    image = common.write_image(work / "scenes" / "two.tif")
    # Ray's temp dir: RAY_TMPDIR (cluster_common.setup); the head records its address there
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": CPUS_PER_NODE, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=CPUS_PER_NODE)
        cluster.wait_for_nodes()
        local = pool_run(bundle, image, work / "one-node", workers=1, address=None)
        joined = pool_run(bundle, image, work / "two-nodes", workers=2, address=cluster.address)
    finally:
        ray.shutdown()
        cluster.shutdown()
    return {"local": local, "cluster": joined}


if __name__ == "__main__":
    common.emit(main(Path(sys.argv[1]), sys.argv[2]))
