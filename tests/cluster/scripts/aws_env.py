"""A driver that joins a cluster passes its AWS settings (and PyTorch's huge-page setting)
to workers on every node.

argv: WORK RAY_TMP. The cluster's nodes start before the driver sets the variables,
so a worker sees them only if segpipe forwarded them. Prints JSON: per node, what a
task there read.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cluster_common import setup  # noqa: E402


def main() -> None:
    setup(sys.argv[2])
    for name in list(os.environ):
        if name.startswith("AWS_") or name == "THP_MEM_ALLOC_ENABLE":
            del os.environ[name]
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    os.environ.update({"AWS_ACCESS_KEY_ID": "forwarded-key", "AWS_REGION": "eu-west-1",
                       "THP_MEM_ALLOC_ENABLE": "1", "SEGPIPE_NOT_FORWARDED": "x"})
    import ray

    from pipeline.inference.runtime import ensure_ray

    ensure_ray(cluster.address)

    @ray.remote(num_cpus=1, scheduling_strategy="SPREAD")
    def read() -> tuple[str, dict]:
        import time

        time.sleep(0.5)  # both nodes take tasks
        keys = ("AWS_ACCESS_KEY_ID", "AWS_REGION", "THP_MEM_ALLOC_ENABLE",
                "SEGPIPE_NOT_FORWARDED")
        return ray.get_runtime_context().get_node_id(), {k: os.environ.get(k) for k in keys}

    seen = dict(ray.get([read.remote() for _ in range(8)]))
    ray.shutdown()
    cluster.shutdown()
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
