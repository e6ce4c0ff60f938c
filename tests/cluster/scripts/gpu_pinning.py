"""Fake-GPU pinning: pools on ``ray.init(num_gpus=2)``, one real scene through each.

usage: gpu_pinning.py WORK_DIR RAY_TMP GPUS_PER_WORKER [GPUS_PER_WORKER ...]
One Ray runtime; for each GPU share in turn a pool starts, runs the scene and shuts
down. Prints JSON: per share (as given), each actor's describe(), the pool config
and the report's tile counts.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cluster_common as common
import ray


def pinned_run(bundle, image: Path, out: Path, gpus_per_worker: float) -> dict:
    from pipeline.inference.pool import WorkerPool

    pool = WorkerPool.start(str(bundle.path), workers=None, gpus_per_worker=gpus_per_worker,
                            batch_size=2)
    try:
        actors = pool.describe(timeout=60)
        report = common.run_one(image, out, bundle, pool)
    finally:
        pool.shutdown()
    return {"actors": actors, "workers": pool.config.workers,
            "cpus_per_worker": pool.config.cpus_per_worker,
            "gpus_per_worker": pool.config.gpus_per_worker, "tiles": report["tiles"]}


def main(work: Path, ray_tmp: str, shares: list[str]) -> dict:
    common.setup(ray_tmp)
    bundle = common.build_bundle(work / "bundle")
    image = common.write_image(work / "scenes" / "pin.tif")
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False,
             namespace="segpipe", _temp_dir=str(Path(ray_tmp) / "ray"))
    try:
        return {share: pinned_run(bundle, image, work / f"out-{share}", float(share))
                for share in shares}
    finally:
        ray.shutdown()


if __name__ == "__main__":
    common.emit(main(Path(sys.argv[1]), sys.argv[2], sys.argv[3:]))
