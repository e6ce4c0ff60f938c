"""Settings every test and doctest needs before Prefect or Ray is imported.

Prefect and Ray read their settings at import time, so these come first, for the test
suite and for the doctests of every package alike: a private PREFECT_HOME, no
telemetry, no server services, no Ray usage stats or token file, and a calibration
cache of the session's own (never the user's).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

_TMP = Path(tempfile.mkdtemp(prefix="segpipe-tests-"))
os.environ.update({
    "SEGPIPE_TEST_TMP": str(_TMP),
    "PREFECT_HOME": str(_TMP / "prefect"),
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_UI_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_TMPDIR": str(_TMP / "ray"),
    "SEGPIPE_CACHE_DIR": str(_TMP / "cache"),  # calibrations shared by the session only
})
os.environ.pop("SEGPIPE_NO_CACHE", None)
os.environ.pop("XDG_CACHE_HOME", None)
os.environ.pop("PREFECT_API_URL", None)
os.environ.pop("RAY_ADDRESS", None)
for _name in ("CANCELLATION_CLEANUP", "DB_VACUUM", "EVENT_PERSISTER", "EVENT_LOGGER", "FOREMAN",
              "LATE_RUNS", "SCHEDULER", "PAUSE_EXPIRATIONS", "REPOSSESSOR", "CLEANUP_RECONCILER",
              "TRIGGERS"):
    os.environ[f"PREFECT_SERVER_SERVICES_{_name}_ENABLED"] = "false"
# the task-run recorder stays on: tests read task runs back from the harness
os.environ["PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_ENABLED"] = "true"


def pytest_sessionfinish(session, exitstatus):  # noqa: ARG001
    shutil.rmtree(_TMP, ignore_errors=True)
