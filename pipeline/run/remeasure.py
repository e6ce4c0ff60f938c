"""New metrics for a finished scene, without inference: labels that arrived or changed.

The segmentation does not depend on the label file, so the run fingerprint leaves it
out (:mod:`pipeline.run.resume`). When a finished scene's report was made without
labels, or with a label file of other content, :func:`reopen_finished` prepares its
partial directory as a copy of the finished scene (hard links where the file system
has them: no pixel is copied, and every write of the later stages replaces a file
rather than changing it in place), reopens the stored scene (ingest without copying)
and fills the :class:`~pipeline.run.stages.SceneState` from the finished report. The
metrics and report stages then run as usual, and :func:`~pipeline.run.workspace.publish`
swaps the new result in: the old one stays complete until then.

Arrays derived from the old label file (``scene.zarr/truth_*``) and the old reports
are not carried over.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from pipeline.blockmap import BlockMap
from pipeline.bundle import ModelBundle
from pipeline.options import RunOptions
from pipeline.report.model import SceneReport
from pipeline.run.stages import SceneState, check_labels
from pipeline.run.workspace import REPORT, Workspace, start_partial
from pipeline.storage import objects
from pipeline.storage.location import S3Uri
from pipeline.store import SEMANTIC, open_store

_LEFT_BEHIND = (REPORT, "report.html")  # rewritten by the report stage
_STORE = "scene.zarr"
_OLD_TRUTH = "truth_"  # arrays of the old label file, at the store's top level


def has_segmentation(workspace: Workspace) -> bool:
    """Whether the finished scene still holds its stored labels (``scene.zarr``)."""
    try:
        return SEMANTIC in open_store(workspace.final / _STORE, mode="r")
    except Exception:  # noqa: BLE001 - missing or unreadable: the scene is computed again
        return False


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # no hard links here (another device, some network file systems)
        shutil.copy2(src, dst)


def _ignored(store: Path):
    def ignore(directory: str, names: list[str]) -> set[str]:
        here = Path(directory)
        if here == store:
            return {n for n in names if n.startswith(_OLD_TRUTH)}
        if here == store.parent:
            return set(_LEFT_BEHIND)
        return set()
    return ignore


def copy_finished(workspace: Workspace) -> None:
    """The partial directory as a copy of the finished scene (see the module docstring)."""
    final, partial = workspace.final, workspace.partial
    start_partial(workspace, keep=False)  # a stale partial directory is replaced
    if isinstance(final, S3Uri):
        skip = (*_LEFT_BEHIND, f"{_STORE}/{_OLD_TRUTH}")
        pairs = []
        for obj in objects.list_objects(final):
            rel = obj.uri.relative_to(final).as_posix()
            if not rel.startswith(skip):
                pairs.append((obj.uri, partial / rel))
        objects.copy_objects(pairs)
        return
    shutil.copytree(final, partial, copy_function=_link_or_copy,
                    ignore=_ignored(Path(final) / _STORE), dirs_exist_ok=True)


def reopen_finished(workspace: Workspace, bundle: ModelBundle, options: RunOptions,
                    previous: SceneReport, *, fingerprint: str, labels_digest: str | None,
                    blocks: BlockMap) -> SceneState:
    """A :class:`SceneState` ready for the metrics and report stages of a finished scene.

    Parameters
    ----------
    previous : SceneReport
        The finished scene's report (same fingerprint): plan figures, summary, seams
        and outputs are taken from it.
    labels_digest : str or None
        Digest of the label file now given (:func:`pipeline.run.resume.labels_digest`).
    """
    copy_finished(workspace)
    state = SceneState(workspace, bundle, options, fingerprint=fingerprint, resumed=True,
                       labels_digest=labels_digest, previous=previous, blocks=blocks)
    fmt = state.format
    info = fmt.open(workspace.scene.path)
    state.ingested = fmt.ingest(info, workspace.store, bundle=bundle, options=options,
                                attrs={}, copy=False, blocks=blocks)
    state.summary = previous.summary
    state.seams = previous.seams.model_copy(update={"metrics": None})
    check_labels(state)
    return state
