"""The fixed cost of `segpipe run`: no Prefect server, Ray starting beside the checks,
an unusable Ray environment still one line and exit 2, nothing left running."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from flows.cli import app
from pipeline.inference.runtime import RAY_THREAD, check_reachable, in_background
from segcore.errors import ConfigError

_TMP = Path(os.environ["SEGPIPE_TEST_TMP"])


@pytest.fixture(scope="module")
def small_scene(scene_factory):
    return scene_factory("startup-small", size=(160, 128))[0]


_PROBED = ("prefect", "ray", "nibabel", "pydicom", "highdicom")
"""Packages a run of one GeoTIFF scene imports none of: no Prefect server, no Ray where
the work stays in the process, no NIfTI or DICOM reader (0.3-0.6 s of imports each)."""


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


def _segpipe(args: list, *, env: dict | None = None, probe: Path | None = None,
             timeout: float = 300) -> subprocess.CompletedProcess:
    """``segpipe ARGS`` in a fresh process; ``probe``: a file that receives, when the
    command is done, the modules of :data:`_PROBED` the process imported and its live
    threads."""
    code = ("import json, sys, threading\n"
            "from pathlib import Path\n"
            "from flows.cli import main\n"
            "sys.argv = ['segpipe', *sys.argv[1:]]\n"
            "try:\n"
            "    main()\n"
            "finally:\n"
            f"    mods = sorted(m for m in sys.modules if m.split('.')[0] in {_PROBED!r})\n"
            "    names = sorted(t.name for t in threading.enumerate())\n"
            f"    if {str(probe)!r} != 'None':\n"
            f"        Path({str(probe)!r}).write_text(json.dumps([mods, names]))\n")
    full_env = {**os.environ, **(env or {})}
    full_env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                          text=True, env=full_env, timeout=timeout, check=False)


def _ray_processes(temp_dir: Path) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(str(temp_dir) in part for part in p.info["cmdline"] or []):
                found.append(p)
        except psutil.Error:
            continue
    return found


def test_run_starts_no_prefect_and_ray_on_its_own_thread(small_scene, tmp_path):
    """A real `segpipe run` on Ray: the scene is segmented, Prefect is never imported (so
    no temporary server, no PREFECT_HOME), and Ray was started on the Ray thread."""
    home, probe = tmp_path / "prefect-home", tmp_path / "probe.txt"
    proc = _segpipe(["run", small_scene, "--model", "demo-satellite", "--out", tmp_path / "out",
                     "--workers", "1", "--executor", "ray"], env={"PREFECT_HOME": str(home)},
                    probe=probe)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "startup-small" / "report.json").is_file()
    modules, threads = json.loads(probe.read_text())
    assert not [m for m in modules if m.startswith("prefect")], modules[:5]
    assert not home.exists()
    assert RAY_THREAD in threads
    assert "Traceback" not in proc.stderr


def test_small_run_needs_no_ray(small_scene, tmp_path):
    """`--executor auto` runs a small scene in the command's own process: Ray is never
    imported (no runtime, no actors, nothing to stop) and the scene is complete. A
    GeoTIFF run does not import the NIfTI and DICOM readers either."""
    probe, ray_tmp = tmp_path / "probe.txt", Path(tempfile.mkdtemp(prefix="r", dir=_TMP))
    proc = _segpipe(["run", small_scene, "--model", "demo-satellite", "--out", tmp_path / "out"],
                    env={"RAY_TMPDIR": str(ray_tmp)}, probe=probe)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "out" / "startup-small" / "report.json").read_text())
    assert report["tiles"]["computed"] == report["tiles"]["total"] > 0
    modules, threads = json.loads(probe.read_text())
    assert modules == [], modules[:5]  # neither Prefect nor Ray, nor nibabel or pydicom
    assert RAY_THREAD not in threads
    assert not any(ray_tmp.iterdir())


def test_ray_starts_while_the_inputs_are_checked(small_scene, tmp_path, monkeypatch,
                                                 ray_session):
    """The Ray start is under way on the Ray thread before discovery has finished."""
    import flows.ray_start
    import pipeline.discovery

    began = threading.Event()
    seen: dict[str, object] = {}
    real_ensure, real_find = flows.ray_start.ensure_ray, pipeline.discovery.find

    def ensure(address=None, **kwargs):
        seen["thread"] = threading.current_thread().name
        began.set()
        return real_ensure(address, **kwargs)

    def find(inputs):
        seen["during_checks"] = began.wait(timeout=60)  # never set if Ray started later
        return real_find(inputs)

    monkeypatch.setattr(flows.ray_start, "ensure_ray", ensure)
    monkeypatch.setattr(pipeline.discovery, "find", find)  # what `run` calls
    result = CliRunner().invoke(app, ["run", str(small_scene), "--model", "demo-satellite",
                                      "--out", str(tmp_path / "out"), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert seen == {"thread": RAY_THREAD, "during_checks": True}


def test_unreachable_ray_address_is_one_line_and_exit_2(small_scene, tmp_path):
    port = _closed_port()
    start = time.monotonic()
    proc = _segpipe(["run", small_scene, "--model", "demo-satellite", "--out", tmp_path / "out",
                     "--ray-address", f"127.0.0.1:{port}"], timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert f"--ray-address 127.0.0.1:{port}" in lines[0] and "Traceback" not in proc.stderr
    assert time.monotonic() - start < 100  # Ray alone retries for minutes
    assert not (tmp_path / "out" / "startup-small").exists()


def test_checks_that_fail_after_ray_started_leave_nothing_running(tmp_path):
    """An input directory with no scene passes the quick look, so Ray starts early; the
    command still exits 2 with one line and stops the runtime it started."""
    empty = tmp_path / "empty"
    empty.mkdir()
    ray_tmp = Path(tempfile.mkdtemp(prefix="r", dir=_TMP))  # short: Ray's socket paths
    proc = _segpipe(["run", empty, "--model", "demo-satellite", "--out", tmp_path / "out",
                     "--executor", "ray"], env={"RAY_TMPDIR": str(ray_tmp)}, timeout=180)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "no input found" in lines[0], proc.stderr
    assert any(ray_tmp.rglob("raylet*")), "Ray was expected to start during the checks"
    deadline = time.monotonic() + 20
    while (left := _ray_processes(ray_tmp)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, [p.info["cmdline"][:2] for p in left]


def test_check_reachable_names_the_address():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        check_reachable(f"127.0.0.1:{server.getsockname()[1]}")  # answers: no error
    port = _closed_port()
    with pytest.raises(ConfigError, match=f"--ray-address 127.0.0.1:{port}: no Ray cluster"):
        check_reachable(f"127.0.0.1:{port}", timeout=2)
    check_reachable("auto")  # not a HEAD:PORT address: left to Ray


def test_background_calls_run_in_order_on_one_lasting_thread():
    names = [in_background(lambda: threading.current_thread().name).result(timeout=10)
             for _ in range(2)]
    assert names == [RAY_THREAD, RAY_THREAD]
    failed = in_background(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        failed.result(timeout=10)
    assert in_background(lambda: "still serving").result(timeout=10) == "still serving"


def test_main_called_from_code_keeps_the_normal_exit(monkeypatch):
    """Only a script's top level ends the process early (flows.fast_exit); a caller such
    as this test gets SystemExit and the interpreter exits as usual."""
    import flows.cli
    from flows import fast_exit

    monkeypatch.setattr(sys, "argv", ["segpipe", "models"])
    with pytest.raises(SystemExit) as done:
        flows.cli.main()
    assert done.value.code in (0, None)
    assert not getattr(fast_exit.arm, "armed", False) and fast_exit._STATUS == []


_CLOSE = r"""
import json, sys, time
import ray
from flows.ray_start import RayStart

start = RayStart(None, quiet=True)
start._ray.result(timeout=180)
node = ray._private.worker._global_node
procs = {kind: [i.process for i in infos] for kind, infos in node.all_processes.items()}
seen = {}
real_shutdown = ray.shutdown

def shutdown(*args, **kwargs):
    seen["monitor_alive_at_shutdown"] = [p.poll() is None for p in procs.get("monitor", [])]
    return real_shutdown(*args, **kwargs)

ray.shutdown = shutdown
t = time.perf_counter()
start.close()
seen["close_s"] = time.perf_counter() - t
seen["alive_after"] = sorted(k for k, ps in procs.items() if any(p.poll() is None for p in ps))
seen["kinds"] = sorted(procs)
print(json.dumps(seen))
"""


def test_closing_a_local_runtime_does_not_wait_for_its_autoscaler_monitor(tmp_path):
    """Ray's shutdown gives each of its processes up to 1 s after SIGTERM, and the monitor
    of a local runtime takes all of it: it is stopped before Ray's shutdown begins, and
    nothing of the runtime runs afterwards."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="r", dir=_TMP))  # short: Ray's socket paths
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp), "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, "-c", _CLOSE], capture_output=True, text=True,
                          env=env, timeout=240, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "monitor" in seen["kinds"] and "raylet" in seen["kinds"], seen
    assert seen["monitor_alive_at_shutdown"] == [False], seen
    assert seen["alive_after"] == [], seen
    assert "autoscaler failed" not in proc.stderr, proc.stderr[-2000:]
