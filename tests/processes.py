"""Helpers for tests that run segpipe in a subprocess and kill it."""

from __future__ import annotations

import os
import signal
import subprocess

import psutil


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL a process started with ``start_new_session=True`` and all its children
    (Ray's workers included), as a crash or an out-of-memory kill would."""
    try:
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for p in family:
        try:
            p.kill()
        except psutil.Error:
            pass
    proc.wait(timeout=30)
