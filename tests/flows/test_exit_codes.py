"""Exit codes of `segpipe run`: 2 with one line, within seconds, for an unusable
environment (bad --out, unreachable cluster of any address form); 3 with one line and
a --debug hint for an internal error."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from flows.exit_codes import ExitCode

_TMP = Path(os.environ["SEGPIPE_TEST_TMP"])


@pytest.fixture(scope="module")
def scene(scene_factory):
    return scene_factory("exit-codes", size=(96, 96))[0]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _segpipe(*args, timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="r", dir=_TMP)  # no cluster recorded there
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "flows.cli", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=timeout, check=False)
    return proc, time.monotonic() - start


def _one_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.mark.parametrize("kind", ["file", "below-a-file"])
def test_an_unusable_out_is_exit_2_with_one_line(scene, tmp_path, kind):
    blocker = tmp_path / "taken"
    blocker.write_text("not a directory")
    out = blocker if kind == "file" else blocker / "results"
    proc, _ = _segpipe("run", scene, "--model", "demo-satellite", "--out", out)
    assert proc.returncode == ExitCode.UNUSABLE, proc.stderr
    assert f"--out {out}" in _one_line(proc.stderr)


# Not "auto": it joins any Ray runtime running on this machine (Ray finds its GCS process),
# such as the test session's own, so its outcome depends on what else runs here.
@pytest.mark.parametrize("address", ["127.0.0.1:{port}", "ray://127.0.0.1:{port}"])
def test_no_cluster_at_the_address_is_exit_2_within_seconds(scene, tmp_path, address):
    address = address.format(port=_closed_port())
    proc, seconds = _segpipe("run", scene, "--model", "demo-satellite", "--out",
                             tmp_path / "out", "--executor", "ray", "--ray-address", address)
    assert proc.returncode == ExitCode.UNUSABLE, proc.stderr
    line = _one_line(proc.stderr)
    assert address in line or "cluster" in line.lower(), line
    assert seconds < 60, seconds  # Ray alone retries an unreachable address for minutes


def test_an_internal_error_is_exit_3_with_a_debug_hint(monkeypatch, capsys):
    """A bug (here: discovery raising a plain RuntimeError) is one line and exit 3."""
    import flows.cli
    import pipeline.discovery

    def broken(inputs):
        raise RuntimeError("unexpected state\nsecond line")

    monkeypatch.setattr(pipeline.discovery, "find", broken)  # what `run` calls
    monkeypatch.setattr(sys, "argv", ["segpipe", "run", "x.tif", "--model", "demo-satellite",
                                      "--out", "/nonexistent-out", "--executor", "local"])
    with pytest.raises(SystemExit) as done:
        flows.cli.main()
    assert done.value.code == ExitCode.INTERNAL
    line = _one_line(capsys.readouterr().err)
    assert "RuntimeError: unexpected state" in line and "--debug" in line
