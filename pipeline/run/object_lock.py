"""Scene locks on object storage: a lease object, renewed while its run works.

An ``s3://`` output directory has no ``flock``, and no lock dies with its owner, so the
lock of scene ``S`` is a lease: the object ``<out>/.S.lock`` holding JSON
``{"host", "pid", "started", "expires", "token"}`` (times in Unix seconds; the token is
random, so no two runs, not even two threads, ever write the same bytes). Every step is one
conditional write (:mod:`pipeline.storage.conditional`), which the server decides
atomically:

* **take**: create the object only if it is absent (``If-None-Match: *``). Of two runs,
  one creates it; the other reads it and skips the scene with
  :class:`~pipeline.run.lock.SceneLockedError` ("locked by HOST:PID since ...").
* **renew**: a heartbeat thread rewrites it every third of the lease (:data:`LEASE_S`,
  60 s) with a later ``expires``, only if it is still the object this run last wrote
  (``If-Match`` on its entity tag).
* **take over**: a lock whose ``expires`` has passed was left by a run that died (or
  could not reach the storage for a whole lease). So is one whose owner ran on this host
  (the same host name) under a process id that no longer names that process: a run
  killed here is taken over at once, without waiting for its lease to end. The next run
  replaces a stale lock only if it is still the object it read (``If-Match``), so of two
  runs racing for a stale lock exactly one wins; the winner logs one line
  (``took over the stale lock of ...``).
* **release**: the object is deleted if it is still this run's (same entity tag, lease
  not expired); a lock that another run has taken over is left alone.

A run whose renewal finds the object replaced, or that could not renew it before it
expired, has **lost** the lock (:meth:`ObjectLease.lost`). It must not publish the scene
nor remove its partial work, which the run that took over may be using:
:func:`check_held` raises :class:`LeaseLostError` for such a scene (the workspace's
``publish`` calls it) and :func:`lease_lost` tells the workspace to keep the partial
work. Work in flight is not stopped; it is simply never published.

Limits: leases compare the wall clocks of different hosts, which must agree to well
within a lease (NTP does). A run killed with SIGKILL leaves its lease in place until it
expires, so its scenes are skipped (not destroyed) by runs started within a lease of
the kill, unless they run on the host it ran on. Hosts (containers) that share a host
name must not share an output directory. A server that answers that it does not implement conditional writes
(``NotImplemented``, HTTP 501) gets no locks, with one warning line per output
directory; a server that silently ignores the precondition headers cannot be detected
and gives no protection.
"""

from __future__ import annotations

import json
import logging
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import psutil

from pipeline.run.lock import LOCK_SUFFIX, LockOwner, SceneLockedError, local_time
from pipeline.storage import StorageError, objects
from pipeline.storage.conditional import (
    ConditionalWritesUnsupported,
    get_tagged,
    put_if_absent,
    put_if_match,
)
from pipeline.storage.location import Location, S3Uri
from segcore.errors import SegpipeError

LEASE_S = 60.0  # a lease's length; renewed every third of it
_ATTEMPTS = 4  # take-or-read rounds before giving up on a lock that keeps changing
log = logging.getLogger(__name__)

Clock = Callable[[], float]


class LeaseLostError(SegpipeError, RuntimeError):
    """This run lost the scene's lock on object storage; the scene is not published.

    Parameters
    ----------
    scene_id : str
        The scene.
    lock : str
        The lock object's URI.
    why : str
        How it was lost (one line).
    """

    def __init__(self, scene_id: str, lock: str, why: str) -> None:
        self.scene_id, self.lock, self.why = scene_id, lock, why
        super().__init__(f"{scene_id}: not published: this run lost the scene's lock {lock} "
                         f"({why}); another run may be working on the scene")

    def __reduce__(self) -> tuple:
        return (type(self), (self.scene_id, self.lock, self.why))


@dataclass(frozen=True)
class LeaseRecord:
    """What a lock object holds: its owner, when its lease ends (Unix time, s) and the
    random token of the run's lease."""

    owner: LockOwner
    expires: float
    token: str = ""

    def to_bytes(self) -> bytes:
        return json.dumps({**asdict(self.owner), "expires": self.expires,
                           "token": self.token}).encode()

    @classmethod
    def parse(cls, data: bytes) -> LeaseRecord | None:
        """The record of a lock object, or None for an empty or damaged one."""
        text = data.decode("utf-8", "replace")
        owner = LockOwner.parse(text)
        try:
            doc = json.loads(text)
            expires, token = float(doc["expires"]), str(doc.get("token", ""))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        return None if owner is None else cls(owner, expires, token)


def lock_uri(out_dir: S3Uri, scene_id: str) -> S3Uri:
    """``<out>/.<scene_id>.lock``."""
    return out_dir / f".{scene_id}{LOCK_SUFFIX}"


class ObjectLease:
    """A scene lock held on object storage; a heartbeat thread renews it until released.

    Made by :func:`acquire`; use :func:`object_lock` rather than this class directly.
    """

    def __init__(self, uri: S3Uri, scene_id: str, owner: LockOwner, *, token: str, etag: str,
                 expires: float, lease_s: float, clock: Clock = time.time) -> None:
        self.uri, self.scene_id, self.owner, self.lease_s = uri, scene_id, owner, lease_s
        self._token = token
        self._etag, self._expires, self._clock = etag, expires, clock
        self._why: str | None = None  # set once the lease is lost
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._heartbeat, daemon=True,
                                        name=f"segpipe-lease-{scene_id}")

    @property
    def expires(self) -> float:
        """When the lease ends unless renewed (Unix time, s)."""
        return self._expires

    def lost(self) -> bool:
        """Whether this run may no longer count on the lock: another run replaced it,
        or it was not renewed before it expired."""
        return self._why is not None or self._clock() >= self._expires

    def check(self) -> None:
        """Raise :class:`LeaseLostError` when the lock is :meth:`lost`."""
        if self.lost():
            raise LeaseLostError(self.scene_id, str(self.uri),
                                 self._why or "its lease expired before it was renewed")

    def start(self) -> ObjectLease:
        self._thread.start()
        return self

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            if not self._renew():
                return

    def _renew(self) -> bool:
        """One renewal; False once the lease is lost (the heartbeat then stops)."""
        expires = self._clock() + self.lease_s
        body = LeaseRecord(self.owner, expires, self._token).to_bytes()
        try:
            etag = put_if_match(self.uri, body, self._etag)
            if etag is None:
                etag = _written(self.uri, body)  # a retried request that had succeeded
        except StorageError as exc:
            if self._clock() < self._expires:
                return True  # storage unreachable for now: try again at the next beat
            self._lose(f"it could not be renewed before it expired: {exc.reason}")
            return False
        if etag is None:
            self._lose(_replaced_by(self.uri))
            return False
        self._etag, self._expires = etag, expires
        return True

    def _lose(self, why: str) -> None:
        self._why = why
        log.warning("%s: lost the lock %s (%s); this run will not publish the scene",
                    self.scene_id, self.uri, why)

    def release(self) -> None:
        """Stop renewing; delete the lock object if it is still this run's."""
        self._stop.set()
        self._thread.join()
        if self.lost():
            return  # another run may hold it now: leave it (a stale one is taken over)
        try:
            current = get_tagged(self.uri)
            if current is not None and current.etag == self._etag:
                objects.delete(self.uri)
        except StorageError as exc:
            log.warning("%s: could not remove the lock %s (%s); it is stale after %s",
                        self.scene_id, self.uri, exc.reason, local_time(self._expires))


def _written(uri: S3Uri, body: bytes) -> str | None:
    """The entity tag of ``uri`` when it holds exactly ``body`` (this run's own write),
    else None."""
    current = get_tagged(uri)
    return current.etag if current is not None and current.data == body else None


def _replaced_by(uri: S3Uri) -> str:
    try:
        current = get_tagged(uri)
    except StorageError:
        current = None
    record = LeaseRecord.parse(current.data) if current is not None else None
    if record is None:
        return "its lock object was removed or replaced"
    return f"taken over by {record.owner.describe()}"


def _owner_ended(owner: LockOwner) -> bool:
    """Whether the owner ran on this host and its process is gone (its process id is
    free, a zombie, or names a process started after the lock)."""
    if owner.host != socket.gethostname():
        return False  # another host's processes cannot be seen: wait for the lease
    try:
        proc = psutil.Process(owner.pid)
        return proc.status() == psutil.STATUS_ZOMBIE or proc.create_time() > owner.started + 1
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:  # not ours to inspect: assume it lives
        return False


def _stale_line(scene_id: str, record: LeaseRecord | None, uri: S3Uri, *,
                ended: bool) -> str:
    if record is None:
        return f"{scene_id}: took over the stale lock {uri} (its content was unreadable)"
    why = ("that run ended without releasing it" if ended else
           f"its lease expired at {local_time(record.expires)} without renewal: that run "
           "ended or lost the storage")
    return f"{scene_id}: took over the stale lock of {record.owner.describe()} ({why})"


def acquire(uri: S3Uri, scene_id: str, *, lease_s: float = LEASE_S,
            on_stale: Callable[[str], None] | None = None,
            clock: Clock = time.time) -> ObjectLease:
    """Take the lock object ``uri`` (see the module docstring) and start renewing it.

    Raises
    ------
    SceneLockedError
        When another run holds a lease that has not expired.
    ConditionalWritesUnsupported
        When the server does not implement conditional writes.
    StorageError
        When the storage cannot be read or written.
    """
    me, token = LockOwner.me(), secrets.token_hex(8)
    record: LeaseRecord | None = None
    for _ in range(_ATTEMPTS):
        expires = clock() + lease_s
        body = LeaseRecord(me, expires, token).to_bytes()
        etag = put_if_absent(uri, body)
        if etag is None:
            current = get_tagged(uri)
            if current is None:
                continue  # released in between: try to create it again
            if current.data == body:  # our own create, retried after it had succeeded
                etag = current.etag
            else:
                record = LeaseRecord.parse(current.data)
                ended = record is not None and _owner_ended(record.owner)
                if record is not None and record.expires > clock() and not ended:
                    raise SceneLockedError(scene_id, record.owner, record.expires)
                etag = put_if_match(uri, body, current.etag) or _written(uri, body)
                if etag is None:
                    continue  # another run took it over (or its owner renewed): look again
                (on_stale or log.warning)(_stale_line(scene_id, record, uri, ended=ended))
        return ObjectLease(uri, scene_id, me, token=token, etag=etag, expires=expires,
                           lease_s=lease_s, clock=clock).start()
    raise SceneLockedError(scene_id, record.owner if record else None,
                           record.expires if record else None)


# --------------------------------------------------------------------------- this process's leases

_HELD: dict[S3Uri, ObjectLease] = {}  # the leases this process holds, by lock object
_WARNED: set[S3Uri] = set()  # output directories already warned about (no locks there)
_GUARD = threading.Lock()


def held_lease(out_dir: Location, scene_id: str) -> ObjectLease | None:
    """The lease this process holds on the scene, if any (None for a local directory)."""
    if not isinstance(out_dir, S3Uri):
        return None
    with _GUARD:
        return _HELD.get(lock_uri(out_dir, scene_id))


def check_held(out_dir: Location, scene_id: str) -> None:
    """Raise :class:`LeaseLostError` when this process held the scene's lease and lost
    it; nothing otherwise (a local directory, no lease, or a lease still held)."""
    lease = held_lease(out_dir, scene_id)
    if lease is not None:
        lease.check()


def lease_lost(out_dir: Location, scene_id: str) -> bool:
    """Whether this process held the scene's lease and lost it."""
    lease = held_lease(out_dir, scene_id)
    return lease is not None and lease.lost()


def _warn_unlocked(out_dir: S3Uri) -> None:
    with _GUARD:
        if out_dir in _WARNED:
            return
        _WARNED.add(out_dir)
    log.warning("%s: the object store does not support conditional writes, so scenes "
                "there are not locked: keep runs on this output directory apart", out_dir)


@contextmanager
def object_lock(out_dir: S3Uri, scene_id: str, *, lease_s: float = LEASE_S,
                on_stale: Callable[[str], None] | None = None) -> Iterator[ObjectLease | None]:
    """Hold the lock of scene ``scene_id`` in the ``s3://`` output directory for the block.

    Parameters
    ----------
    out_dir : S3Uri
        The output directory (a prefix).
    scene_id : str
        The scene.
    lease_s : float
        The lease's length in seconds (renewed every third of it).
    on_stale : callable, optional
        Receives one line when a stale lock is taken over; default: a warning of this
        module's logger.

    Yields
    ------
    ObjectLease or None
        The lease; None when the server has no conditional writes (one warning per
        output directory, and no lock).

    Raises
    ------
    SceneLockedError
        When another run holds a lease that has not expired.
    """
    uri = lock_uri(out_dir, scene_id)
    try:
        lease = acquire(uri, scene_id, lease_s=lease_s, on_stale=on_stale)
    except ConditionalWritesUnsupported:
        lease = None
    if lease is None:
        _warn_unlocked(out_dir)
        yield None
        return
    with _GUARD:
        _HELD[uri] = lease
    try:
        yield lease
    finally:
        with _GUARD:
            _HELD.pop(uri, None)
        lease.release()
