"""An elastic pool on a changing two-node cluster (ray.cluster_utils.Cluster).

One pool (``WorkerPool.start`` by address, ``workers=None``: as many as fit) runs a
small scene four times, each into its own store, tiles slowed by the fault-injection
delay (``SEGPIPE_FAULT_DELAY_S``) so that "mid-run" is certain:

1. ``reference``: the head node only (2 CPUs: 2 actors), no delay;
2. ``join`` (a longer scene): a 1-CPU node is added after the first tile; the pool
   starts an actor there and it takes tiles;
3. ``leave``: that node is removed while its actor holds a batch; the batch runs
   again on the head;
4. ``kill``: one actor is killed (``ray.kill(no_restart=True)``) while it holds a
   batch; a fresh actor replaces it.

usage: elastic.py WORK_DIR RAY_TMP
Prints JSON: per run, the nodes its tiles ran on, the pool's counters and the store
path (the test compares the ``semantic`` arrays).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import cluster_common as common
import numpy as np
import ray
from ray.cluster_utils import Cluster

SHAPE = (256, 384)  # 4 x 6 tiles of 64
LONG = (256, 768)  # the join run: long enough for a new node to start an actor
TILE = 64
DELAY_S = "0.5"
JOIN_DELAY_S = "0.8"  # a new node needs ~15 s here to start and load an actor (2 busy cores)


def make_store(path: Path, bundle, shape: tuple[int, int] = SHAPE):
    """A scene store as ingest leaves it (image, valid) plus an empty ``semantic``."""
    from pipeline.options import RunOptions
    from pipeline.run.plan import plan_tiles
    from pipeline.store import SEMANTIC, create_label_array, create_store

    grid = plan_tiles(shape, bundle, RunOptions(tile=TILE)).grid
    group = create_store(path, bands=3, shape=shape, dtype="uint8", image_chunk=256, attrs={})
    rng = np.random.default_rng(5)
    smooth = rng.integers(0, 255, (3, shape[0] // 16, shape[1] // 16)).repeat(16, 1).repeat(16, 2)
    group["image"][:] = smooth.astype(np.uint8)
    group["valid"][:] = True
    create_label_array(group, SEMANTIC, dtype=np.dtype("uint8"), fill_value=255, chunks=grid.chunks)
    return grid


def run_scene(pool, bundle, store: Path, *, when=None, then=None, shape=SHAPE) -> dict:
    """``pool.run`` in a thread; ``then()`` runs here (Cluster changes need the main
    thread) once ``when(outcomes)`` was true for a finished batch."""
    from pipeline.inference.placement import worker_node

    grid = make_store(store, bundle, shape)
    got, seen = {}, threading.Event()
    before = counters(pool)

    def on_outcomes(outcomes):
        if when is not None and not seen.is_set() and when(outcomes):
            seen.set()

    def work():
        try:
            got["outcomes"] = pool.run(str(store), 255, grid, on_outcomes=on_outcomes)
        except BaseException as err:  # noqa: BLE001 - re-raised in the main thread
            got["error"] = err

    start = time.perf_counter()
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    if then is not None:
        assert seen.wait(timeout=120), "the trigger never fired"
        then()
    thread.join(timeout=300)
    if "error" in got:
        raise got["error"]
    outcomes = got["outcomes"]
    after = counters(pool)
    return {"store": str(store), "seconds": round(time.perf_counter() - start, 2),
            "tiles": len(outcomes), "distinct": len({o.index for o in outcomes}),
            "nodes": [worker_node(o.worker) for o in outcomes],
            **{k: after[k] - before[k] for k in after},
            "actor_nodes": sorted(m["node"] for m in pool.describe(timeout=120))}


def counters(pool) -> dict:
    """What the pool did so far (the runs report the differences)."""
    return {"requeued": pool.requeued, "grown": pool.members.grown,
            "replaced": pool.members.replaced,
            "dropped_with_node": pool.members.dropped_with_node}


T0 = time.perf_counter()


def mark(what: str) -> None:
    """Progress on stderr (the test shows it when the script fails)."""
    print(f"{time.perf_counter() - T0:6.1f} s {what}", file=sys.stderr, flush=True)


def main(work: Path, ray_tmp: str) -> dict:
    common.setup(ray_tmp)
    from pipeline.inference.placement import worker_node
    from pipeline.inference.pool import WorkerPool

    bundle = common.build_bundle(work / "bundle")
    mark("bundle")
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "include_dashboard": False})
    out: dict = {}
    mark("cluster")
    try:
        pool = WorkerPool.start(str(bundle.path), workers=None, gpus_per_worker=0.0,
                                batch_size=1, ray_address=cluster.address, wait_s=120)
        mark("pool")
        out["head"] = ray.get_runtime_context().get_node_id()
        out["start_actors"] = len(pool.actors)
        out["reference"] = run_scene(pool, bundle, work / "reference.zarr")
        mark("reference")
        node: dict = {}

        def add():
            node["added"] = cluster.add_node(num_cpus=1)
            node["id"] = node["added"].node_id
            mark("node added")

        os.environ["SEGPIPE_FAULT_DELAY_S"] = JOIN_DELAY_S
        out["join"] = run_scene(pool, bundle, work / "join.zarr", when=lambda _: True, then=add,
                                shape=LONG)
        os.environ["SEGPIPE_FAULT_DELAY_S"] = DELAY_S
        out["joined_node"] = node["id"]
        mark("join")

        def remove():
            time.sleep(0.15)  # the new node's actor has taken its next batch
            cluster.remove_node(node["added"])

        out["leave"] = run_scene(pool, bundle, work / "leave.zarr", then=remove,
                                 when=lambda o: worker_node(o[0].worker) == node["id"])
        mark("leave")
        killed: dict = {}

        def kill():
            time.sleep(0.15)
            victim = pool.actors[-1]
            killed["actor"] = victim._actor_id.hex()
            ray.kill(victim, no_restart=True)

        out["kill"] = run_scene(pool, bundle, work / "kill.zarr", when=lambda _: True, then=kill)
        out["killed_actor"] = killed["actor"]
        out["actor_ids_after"] = [a._actor_id.hex() for a in pool.actors]
        mark("kill")
        pool.shutdown()
    finally:
        ray.shutdown()
        cluster.shutdown()
        mark("shutdown")
    return out


if __name__ == "__main__":
    common.emit(main(Path(sys.argv[1]), sys.argv[2]))
