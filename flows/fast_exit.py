"""End the ``segpipe`` process without the interpreter's module teardown.

When a command is done, Python would still spend most of a second tearing down the
modules it loaded (torch, Ray's core worker, the pipeline: 0.5-1.0 s measured on
2 cores), after every result is written and every exit hook has run. :func:`arm`
registers an exit hook that runs after all hooks registered later (Ray's shutdown
among them), shuts logging down, flushes stdout and stderr and ends the process at
once with the status :func:`record` stored. Without a recorded status the normal exit
runs. Only the ``segpipe`` entry point arms it; code that imports the CLI (tests) is
not affected.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys

_STATUS: list[int] = []  # the exit status of this process's command, once known


def status_of(code: object) -> int:
    """The process exit status Python gives ``SystemExit(code)``.

    Examples
    --------
    >>> status_of(None), status_of(2), status_of("a message")
    (0, 2, 1)
    """
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


def arm() -> None:
    """Register the exit hook (once per process)."""
    if not getattr(arm, "armed", False):
        atexit.register(_exit_now)
        arm.armed = True  # type: ignore[attr-defined]


def record(code: object) -> None:
    """Store the command's ``SystemExit`` code as the status to end the process with."""
    _STATUS[:] = [status_of(code)]


def _exit_now() -> None:
    if not _STATUS:
        return
    logging.shutdown()  # log handlers flushed and closed, as at a normal exit
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(_STATUS[0])
