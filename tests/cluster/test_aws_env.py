"""Object storage on a cluster: the driver's AWS settings reach the workers of every node."""

from __future__ import annotations

import pytest

from tests.cluster import run_script


@pytest.mark.timeout(180)
def test_joined_cluster_workers_get_the_drivers_aws_settings(tmp_path):
    seen = run_script("aws_env.py", tmp_path, timeout=160)
    assert len(seen) == 2, seen  # tasks ran on both nodes
    for values in seen.values():
        assert values == {"AWS_ACCESS_KEY_ID": "forwarded-key", "AWS_REGION": "eu-west-1",
                          "THP_MEM_ALLOC_ENABLE": "1", "SEGPIPE_NOT_FORWARDED": None}
