"""Prefect and Ray defaults for local runs, applied before either is imported.

``segpipe run`` and ``segpipe demo`` use no Prefect at all (:mod:`flows.batch`).
``segpipe nightly --once`` uses Prefect in local mode: with no ``PREFECT_API_URL``
Prefect starts a temporary server by itself, so nobody starts one by hand. Its
background services are switched off (they only matter for a long-lived
server and slow each run), telemetry is off, and Prefect's own log lines are
hidden unless ``--debug`` (segpipe prints one clear line per problem). Values
the user set in the environment always win.
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
