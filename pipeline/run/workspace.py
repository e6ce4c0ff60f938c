"""Where one scene is built and where it lands.

A scene is built in ``DIR/.<scene_id>.partial/`` and renamed to ``DIR/<scene_id>/``
only when its report is written (:func:`publish`), so a failed run never damages a
finished scene and ``report.json`` marks a finished one. A killed run leaves its
partial directory for the next run to resume (:mod:`pipeline.run.resume`).
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from pipeline.formats import Scene
from segcore.errors import ConfigError

TILE_RECORDS = "tiles"  # completion records of the partial scene, one file per tile


@dataclass(frozen=True)
class Workspace:
    """One scene's input, output directory and optional label file."""

    scene: Scene
    out_dir: Path
    labels: Path | None = None

    @property
    def final(self) -> Path:
        return self.out_dir / self.scene.scene_id

    @property
    def partial(self) -> Path:
        return self.out_dir / f".{self.scene.scene_id}.partial"

    @property
    def store(self) -> Path:
        return self.partial / "scene.zarr"

    @property
    def records(self) -> Path:
        return self.partial / TILE_RECORDS


def start_partial(workspace: Workspace, *, keep: bool) -> None:
    """Keep a killed run's partial directory (``keep``), else start a clean one."""
    if not keep:
        if workspace.partial.exists():
            shutil.rmtree(workspace.partial)
        workspace.partial.mkdir(parents=True)


def publish(workspace: Workspace) -> Path:
    """Swap the finished scene into place; a previous result is replaced only now."""
    final, partial = workspace.final, workspace.partial
    if final.exists():
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        final.rename(old)
        partial.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        partial.rename(final)
    return final


def discard(workspace: Workspace) -> None:
    """Remove a failed scene's partial work (a finished result stays untouched)."""
    shutil.rmtree(workspace.partial, ignore_errors=True)


def prepare_out_dir(out: str | Path) -> Path:
    """Create the output directory (and its parents) and check results can be written there.

    Raises
    ------
    ConfigError
        When ``out`` is a file, or cannot be created or written (one line naming it).
    """
    path = Path(out)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".segpipe-write-check-"):
            pass
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot write results there "
                          f"({exc.strerror or type(exc).__name__})") from None
    return path.resolve()
