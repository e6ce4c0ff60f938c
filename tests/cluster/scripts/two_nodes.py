"""Two Ray nodes on this machine (ray.cluster_utils.Cluster) and one scene, twice.

The scene runs with the bundled demo-satellite model (semantic and instance heads) in
small tiles and image chunks, so that every pass has several blocks to spread:

1. while the cluster is up, through a pool started *without* an address: ensure_ray
   must start its own single-node runtime, not silently join the cluster recorded in
   Ray's temp dir;
2. through a 2-actor pool that joins the cluster by address (as ``segpipe run
   --ray-address`` does, no ray.init here). Each node has room for both actors, so
   only the pool's own plan puts one on each; every pass after inference (and ingest
   before it) is a block pass of Ray tasks spread over the nodes (pipeline.distributed).

usage: two_nodes.py WORK_DIR RAY_TMP
Prints JSON per run: the nodes, the cluster's CPUs and namespace, each actor's node,
the nodes each pass label ran on, the tile counts and the published scene directory
(the test compares the outputs).
"""

from __future__ import annotations

import sys
from pathlib import Path

import cluster_common as common
import ray
from ray.cluster_utils import Cluster

# Both 1-CPU actors fit on the head, and Ray's default scheduling puts them there
# (measured); the pool must put one on each node.
CPUS_PER_NODE = 2


def run_one(image: Path, out_dir: Path, bundle, pool) -> dict:
    from pipeline.formats import Scene
    from pipeline.options import RunOptions
    from pipeline.run import Workspace, run_scene

    ws = Workspace(Scene(image, image.stem, "geotiff"), out_dir)
    options = RunOptions(tile=128, image_chunk=128, quicklook_size=256)
    return run_scene(ws, bundle, options, pool).report.to_json()


def pool_run(bundle, image: Path, out: Path, address: str | None) -> dict:
    import pipeline.distributed.ray_blocks as blocks
    from pipeline.distributed import nodes_seen
    from pipeline.inference.placement import actor_nodes
    from pipeline.inference.pool import WorkerPool

    blocks._SEEN.clear()
    pool = WorkerPool.start(str(bundle.path), workers=2, gpus_per_worker=0.0, batch_size=2,
                            ray_address=address)
    try:
        info = {"nodes": sorted(n["NodeID"] for n in ray.nodes() if n["Alive"]),
                "cpus": ray.cluster_resources().get("CPU"),
                "namespace": ray.get_runtime_context().namespace,
                "actor_nodes": actor_nodes(pool.actors)}
        report = run_one(image, out, bundle, pool)
        seen = {label: sorted(ids) for label, ids in nodes_seen().items()}
    finally:
        pool.shutdown()
        ray.shutdown()
    return {**info, "passes": seen, "tiles": report["tiles"], "out": str(out / image.stem)}


def main(work: Path, ray_tmp: str) -> dict:
    common.setup(ray_tmp)
    from pipeline.bundle import load_bundle

    bundle = load_bundle("demo-satellite")  # trained: finds the scene's buildings
    image = common.write_image(work / "scenes" / "two.tif", size=(512, 768))
    # Ray's temp dir: RAY_TMPDIR (cluster_common.setup); the head records its address there
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": CPUS_PER_NODE, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=CPUS_PER_NODE)
        cluster.wait_for_nodes()
        local = pool_run(bundle, image, work / "one-node", None)
        joined = pool_run(bundle, image, work / "two-nodes", cluster.address)
    finally:
        ray.shutdown()
        cluster.shutdown()
    return {"local": local, "cluster": joined}


if __name__ == "__main__":
    common.emit(main(Path(sys.argv[1]), sys.argv[2]))
