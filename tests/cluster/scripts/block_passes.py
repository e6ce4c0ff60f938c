"""Block passes on two Ray nodes (ray.cluster_utils.Cluster): which nodes ran them.

A scene with the bundled demo-satellite model (semantic + instance heads) runs on a 2-node cluster (2 logical CPUs each) through
a pool that joins it by address; every pass after inference (and ingest before it) is a
block pass of Ray tasks spread over the nodes (pipeline.distributed). Then the same
scene runs in a private single-node runtime, for the test to compare the outputs.

usage: block_passes.py WORK_DIR RAY_TMP
Prints JSON: the cluster's nodes, the nodes each pass label ran on, and the published
scene directories of both runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cluster_common as common
import ray
from ray.cluster_utils import Cluster


def run_one(image: Path, out_dir: Path, bundle, pool) -> dict:
    """Small tiles and image chunks, so every pass has several blocks to spread."""
    from pipeline.formats import Scene
    from pipeline.options import RunOptions
    from pipeline.run import Workspace, run_scene

    ws = Workspace(Scene(image, image.stem, "geotiff"), out_dir)
    options = RunOptions(tile=128, image_chunk=128, quicklook_size=256)
    return run_scene(ws, bundle, options, pool).report.to_json()


def run(bundle, image: Path, out: Path, address: str | None) -> dict:
    from pipeline.distributed import nodes_seen
    from pipeline.inference.pool import WorkerPool

    pool = WorkerPool.start(str(bundle.path), workers=2, gpus_per_worker=0.0, batch_size=2,
                            ray_address=address)
    try:
        nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
        report = run_one(image, out, bundle, pool)
        seen = {label: sorted(ids) for label, ids in nodes_seen().items()}
    finally:
        pool.shutdown()
        ray.shutdown()
    return {"nodes": nodes, "passes": seen, "tiles": report["tiles"],
            "out": str(out / image.stem)}


def main(work: Path, ray_tmp: str) -> dict:
    common.setup(ray_tmp)
    from pipeline.bundle import load_bundle

    bundle = load_bundle("demo-satellite")  # trained: finds the scene's buildings
    image = common.write_image(work / "scenes" / "blocks.tif", size=(512, 768))
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        joined = run(bundle, image, work / "two-nodes", cluster.address)
    finally:
        ray.shutdown()
        cluster.shutdown()
    import pipeline.distributed.ray_blocks as blocks

    blocks._SEEN.clear()
    alone = run(bundle, image, work / "one-node", None)
    return {"cluster": joined, "local": alone}


if __name__ == "__main__":
    common.emit(main(Path(sys.argv[1]), sys.argv[2]))
