"""Tests that need a Ray runtime of their own (fake GPUs, several nodes).

Each scenario runs as a subprocess (scripts/), because a process holds one Ray
runtime and the session Ray of tests/conftest.py has 2 CPUs and no GPUs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SCRIPTS = Path(__file__).parent / "scripts"


def run_script(name: str, work: Path, *args: str, timeout: float) -> dict:
    """Run ``scripts/<name> WORK RAY_TMP *args``; return the JSON of its last stdout line.

    Ray's temp dir is a short private dir under /tmp (its unix sockets must stay under
    ~107 characters, which pytest's tmp_path can exceed), removed afterwards.
    """
    ray_tmp = tempfile.mkdtemp(prefix="sp-ray-")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled",
           "RAY_TMPDIR": ray_tmp, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    try:
        proc = subprocess.run(
            [sys.executable, str(SCRIPTS / name), str(work), ray_tmp, *args],
            capture_output=True, text=True, timeout=timeout, env=env, cwd=work, check=False,
        )
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 0, (
        f"{name} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}"
        f"\n--- stderr\n{proc.stderr[-6000:]}")
    lines = proc.stdout.strip().splitlines()
    assert lines, f"{name} printed nothing; stderr:\n{proc.stderr[-4000:]}"
    return json.loads(lines[-1])
