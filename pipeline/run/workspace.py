"""Where one scene is built and where it lands.

A scene is built in ``DIR/.<scene_id>.partial/`` and becomes ``DIR/<scene_id>/`` only
when its report is written (:func:`publish`), so a failed run never damages a finished
scene and ``report.json`` marks a finished one. A killed run leaves its partial
directory for the next run to resume (:mod:`pipeline.run.resume`). A run holds the
scene's lock (:func:`scene_lock`, :mod:`pipeline.run.lock`) from before it looks at
these directories until it has published or discarded, so a second run on the same
``DIR`` skips the scene instead of removing the first run's work.

``DIR`` is a local directory or an ``s3://bucket/prefix`` (:mod:`pipeline.storage`).
Locally, replacing a previous result is one atomic exchange of the two directories
(``renameat2`` with ``RENAME_EXCHANGE``, :mod:`pipeline.run.exchange`): the final path
holds the old complete result until the instant it holds the new one. Where the file
system cannot exchange, the old result is renamed away just before the new one comes
in. Object storage has no rename: :func:`publish` removes the previous result's ``report.json`` first (from then on it is not a finished scene),
copies the new objects server-side, removes objects of the previous result that the
new one does not have, writes ``report.json`` last and then removes the partial
prefix. A publish cut short leaves no ``report.json`` and keeps the partial work, so the
next run publishes again from it. The tile completion records (``tiles/``) are not
copied to a published scene on object storage; ``ingest.json`` (the run fingerprint and
its parts, :mod:`pipeline.run.resume`) is, as in a local directory.

On object storage the scene's lock is a lease (:mod:`pipeline.run.object_lock`): a run
that has lost it publishes nothing (:class:`~pipeline.run.object_lock.LeaseLostError`)
and leaves the partial work to the run that took the lock over.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from pipeline.formats import Scene
from pipeline.formats.base import safe_id
from pipeline.run import lock, object_lock
from pipeline.run.exchange import exchange
from pipeline.storage import StorageError, objects
from pipeline.storage.access import remove_tree
from pipeline.storage.location import Location, S3Uri, parse_location
from segcore.errors import ConfigError

TILE_RECORDS = "tiles"  # completion records of the partial scene, one file per tile
REPORT = "report.json"  # written last: its presence marks a finished scene
_BOOKKEEPING = (f"{TILE_RECORDS}/",)  # partial-only files (resume)


@dataclass(frozen=True)
class Workspace:
    """One scene's input, output directory and optional label file.

    ``out_dir`` is a local path or an :class:`~pipeline.storage.S3Uri` (a string is
    parsed); the derived locations are of the same kind.
    """

    scene: Scene
    out_dir: Location
    labels: Path | S3Uri | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "out_dir", parse_location(self.out_dir))
        sid = self.scene.scene_id
        if safe_id(sid) != sid:  # ids are made by safe_id; anything else could leave --out
            raise ConfigError(f"scene id: expected a safe directory name such as "
                              f"{safe_id(sid)!r} (no separators, no leading '.', not a "
                              f"batch file name), got {sid!r}")

    @property
    def final(self) -> Location:
        return self.out_dir / self.scene.scene_id

    @property
    def partial(self) -> Location:
        return self.out_dir / f".{self.scene.scene_id}.partial"

    @property
    def store(self) -> Location:
        return self.partial / "scene.zarr"

    @property
    def records(self) -> Location:
        return self.partial / TILE_RECORDS


def start_partial(workspace: Workspace, *, keep: bool) -> None:
    """Keep a killed run's partial directory (``keep``), else start a clean one."""
    if keep:
        return
    partial = workspace.partial
    if isinstance(partial, S3Uri):
        objects.delete_prefix(partial)
        return
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)


def publish(workspace: Workspace) -> Location:
    """Swap the finished scene into place; a previous result is replaced only now."""
    final, partial = workspace.final, workspace.partial
    if isinstance(final, S3Uri):
        def still_held() -> None:  # LeaseLostError once this run has lost the scene's lock
            object_lock.check_held(workspace.out_dir, workspace.scene.scene_id)
        _publish_objects(partial, final, still_held)
        return final
    if final.exists():
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        if exchange(partial, final):  # the final path never lacks a complete result
            partial.rename(old)
        else:  # no atomic exchange here: a moment without a result at the final path
            final.rename(old)
            partial.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        partial.rename(final)
    return final


def scene_lock(workspace: Workspace) -> AbstractContextManager:
    """Hold the scene's lock: a ``flock`` in a local output directory
    (:mod:`pipeline.run.lock`), a lease object in an ``s3://`` one
    (:mod:`pipeline.run.object_lock`).

    Raises
    ------
    SceneLockedError
        When another run holds it.
    """
    if isinstance(workspace.out_dir, S3Uri):
        return object_lock.object_lock(workspace.out_dir, workspace.scene.scene_id)
    workspace.out_dir.mkdir(parents=True, exist_ok=True)
    return lock.scene_lock(workspace.out_dir, workspace.scene.scene_id)


def _publish_objects(partial: S3Uri, final: S3Uri,
                     still_held: Callable[[], None] = lambda: None) -> None:
    """Object storage's publish (see the module docstring); ``still_held`` raises when
    this run may no longer publish (checked first and before the report lands)."""
    new = {o.uri.relative_to(partial).as_posix() for o in objects.list_objects(partial)}
    new = {rel for rel in new if not rel.startswith(_BOOKKEEPING)}
    if REPORT not in new:
        raise StorageError(str(partial), f"cannot publish: the scene has no {REPORT}")
    still_held()
    objects.delete(final / REPORT)
    objects.copy_objects((partial / rel, final / rel) for rel in sorted(new - {REPORT}))
    objects.delete_objects(o.uri for o in objects.list_objects(final)
                           if o.uri.relative_to(final).as_posix() not in new)
    still_held()
    objects.copy_objects([(partial / REPORT, final / REPORT)])
    objects.delete_prefix(partial)


def discard(workspace: Workspace) -> None:
    """Remove a failed scene's partial work (a finished result stays untouched); kept
    when this run has lost the scene's lock (the run that took it over may use it)."""
    if object_lock.lease_lost(workspace.out_dir, workspace.scene.scene_id):
        return
    try:
        remove_tree(workspace.partial)
    except StorageError:
        pass  # the scene's own error is the one to report; a later run starts afresh


def out_location(out: str | os.PathLike[str] | Location) -> Location:
    """``--out`` as a location: an absolute local path (actors on other nodes or working
    directories need one), created if missing, or an ``s3://`` prefix as given."""
    where = parse_location(out)
    if isinstance(where, S3Uri):
        return where
    where = where.resolve()
    where.mkdir(parents=True, exist_ok=True)
    return where


def prepare_out_dir(out: str | os.PathLike[str] | Location) -> Location:
    """Create the output directory (and its parents) and check results can be written there.

    For an ``s3://`` prefix: a small object is written below it and removed again, so a
    missing bucket, missing credentials, refused access or an unreachable endpoint is
    found before any work starts.

    Raises
    ------
    ConfigError
        When ``out`` is a file, or cannot be created or written (one line naming it).
    """
    where = parse_location(out)
    if isinstance(where, S3Uri):
        probe = where / f".segpipe-write-check-{secrets.token_hex(6)}"
        try:
            objects.put_bytes(probe, b"")
            objects.delete(probe)
        except StorageError as exc:
            raise ConfigError(f"--out {where}: cannot write results there ({exc.reason})") \
                from None
        return where
    path = where
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".segpipe-write-check-"):
            pass
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot write results there "
                          f"({exc.strerror or type(exc).__name__})") from None
    return path.resolve()
