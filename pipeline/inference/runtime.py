"""Starting or joining Ray.

Without an address a local runtime starts in-process; with ``address`` (or
``RAY_ADDRESS``) the run joins that cluster (``HEAD:6379``, or ``auto`` for the
cluster ``ray start`` recorded on this machine). An already initialised runtime
(tests, notebooks) is reused as it is.
"""

from __future__ import annotations

import os

import ray


def ensure_ray(address: str | None = None, *, num_cpus: int | None = None) -> dict:
    """Initialise Ray once and return the cluster's resources."""
    if not ray.is_initialized():
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        kwargs: dict = {"include_dashboard": False, "log_to_driver": False,
                        "ignore_reinit_error": True, "namespace": "segpipe"}
        address = address or os.environ.get("RAY_ADDRESS") or None
        if address:
            kwargs["address"] = address
        else:
            # "local": a fresh runtime even where `ray start` left a cluster address in
            # Ray's temp dir (a bare ray.init() would silently join that cluster).
            kwargs["address"] = "local"
            kwargs["num_cpus"] = num_cpus
            # Local runtime: the pipeline must not need a token file in $HOME.
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(**kwargs)
    return ray.cluster_resources()
