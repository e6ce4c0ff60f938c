"""Two runs on one output directory: a scene lock that dies with its owner, a second
run that skips a locked scene without touching its work, and a publish that never
leaves the final path without a complete result."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from pipeline.formats import Scene
from pipeline.run.exchange import exchange
from pipeline.run.lock import LockOwner, SceneLockedError, lock_path, scene_lock
from pipeline.run.workspace import Workspace, publish, start_partial

_HOLDER = """
import sys, time
from pathlib import Path
from pipeline.run.lock import scene_lock
with scene_lock(Path(sys.argv[1]), sys.argv[2]):
    print("held", flush=True)
    time.sleep(600)
"""


def _hold(out: Path, scene_id: str) -> subprocess.Popen:
    """Another process that takes the scene's lock and keeps it (until killed)."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out), scene_id],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _kill(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait(timeout=30)


def test_a_held_lock_names_its_owner_and_a_killed_owners_lock_is_taken_over(tmp_path):
    holder = _hold(tmp_path, "s1")
    try:
        with pytest.raises(SceneLockedError) as locked, scene_lock(tmp_path, "s1"):
            pass
        assert locked.value.owner.pid == holder.pid
        assert f"locked by {socket.gethostname()}:{holder.pid} since" in str(locked.value)
        with scene_lock(tmp_path, "other"):  # other scenes are free
            pass
    finally:
        _kill(holder)  # SIGKILL: the owner never releases the lock itself
    assert LockOwner.parse(lock_path(tmp_path, "s1").read_text()).pid == holder.pid
    lines: list[str] = []
    with scene_lock(tmp_path, "s1", on_stale=lines.append) as me:
        assert me.pid == os.getpid()
    assert len(lines) == 1 and f"stale lock of {socket.gethostname()}:{holder.pid}" in lines[0]
    assert not lock_path(tmp_path, "s1").exists()  # released: removed
    with scene_lock(tmp_path, "s1", on_stale=lines.append):
        pass
    assert len(lines) == 1  # a lock released normally is not stale


def test_locks_in_one_process_exclude_each_other(tmp_path):
    """Threads of one run (scenes in flight) are told apart too; the error pickles."""
    import pickle

    with scene_lock(tmp_path, "s"), pytest.raises(SceneLockedError) as locked, \
            scene_lock(tmp_path, "s"):
        pass
    again = pickle.loads(pickle.dumps(locked.value))
    assert str(again) == str(locked.value) and again.owner == locked.value.owner


def test_a_second_run_skips_a_locked_scene_and_leaves_its_work(scene_factory, tmp_path,
                                                                caplog):
    """While another run holds the scene, `segpipe run` fails that scene's row with
    "locked by host:pid" (exit 1) and the other run's partial work stays as it is."""
    image = scene_factory("locked-scene", size=(128, 128))[0]
    out = tmp_path / "out"
    work = out / ".locked-scene.partial" / "theirs.txt"
    work.parent.mkdir(parents=True)
    work.write_text("the first run's tiles")
    holder = _hold(out, "locked-scene")
    try:
        result = CliRunner().invoke(app, ["run", str(image), "--model", "demo-satellite",
                                          "--out", str(out), "--no-resume"])
    finally:
        _kill(holder)
    assert result.exit_code == 1, result.output
    assert f"locked by {socket.gethostname()}:{holder.pid}" in result.output
    assert work.read_text() == "the first run's tiles"
    assert not (out / "locked-scene").exists()
    result = CliRunner().invoke(app, ["run", str(image), "--model", "demo-satellite",
                                      "--out", str(out), "--no-resume"])
    assert result.exit_code == 0, result.output
    assert (out / "locked-scene" / "report.json").is_file()
    assert [r for r in caplog.records if "took over the stale lock" in r.getMessage()]


def test_exchange_swaps_two_directories(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x").write_text("a")
    (tmp_path / "b" / "x").write_text("b")
    assert exchange(tmp_path / "a", tmp_path / "b")  # Linux on a local file system
    assert (tmp_path / "a" / "x").read_text() == "b"
    assert (tmp_path / "b" / "x").read_text() == "a"
    with pytest.raises(FileNotFoundError):
        exchange(tmp_path / "a", tmp_path / "missing")


_POLLER = """
import os, sys
report, stop = sys.argv[1], sys.argv[2]
missing = polls = 0
print("polling", flush=True)
while not os.path.exists(stop):
    polls += 1
    try:
        os.stat(report)
    except FileNotFoundError:
        missing += 1
print(polls, missing)
"""


def test_republishing_never_leaves_the_final_path_without_a_result(tmp_path):
    """Another process (no shared GIL) polls the final report.json while a finished scene
    is replaced 30 times: it is always there, and the last result wins."""
    ws = Workspace(Scene(tmp_path / "in.tif", "s", "geotiff"), tmp_path / "out")
    stop = tmp_path / "stop"

    def build(n: int) -> None:
        start_partial(ws, keep=False)
        for i in range(20):
            (ws.partial / f"part-{i}.bin").write_bytes(b"x" * 1000)
        (ws.partial / "report.json").write_text(f'{{"v": {n}}}')

    build(0)
    publish(ws)
    poller = subprocess.Popen([sys.executable, "-c", _POLLER, str(ws.final / "report.json"),
                               str(stop)], stdout=subprocess.PIPE, text=True)
    assert poller.stdout.readline().strip() == "polling"
    try:
        for n in range(1, 31):
            build(n)
            publish(ws)
    finally:
        stop.touch()
        polls, missing = map(int, poller.communicate(timeout=60)[0].split())
    assert polls > 100 and missing == 0, f"no result at the final path in {missing} of {polls} polls"
    assert (ws.final / "report.json").read_text() == '{"v": 30}'
    assert not ws.partial.exists()
    assert sorted(p.name for p in ws.out_dir.iterdir()) == ["s"]  # no old copies left
