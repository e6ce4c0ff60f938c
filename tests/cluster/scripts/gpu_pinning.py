"""Fake-GPU pinning: a pool on ``ray.init(num_gpus=2)`` and one real scene through it.

usage: gpu_pinning.py WORK_DIR RAY_TMP GPUS_PER_WORKER
Prints JSON: each actor's describe(), the pool config, the report's tile counts.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cluster_common as common
import ray


def main(work: Path, ray_tmp: str, gpus_per_worker: float) -> dict:
    common.setup(ray_tmp)
    from pipeline.inference.pool import WorkerPool

    bundle = common.build_bundle(work / "bundle")
    image = common.write_image(work / "scenes" / "pin.tif")
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False,
             namespace="segpipe", _temp_dir=str(Path(ray_tmp) / "ray"))
    try:
        pool = WorkerPool.start(str(bundle.path), workers=None,
                                gpus_per_worker=gpus_per_worker, batch_size=2)
        try:
            actors = pool.describe(timeout=60)
            report = common.run_one(image, work / "out", bundle, pool)
        finally:
            pool.shutdown()
    finally:
        ray.shutdown()
    return {"actors": actors, "workers": pool.config.workers,
            "cpus_per_worker": pool.config.cpus_per_worker,
            "gpus_per_worker": pool.config.gpus_per_worker, "tiles": report["tiles"]}


if __name__ == "__main__":
    common.emit(main(Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])))
