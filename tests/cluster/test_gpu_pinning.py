"""GPU pinning on Ray's fake GPUs, in a subprocess with its own Ray runtime.

The session Ray (tests/conftest.py) has no GPUs and a process holds one Ray
runtime, so scripts/gpu_pinning.py starts ``ray.init(num_cpus=2, num_gpus=2)``:
Ray sets CUDA_VISIBLE_DEVICES per actor as it would on a real GPU node.
"""

from __future__ import annotations

import pytest

from tests.cluster import run_script


@pytest.fixture(scope="module")
def pinned(tmp_path_factory):
    """Both GPU shares, one after the other, in one fake-GPU Ray runtime."""
    return run_script("gpu_pinning.py", tmp_path_factory.mktemp("pinning"), "1", "0.5",
                      timeout=200)


@pytest.mark.timeout(250)
def test_one_actor_per_fake_gpu_each_pinned(pinned):
    result = pinned["1"]
    actors = result["actors"]
    assert result["workers"] == len(actors) == 2  # default: one actor per GPU
    assert sorted(a["cuda_visible_devices"] for a in actors) == ["0", "1"]
    assert sorted(g for a in actors for g in a["gpu_ids"]) == ["0", "1"]
    assert result["cpus_per_worker"] == 1.0
    tiles = result["tiles"]
    assert tiles["total"] == tiles["computed"] == 6


@pytest.mark.timeout(250)
def test_half_gpu_actors_two_per_fake_gpu(pinned):
    result = pinned["0.5"]
    actors = result["actors"]
    # 2 GPUs / 0.5 = 4 actors; on 2 CPUs that fits only because a half-GPU actor
    # reserves half a CPU (placement.default_cpus_per_worker)
    assert result["workers"] == len(actors) == 4
    assert result["cpus_per_worker"] == 0.5
    assert sorted(a["cuda_visible_devices"] for a in actors) == ["0", "0", "1", "1"]
    tiles = result["tiles"]
    assert tiles["total"] == tiles["computed"] == 6


# -- the placement rules themselves (no Ray) ---------------------------------------


def test_gpu_actors_reserve_cpu_in_proportion_to_their_gpu_share():
    from pipeline.inference.placement import default_cpus_per_worker

    assert default_cpus_per_worker(0.0) == 1.0
    assert default_cpus_per_worker(1.0) == 1.0
    assert default_cpus_per_worker(0.5) == 0.5
    assert default_cpus_per_worker(2.0) == 1.0


def test_workers_that_fit_fill_the_gpus_within_the_cpus():
    from pipeline.inference.placement import worker_demand, workers_that_fit

    node = {"CPU": 2.0, "GPU": 2.0}
    assert workers_that_fit(node, worker_demand(1.0, 1.0)) == 2
    assert workers_that_fit(node, worker_demand(0.5, 0.5)) == 4
    # a flat 1 CPU per actor: only 2 half-GPU actors fit on this node
    assert workers_that_fit(node, worker_demand(0.5, 1.0)) == 2
    assert workers_that_fit({"CPU": 3.0}, worker_demand(0.0, 1.0)) == 3
    assert workers_that_fit({"CPU": 0.5}, worker_demand(0.0, 1.0)) == 0
    assert workers_that_fit({"CPU": 64.0}, worker_demand(1.0, 1.0)) == 0  # no GPU at all
