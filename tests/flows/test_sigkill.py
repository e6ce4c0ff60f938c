"""Nothing outlives a killed run: SIGKILL a real `segpipe run --executor ray` mid-run
(as the out-of-memory killer would: the one process) and find no process of it left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

_TMP = Path(os.environ["SEGPIPE_TEST_TMP"])


def _mentioning(text: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(text in part for part in p.info["cmdline"] or []):
                found.append(p)
        except psutil.Error:
            continue
    return found


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    return [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_a_killed_run_leaves_no_process(scene_factory, tmp_path):
    image = scene_factory("sigkill", size=(1024, 1024))[0]
    ray_tmp = Path(tempfile.mkdtemp(prefix="k", dir=_TMP))  # short: Ray's socket paths
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = str(ray_tmp)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "run", str(image), "--model",
                             "demo-satellite", "--out", str(out), "--executor", "ray",
                             "--workers", "1", "--tile", "64"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    records = out / ".sigkill.partial" / "tiles"
    deadline = time.monotonic() + 240
    while not (records.is_dir() and any(records.iterdir())):  # tiles are being computed
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended early"
        time.sleep(0.2)
    family = psutil.Process(proc.pid).children(recursive=True)
    assert len(family) >= 3, family  # Ray's GCS, raylet, a worker at least
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 20
    while (left := _alive(family) + _mentioning(str(ray_tmp))) and time.monotonic() < deadline:
        time.sleep(0.5)
    try:
        assert not left, [(p.pid, p.name()) for p in left]
    finally:
        for p in left:
            p.kill()
