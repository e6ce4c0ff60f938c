"""Scene locks on an ``s3://`` output directory, against the moto server on 127.0.0.1:
a lease held by another process skips the scene, a killed holder's lease is taken over
once it has expired, two racers for a stale lock never both win, release deletes only
its own lock, a run that lost its lease publishes nothing, and a server without
conditional writes gets one warning and no lock."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipeline.formats import Scene
from pipeline.inference.local_pool import LocalPool
from pipeline.options import RunOptions
from pipeline.run import Workspace, run_scene
from pipeline.run.lock import LockOwner, SceneLockedError
from pipeline.run.object_lock import (
    LeaseLostError,
    LeaseRecord,
    acquire,
    check_held,
    lock_uri,
    object_lock,
)
from pipeline.run.workspace import discard, publish, start_partial
from pipeline.storage import S3Uri, objects
from pipeline.storage.conditional import get_tagged

_HOLDER = """
import sys
from pipeline.run.object_lock import object_lock
from pipeline.storage import parse_location
with object_lock(parse_location(sys.argv[1]), sys.argv[2], lease_s=float(sys.argv[3])) as lease:
    print("held", lease is not None, flush=True)
    sys.stdin.readline()  # until told to release (or killed)
print("released", flush=True)
"""


def _hold(out: S3Uri, scene_id: str, lease_s: float) -> subprocess.Popen:
    """Another process that takes the scene's lease and keeps renewing it."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out), scene_id, str(lease_s)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held True"
    return proc


def _release(proc: subprocess.Popen) -> None:
    out, _ = proc.communicate("\n", timeout=30)
    assert proc.returncode == 0 and out.strip() == "released"


def _record(uri: S3Uri) -> LeaseRecord:
    return LeaseRecord.parse(objects.get_bytes(uri))


def _stale(uri: S3Uri, pid: int = 4242) -> LeaseRecord:
    """A lock object left by a run whose lease ended a minute ago."""
    record = LeaseRecord(LockOwner("elsewhere", pid, time.time() - 600), time.time() - 60, "x")
    objects.put_bytes(uri, record.to_bytes())
    return record


def test_a_live_lease_skips_the_second_run_and_is_renewed_beyond_its_length(bucket):
    out = S3Uri(bucket, "out")
    holder = _hold(out, "s1", lease_s=4.0)
    try:
        first = _record(lock_uri(out, "s1"))
        assert first.owner.pid == holder.pid and first.owner.host == socket.gethostname()
        with pytest.raises(SceneLockedError) as locked, object_lock(out, "s1"):
            pass
        assert locked.value.owner.pid == holder.pid
        assert f"locked by {socket.gethostname()}:{holder.pid} since" in str(locked.value)
        assert "lease runs until" in str(locked.value)
        time.sleep(4.5)  # longer than the lease: the heartbeat has renewed it meanwhile
        assert _record(lock_uri(out, "s1")).expires > first.expires
        with pytest.raises(SceneLockedError), object_lock(out, "s1"):
            pass
        with object_lock(out, "other") as lease:  # other scenes are free
            assert lease is not None
    finally:
        _release(holder)
    assert not objects.exists(lock_uri(out, "s1"))  # released: removed
    lines: list[str] = []
    with object_lock(out, "s1", on_stale=lines.append) as lease:
        assert lease.owner.pid != holder.pid
    assert lines == [] and not objects.exists(lock_uri(out, "s1"))


def test_a_killed_holders_lease_is_taken_over_at_once_on_its_host(bucket, caplog):
    """A holder killed on this host is seen to be gone (its pid is free): its lease is
    taken over before it expires. On another host it could not be seen: its lease holds
    until it expires, and is then taken over."""
    out = S3Uri(bucket, "out")
    holder = _hold(out, "s2", lease_s=30.0)
    holder.kill()  # SIGKILL: the holder never releases its lease
    holder.wait(timeout=30)
    left = _record(lock_uri(out, "s2"))
    assert left.owner.pid == holder.pid and left.expires > time.time() + 10
    with caplog.at_level(logging.WARNING, logger="pipeline.run.object_lock"), \
            object_lock(out, "s2") as lease:
        assert _record(lock_uri(out, "s2")).owner == lease.owner
    stale = [r.getMessage() for r in caplog.records if "took over the stale lock" in r.getMessage()]
    assert len(stale) == 1 and f"of {socket.gethostname()}:{holder.pid} since" in stale[0]
    assert "ended without releasing it" in stale[0]
    assert not objects.exists(lock_uri(out, "s2"))
    # the same dead pid recorded by another host: only the lease's end frees the scene
    uri = lock_uri(out, "s2")
    elsewhere = LeaseRecord(LockOwner("elsewhere", holder.pid, time.time()), time.time() + 1.5)
    objects.put_bytes(uri, elsewhere.to_bytes())
    with pytest.raises(SceneLockedError, match=f"locked by elsewhere:{holder.pid}"), \
            object_lock(out, "s2"):
        pass
    time.sleep(max(0.0, elsewhere.expires - time.time()) + 0.1)
    lines: list[str] = []
    with object_lock(out, "s2", on_stale=lines.append):
        pass
    assert len(lines) == 1 and "lease expired at" in lines[0] and "elsewhere" in lines[0]


def _race(uri: S3Uri, racers: int) -> tuple[list, list]:
    """``racers`` threads taking the lock at the same instant: (leases won, errors)."""
    start = threading.Barrier(racers)
    won, lost = [], []

    def race() -> None:
        start.wait()
        try:
            won.append(acquire(uri, "s3", lease_s=30.0, on_stale=lambda line: None))
        except SceneLockedError as exc:
            lost.append(exc)

    threads = [threading.Thread(target=race) for _ in range(racers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return won, lost


@pytest.mark.parametrize("racers", [2, 4])
def test_racers_for_a_stale_lock_never_both_win(bucket, racers):
    """Each trial: a stale lock object, `racers` threads taking it at the same instant;
    the server's If-Match lets exactly one replace it, the others see its lease."""
    uri = lock_uri(S3Uri(bucket, "out"), "s3")
    for _ in range(8):
        _stale(uri)
        won, lost = _race(uri, racers)
        assert len(won) == 1 and len(lost) == racers - 1
        winner = won[0]
        assert all(exc.owner == winner.owner for exc in lost)
        assert json.loads(objects.get_bytes(uri))["token"] == winner._token
        winner.release()
        assert not objects.exists(uri)


def test_release_deletes_only_its_own_lock(bucket):
    out = S3Uri(bucket, "out")
    uri = lock_uri(out, "s4")
    with object_lock(out, "s4", lease_s=30.0) as lease:
        assert not lease.lost()
        theirs = _stale(uri)  # replaced behind its back (as a run taking it over would)
        theirs_tag = get_tagged(uri).etag
    assert get_tagged(uri).etag == theirs_tag and _record(uri) == theirs  # left alone


def test_a_run_that_lost_its_lease_neither_publishes_nor_discards(bucket, caplog):
    out = S3Uri(bucket, "out")
    ws = Workspace(Scene(S3Uri(bucket, "in/s5.tif"), "s5", "geotiff"), out)
    with caplog.at_level(logging.WARNING, logger="pipeline.run.object_lock"), \
            object_lock(out, "s5", lease_s=0.9) as lease:
        start_partial(ws, keep=False)
        objects.put_bytes(ws.partial / "report.json", b"{}")
        check_held(out, "s5")  # held: nothing raised
        _stale(lock_uri(out, "s5"), pid=777)  # another run took it over
        deadline = time.time() + 20
        while not lease.lost() and time.time() < deadline:
            time.sleep(0.05)
        assert lease.lost()
        with pytest.raises(LeaseLostError, match=r"^s5: not published: this run lost"):
            publish(ws)
        discard(ws)  # the partial work may be the other run's now: kept
    assert not objects.exists(ws.final / "report.json")
    assert objects.exists(ws.partial / "report.json")
    assert _record(lock_uri(out, "s5")).owner.pid == 777
    assert any("lost the lock" in r.getMessage() for r in caplog.records)


class _NoConditionalWrites(BaseHTTPRequestHandler):
    """An S3 endpoint that answers every write: 501 NotImplemented (as a server without
    conditional writes answers If-None-Match)."""

    def do_PUT(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>NotImplemented</Code>'
                b"<Message>A header you provided implies functionality that is not "
                b"implemented</Message></Error>")
        self.send_response(501)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_a_server_without_conditional_writes_gets_one_warning_and_no_lock(monkeypatch,
                                                                           caplog):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NoConditionalWrites)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{server.server_address[1]}")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
        out = S3Uri("no-conditional-writes", f"out-{time.time_ns()}")
        with caplog.at_level(logging.WARNING, logger="pipeline.run.object_lock"):
            for _ in range(2):
                with object_lock(out, "s6") as lease:
                    assert lease is None
                    check_held(out, "s6")  # no lease: publishing goes on as before
    finally:
        server.shutdown()
        server.server_close()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{out}: the object store does not support conditional writes")


def test_run_scene_on_s3_skips_a_scene_another_process_holds(bucket, scene_factory,
                                                             tiny_bundle):
    """The runner takes the lease: a held scene raises SceneLockedError and its partial
    work is untouched; once released, the scene runs, publishes and frees its lock."""
    image = scene_factory("s3-locked", size=(128, 128))[0]
    out = S3Uri(bucket, "out")
    ws = Workspace(Scene(image, "s3-locked", "geotiff"), out)
    objects.put_bytes(ws.partial / "theirs.txt", b"the first run's tiles")
    pool = LocalPool(str(tiny_bundle.path), cores=2)
    holder = _hold(out, "s3-locked", lease_s=30.0)
    try:
        with pytest.raises(SceneLockedError, match=f"locked by {socket.gethostname()}:"
                                                   f"{holder.pid} since"):
            run_scene(ws, tiny_bundle, RunOptions(tile=128, resume=False), pool)
        assert objects.get_bytes(ws.partial / "theirs.txt") == b"the first run's tiles"
        assert not objects.exists(ws.final / "report.json")
        _release(holder)
        result = run_scene(ws, tiny_bundle, RunOptions(tile=128, resume=False), pool)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=30)
        pool.shutdown()
    assert not result.reused and objects.exists(ws.final / "report.json")
    assert not objects.exists(lock_uri(out, "s3-locked"))
    assert not objects.list_objects(ws.partial)
