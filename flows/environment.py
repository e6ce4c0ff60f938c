"""Prefect and Ray defaults for local runs, applied before either is imported.

``segpipe run`` and ``segpipe demo`` use no Prefect at all (:mod:`flows.batch`).
``segpipe nightly --once`` uses Prefect in local mode: with no ``PREFECT_API_URL``
Prefect starts a temporary server by itself, so nobody starts one by hand. Its
background services are switched off (they only matter for a long-lived
server and slow each run), telemetry is off, and Prefect's own log lines are
hidden unless ``--debug`` (segpipe prints one clear line per problem). Values
the user set in the environment always win.

``THP_MEM_ALLOC_ENABLE=1`` (PyTorch's own setting, read at its first allocation) puts
torch's CPU tensors of 2 MiB and more on transparent huge pages where the kernel offers
them (``/sys/kernel/mm/transparent_hugepage/enabled``: ``always`` or ``madvise``). A
model's activations are allocated and freed layer after layer; on 4 KiB pages each
one is faulted in anew: a ``demo-medical`` window of 104 x 160² voxels took 5.3-5.7 s
on one core, 2.4-2.5 s of it in the kernel (0.62 million page faults), and 3.8-3.9 s on
huge pages (12 thousand faults). Freed tensors still go back to the
operating system, so memory follows the live tensors as before. Local Ray workers
inherit it; workers of a joined cluster get it with the driver's AWS settings
(:data:`pipeline.inference.runtime.FORWARDED_PREFIXES`).
"""

from __future__ import annotations

import logging
import os

_SERVICES = (
    "CANCELLATION_CLEANUP", "DB_VACUUM", "EVENT_PERSISTER", "EVENT_LOGGER", "FOREMAN",
    "LATE_RUNS", "SCHEDULER", "PAUSE_EXPIRATIONS", "REPOSSESSOR", "CLEANUP_RECONCILER",
    "TASK_RUN_RECORDER", "TRIGGERS",
)


def configure(debug: bool = False) -> None:
    """Set quiet, fast local defaults (``os.environ.setdefault`` only)."""
    env = os.environ
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # before torch allocates (module docstring)
    env.setdefault("DO_NOT_TRACK", "1")
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env.setdefault("PREFECT_SERVER_UI_ENABLED", "false")
    env.setdefault("PREFECT_LOGGING_LEVEL", "WARNING" if debug else "CRITICAL")
    env.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    if not env.get("PREFECT_API_URL"):
        for name in _SERVICES:
            env.setdefault(f"PREFECT_SERVER_SERVICES_{name}_ENABLED", "false")
    if not debug:
        silence_library_logs()


_NOISY = ("ray", "prefect", "distributed", "httpx", "uvicorn", "asyncio")


def silence_library_logs() -> None:
    """Hide library log records below CRITICAL (tracebacks of failed scenes included).

    Call again after importing Prefect: its import applies its own logging config.
    """
    names = [n for n in logging.root.manager.loggerDict if n.split(".")[0] in _NOISY]
    for name in (*_NOISY, *names):
        logging.getLogger(name).setLevel(logging.CRITICAL)
