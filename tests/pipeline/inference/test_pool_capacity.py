"""What a pool on a local runtime starts: ``workers`` is an upper bound, and a pool of
which not one actor can ever be placed is refused at once (a local runtime cannot grow).

Uses the session's 2-CPU local Ray (no GPUs); the elastic behaviour on a cluster is in
tests/cluster/test_elastic.py.
"""

from __future__ import annotations

import time

import pytest
import ray

from pipeline.inference.placement import runtime_is_local
from pipeline.inference.pool import WorkerPool
from segcore.errors import ConfigError


def test_workers_is_the_most_actors_not_a_demand(ray_session, tiny_bundle):
    assert runtime_is_local()  # the session's ray.init() started this runtime
    pool = WorkerPool.start(str(tiny_bundle.path), workers=64, gpus_per_worker=0.0,
                            batch_size=2)
    try:
        assert len(pool.actors) == pool.config.workers == 2  # one per CPU of the runtime
        assert pool.config.cap == 64
        assert sorted(d["device"] for d in pool.describe(timeout=60)) == ["cpu", "cpu"]
        # the block-pass workers finished importing before the pool was handed over
        ready, waiting = ray.wait(pool._warming, num_returns=len(pool._warming), timeout=0)
        assert len(pool._warming) == 2 and not waiting
    finally:
        pool.shutdown()


def test_a_gpu_pool_without_gpus_is_refused_at_once_on_a_local_runtime(ray_session,
                                                                       tiny_bundle):
    start = time.monotonic()
    with pytest.raises(ConfigError) as info:
        WorkerPool.start(str(tiny_bundle.path), workers=None, gpus_per_worker=1.0,
                         batch_size=2)
    message = " ".join(str(info.value).split())
    assert "--gpus-per-worker 1 needs 1 GPU" in message and "0 GPU (0 free)" in message
    assert "cannot grow" in message and "--ray-address" in message
    assert time.monotonic() - start < 5  # no waiting for a GPU that cannot come
