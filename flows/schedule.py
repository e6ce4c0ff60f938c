"""The nightly schedule's defaults: one definition for the CLI, the flows and deploy/.

``deploy/prefect/prefect.yaml`` must carry the same cron and time zone (a test checks it).
"""

from __future__ import annotations

DEFAULT_CRON = "0 2 * * *"
"""Every night at 02:00: the default schedule of ``segpipe nightly`` (``--cron``)."""
DEFAULT_TIMEZONE = "UTC"
DEPLOYMENT_NAME = "segpipe-nightly"
FLOW_NAME = "nightly_pass"
WORK_POOL = "segpipe-pool"
