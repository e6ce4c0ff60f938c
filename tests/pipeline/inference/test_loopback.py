"""A local run's services listen on the loopback interface only.

``segpipe run`` without ``--ray-address`` starts a private Ray runtime (GCS, raylet,
dashboard and runtime-env agents, workers) and possibly Prefect's local server. While a
run is under way in a subprocess, every listening TCP socket of its process tree must be
bound to 127.0.0.1 or ::1: none to a wildcard (0.0.0.0, ::) or to the host's address.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from tests.processes import kill_tree


def _is_loopback(ip: str) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback (``::ffff:127.0.0.1``).

    >>> [_is_loopback(a) for a in ("127.0.0.1", "::ffff:127.0.0.1", "::", "0.0.0.0")]
    [True, True, False, False]
    """
    address = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _listening(root: int) -> set[tuple[str, str, int]]:
    """(process name, address, port) of every listening TCP socket of root's tree."""
    try:
        top = psutil.Process(root)
        family = [top, *top.children(recursive=True)]
    except psutil.NoSuchProcess:
        return set()
    found = set()
    for proc in family:
        try:
            name = proc.name()
            for conn in proc.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN:
                    found.add((name, conn.laddr.ip, conn.laddr.port))
        except psutil.Error:
            continue  # a worker that ended between listing and asking
    return found


def test_a_local_run_listens_on_loopback_only(scene_factory, tiny_bundle, tmp_path):
    image = scene_factory("loopback", size=(256, 256), seed=5)[0]
    out = tmp_path / "out"
    ray_tmp = tempfile.mkdtemp(prefix="lb-", dir="/tmp")  # Ray's socket paths must be short
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"),
           "SEGPIPE_FAULT_DELAY_S": "0.5", "RAY_TMPDIR": ray_tmp}
    for name in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"):
        env.pop(name, None)
    exe = Path(sys.executable).parent / "segpipe"
    proc = subprocess.Popen(
        [str(exe), "run", str(image), "--model", str(tiny_bundle.path), "--out", str(out),
         "--tile", "128", "--workers", "1", "--batch-size", "1", "--executor", "ray"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    records = out / ".loopback.partial" / "tiles"
    seen: set[tuple[str, str, int]] = set()
    deadline = time.monotonic() + 180
    try:
        while not any(records.glob("*.done")):  # the model actor is working: all is up
            assert proc.poll() is None, f"run ended early: {proc.stderr.read()!r}"
            assert time.monotonic() < deadline, "no tile finished in time"
            seen |= _listening(proc.pid)
            time.sleep(0.2)
        for _ in range(5):
            seen |= _listening(proc.pid)
            time.sleep(0.2)
    finally:
        kill_tree(proc)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    names = {name for name, _, _ in seen}
    assert {"gcs_server", "raylet"} <= names, seen  # Ray's services were seen listening
    exposed = sorted(s for s in seen if not _is_loopback(s[1]))
    assert exposed == [], f"listening beyond loopback: {exposed}"
