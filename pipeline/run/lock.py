"""One run at a time per scene: a lock beside the scene in the output directory.

Two runs on the same output directory (a manual rerun during a nightly pass, two
batches started together) must never destroy each other's work: the partial
directory ``DIR/.<scene_id>.partial/`` of one run is removed or reused by the other.
:func:`scene_lock` holds ``DIR/.<scene_id>.lock`` while a run works on the scene; a
second run finds the scene locked and skips it with :class:`SceneLockedError`
("locked by HOST:PID since ..."), which fails that scene's row (exit code 1) and
leaves the first run's work alone.

In a local (or NFS) directory the lock is an exclusive ``flock(2)`` on the file, so
the kernel releases it when its owner dies, SIGKILL included: a lock left by a
killed run is stale by construction. The file also records the owner (host, pid,
start time) for the message; the next run that takes the lock reports that it took
over a stale one. On NFS, Linux maps ``flock`` onto NFS byte-range locks, which the
server releases when the owning client's lease ends.

Object storage has no lock that dies with its owner. For an ``s3://`` output
directory the same object ``DIR/.<scene_id>.lock`` is a *lease* instead
(:mod:`pipeline.run.object_lock`): created with a conditional write, renewed by a
heartbeat, stale once its expiry time has passed, taken over with a conditional
overwrite, and a run that loses it publishes nothing. :class:`LockOwner` and
:class:`SceneLockedError` serve both kinds.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from segcore.errors import SegpipeError

LOCK_SUFFIX = ".lock"
log = logging.getLogger(__name__)


class SceneLockedError(SegpipeError, RuntimeError):
    """Another run holds the scene's lock; this run leaves the scene to it.

    Parameters
    ----------
    scene_id : str
        The locked scene.
    owner : LockOwner, str or None
        Who holds it (a description as text is kept as it is; None when its lock file
        could not be read).
    until : float, optional
        When the holder's lease ends unless renewed (Unix time, s; locks on object
        storage), said in the message.
    """

    def __init__(self, scene_id: str, owner: LockOwner | None,
                 until: float | None = None) -> None:
        self.scene_id, self.owner, self.until = scene_id, owner, until
        who = owner.describe() if isinstance(owner, LockOwner) else (owner or "another run")
        lease = "" if until is None else \
            f"; its lease runs until {local_time(until)} unless that run renews it"
        super().__init__(f"{scene_id}: skipped, locked by {who}; another segpipe run is "
                         f"working on it (rerun once it has finished{lease})")

    def __reduce__(self) -> tuple:
        return (type(self), (self.scene_id, self.owner, self.until))


def local_time(when: float) -> str:
    """A Unix time as local ``YYYY-MM-DD HH:MM:SS`` (for messages)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))


@dataclass(frozen=True)
class LockOwner:
    """The run holding a scene lock: its host, process id and start (Unix time, s)."""

    host: str
    pid: int
    started: float

    @classmethod
    def me(cls) -> LockOwner:
        return cls(socket.gethostname(), os.getpid(), time.time())

    def describe(self) -> str:
        """``host:pid since 2026-01-02 03:04:05``."""
        return f"{self.host}:{self.pid} since {local_time(self.started)}"

    @classmethod
    def parse(cls, text: str) -> LockOwner | None:
        """The owner a lock file records, or None for an empty or damaged file."""
        try:
            data = json.loads(text)
            return cls(str(data["host"]), int(data["pid"]), float(data["started"]))
        except (ValueError, KeyError, TypeError):
            return None


def lock_path(out_dir: Path, scene_id: str) -> Path:
    """``DIR/.<scene_id>.lock``."""
    return out_dir / f".{scene_id}{LOCK_SUFFIX}"


def _open_locked(path: Path) -> int | None:
    """A descriptor holding the exclusive lock on the file now at ``path``, or None when
    another process holds it. A file removed or replaced between open and lock (its
    owner released it) is opened again."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # we locked a file its owner had just removed: try the new one


def _read(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 4096).decode("utf-8", "replace")


def _read_path(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


@contextmanager
def scene_lock(out_dir: Path, scene_id: str, *,
               on_stale: Callable[[str], None] | None = None) -> Iterator[LockOwner]:
    """Hold the lock of scene ``scene_id`` in ``out_dir`` for the block.

    Parameters
    ----------
    out_dir : Path
        The local output directory (it exists).
    scene_id : str
        The scene.
    on_stale : callable, optional
        Receives one line when the lock file was left by a run that died (the lock is
        taken over); default: a warning of this module's logger.

    Yields
    ------
    LockOwner
        This run, as recorded in the lock file.

    Raises
    ------
    SceneLockedError
        When another live run holds the lock.
    """
    path = lock_path(out_dir, scene_id)
    fd = _open_locked(path)
    if fd is None:
        raise SceneLockedError(scene_id, LockOwner.parse(_read_path(path)))
    try:
        previous = LockOwner.parse(_read(fd))
        if previous is not None:
            line = (f"{scene_id}: took over the stale lock of {previous.describe()} "
                    "(that run ended without releasing it)")
            (on_stale or log.warning)(line)
        me = LockOwner.me()
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(asdict(me)).encode(), 0)
        try:
            yield me
        finally:
            path.unlink(missing_ok=True)  # still holding it: waiters re-open (see above)
    finally:
        os.close(fd)
