"""Nothing outlives a killed run: a watchdog process that ends the run's helpers.

A run starts helper processes: a local Ray runtime (GCS, raylet, dashboard and
runtime-env agents, workers) and, for the Prefect flows, a temporary Prefect server.
Ray ties its GCS and raylet to the driver, but its agents and workers, and Prefect's
server, keep running when the driver is killed with SIGKILL (an out-of-memory kill, a
``timeout -s KILL``): nothing in the dead process can stop them.

:func:`guard_children` starts one small watchdog per process, in its own session (a
kill of the run's process group does not reach it). It notes the run's descendants
once a second; when the run has gone it SIGKILLs every noted process that still
lives, their descendants, and any process whose command line mentions one of the
given markers (a local Ray runtime's session directory), then exits. It imports
nothing but :mod:`psutil`. On a normal exit the helpers are stopped already and the
watchdog finds nothing to do.

Run as a script: ``python watchdog.py PARENT_PID [MARKER ...]``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

POLL_S = 1.0
_STARTED: dict[int, subprocess.Popen] = {}  # this process's watchdog (by pid: forks)
_LOCK = threading.Lock()


def guard_children(*markers: str) -> None:
    """Start this process's watchdog (once; later calls do nothing).

    Parameters
    ----------
    *markers : str
        Text whose presence in a command line marks a process of this run (for
        processes that are no descendants, e.g. ones that daemonised).
    """
    with _LOCK:
        if os.getpid() in _STARTED:
            return
        _STARTED[os.getpid()] = subprocess.Popen(
            # -I: the script's own directory is not put on sys.path (its modules would
            # shadow the standard library's)
            [sys.executable, "-I", os.path.abspath(__file__), str(os.getpid()), *markers],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, close_fds=True)


def _descendants(pid: int) -> dict[int, float]:
    import psutil

    try:
        return {c.pid: c.create_time() for c in psutil.Process(pid).children(recursive=True)}
    except psutil.Error:
        return {}


def _marked(markers: list[str]) -> dict[int, float]:
    import psutil

    found = {}
    for p in psutil.process_iter(["cmdline", "create_time"]):
        try:
            if any(m in part for part in p.info["cmdline"] or [] for m in markers):
                found[p.pid] = p.info["create_time"]
        except psutil.Error:
            continue
    return found


def _kill(noted: dict[int, float], markers: list[str]) -> int:
    """SIGKILL the noted processes still alive (same start time: not a reused pid), their
    descendants and the marked ones; returns how many were killed."""
    import psutil

    targets: dict[int, float] = {}
    for pid, created in noted.items():
        targets[pid] = created
        targets.update(_descendants(pid))
    if markers:
        targets.update(_marked(markers))
    killed = 0
    for pid, created in targets.items():
        try:
            p = psutil.Process(pid)
            if abs(p.create_time() - created) < 0.01 and pid != os.getpid():
                p.kill()
                killed += 1
        except psutil.Error:
            continue
    return killed


def watch(parent: int, markers: list[str]) -> None:
    """Note ``parent``'s descendants until it has gone, then kill them (see module)."""
    noted: dict[int, float] = {}
    while os.getppid() == parent:  # re-parented: the run has gone
        noted.update(_descendants(parent))
        time.sleep(POLL_S)
    for _ in range(3):  # helpers may start helpers while they are being killed
        if not _kill(noted, markers):
            break
        time.sleep(0.5)


if __name__ == "__main__":
    watch(int(sys.argv[1]), sys.argv[2:])
