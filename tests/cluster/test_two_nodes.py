"""Two Ray nodes on one machine (ray.cluster_utils.Cluster), in a subprocess.

scripts/two_nodes.py starts a 2-node cluster (4 logical CPUs each), runs one scene
through a pool started without an address (must stay local) and then through a
2-actor pool that joins the cluster by address; the stores live on a path both
"nodes" see, as a shared filesystem would provide in a real cluster.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.cluster import run_script


@pytest.mark.timeout(150)
def test_two_node_run_spreads_actors_and_matches_single_node(tmp_path):
    from pipeline.store import SEMANTIC, VALID, open_store

    result = run_script("two_nodes.py", tmp_path, timeout=120)
    local, joined = result["local"], result["cluster"]

    # no address: a private single-node runtime, not the cluster Ray recorded in its
    # temp dir (a bare ray.init() joins that one)
    assert len(local["nodes"]) == 1 and local["actor_nodes"] == local["nodes"]
    assert set(local["nodes"]).isdisjoint(joined["nodes"])

    # --ray-address: joined (namespace kept), one actor on each node (SPREAD; Ray's
    # default strategy would pack both onto the head, which has room for both)
    assert len(joined["nodes"]) == 2 and joined["cpus"] == 8
    assert joined["namespace"] == local["namespace"] == "segpipe"
    assert sorted(joined["actor_nodes"]) == joined["nodes"]

    for run in (local, joined):
        assert run["tiles"]["total"] == run["tiles"]["computed"] == 6
    one, two = open_store(tmp_path / "one-node" / "two" / "scene.zarr"), \
        open_store(tmp_path / "two-nodes" / "two" / "scene.zarr")
    np.testing.assert_array_equal(two[SEMANTIC][:], one[SEMANTIC][:])
    np.testing.assert_array_equal(two[VALID][:], one[VALID][:])
    assert (one[SEMANTIC][:] != 255).any()
