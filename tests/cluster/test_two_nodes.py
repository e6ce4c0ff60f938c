"""Two Ray nodes on one machine (ray.cluster_utils.Cluster), in a subprocess.

scripts/two_nodes.py starts a 2-node cluster (2 logical CPUs each) and runs one scene
with an instance model twice: through a pool started without an address (it must stay
local) and through a 2-actor pool that joins the cluster by address. The stores live
on a path both "nodes" see, as a shared filesystem would provide in a real cluster.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from tests.cluster import run_script


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    return run_script("two_nodes.py", tmp_path_factory.mktemp("two-nodes"), timeout=240)


@pytest.mark.timeout(300)
def test_two_node_run_spreads_actors_and_local_runs_stay_local(two_nodes):
    local, joined = two_nodes["local"], two_nodes["cluster"]

    # no address: a private single-node runtime, not the cluster Ray recorded in its
    # temp dir (a bare ray.init() joins that one)
    assert len(local["nodes"]) == 1 and local["actor_nodes"] == local["nodes"] * 2
    assert set(local["nodes"]).isdisjoint(joined["nodes"])

    # --ray-address: joined (namespace kept), one actor on each node (Ray's default
    # strategy would pack both onto the head, which has room for both)
    assert len(joined["nodes"]) == 2 and joined["cpus"] == 4
    assert joined["namespace"] == local["namespace"] == "segpipe"
    assert sorted(joined["actor_nodes"]) == joined["nodes"]
    for run in (local, joined):
        assert run["tiles"]["total"] == run["tiles"]["computed"] == 24


@pytest.mark.timeout(300)
def test_ingest_fusion_and_export_tasks_run_on_both_nodes_with_the_same_result(two_nodes):
    from pipeline.store import INSTANCE, PANOPTIC, SEMANTIC, VALID, open_store

    cluster, local = two_nodes["cluster"], two_nodes["local"]
    # the fusion's statistics are gathered by the instance pass as it writes the ids,
    # and its panoptic map written by fusion-apply; the class totals were counted by the
    # tile workers, so neither a separate fusion pass nor a totals pass reads them back
    for label in ("ingest", "instances", "fusion-apply", "export"):
        assert cluster["passes"][label] == cluster["nodes"], label
    assert not {"fusion", "totals"} & (set(cluster["passes"]) | set(local["passes"]))
    assert set(local["passes"]) >= {"ingest", "instances", "fusion-apply", "export"}
    assert all(nodes == local["nodes"] for nodes in local["passes"].values())

    two, one = Path(cluster["out"]), Path(local["out"])
    a, b = open_store(two / "scene.zarr"), open_store(one / "scene.zarr")
    for name in (VALID, SEMANTIC, INSTANCE, PANOPTIC):
        np.testing.assert_array_equal(a[name][:], b[name][:], err_msg=name)
    assert (a[SEMANTIC][:] != 255).any() and (a[INSTANCE][:] > 0).any()
    for name in ("semantic", "instance", "panoptic"):
        with rasterio.open(two / f"{name}.tif") as x, rasterio.open(one / f"{name}.tif") as y:
            np.testing.assert_array_equal(x.read(), y.read(), err_msg=name)
            assert x.overviews(1) == y.overviews(1) and x.overviews(1)
    assert (two / "segments.json").read_text() == (one / "segments.json").read_text()
