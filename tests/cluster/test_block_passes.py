"""Every pass besides the model runs as Ray tasks on every node, with the same result.

scripts/block_passes.py runs one scene with an instance model on a 2-node
``ray.cluster_utils.Cluster`` and again on a private single-node runtime.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from tests.cluster import run_script


@pytest.mark.timeout(240)
def test_ingest_fusion_and_export_tasks_run_on_both_nodes(tmp_path):
    from pipeline.store import INSTANCE, PANOPTIC, SEMANTIC, VALID, open_store

    result = run_script("block_passes.py", tmp_path, timeout=220)
    cluster, local = result["cluster"], result["local"]
    assert len(cluster["nodes"]) == 2
    for label in ("ingest", "fusion", "fusion-apply", "instances", "totals", "export"):
        assert cluster["passes"][label] == cluster["nodes"], label
    assert set(local["passes"]) >= {"ingest", "fusion", "export"}
    assert all(len(nodes) == 1 for nodes in local["passes"].values())

    two, one = Path(cluster["out"]), Path(local["out"])
    a, b = open_store(two / "scene.zarr"), open_store(one / "scene.zarr")
    for name in (VALID, SEMANTIC, INSTANCE, PANOPTIC):
        np.testing.assert_array_equal(a[name][:], b[name][:], err_msg=name)
    assert (a[INSTANCE][:] > 0).any()
    for name in ("semantic", "instance", "panoptic"):
        with rasterio.open(two / f"{name}.tif") as x, rasterio.open(one / f"{name}.tif") as y:
            np.testing.assert_array_equal(x.read(), y.read(), err_msg=name)
            assert x.overviews(1) == y.overviews(1) and x.overviews(1)
    assert (two / "segments.json").read_text() == (one / "segments.json").read_text()
