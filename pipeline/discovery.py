"""Finding scenes on disk and pairing them with label files.

Every registered format (:data:`pipeline.formats.FORMATS`) finds its own scenes. A
scene id is the input file name without its extensions, made safe; for files found
by scanning a directory it is the path relative to that directory, with ``/``
replaced by ``__`` (``sub-01/anat/T1w.nii.gz`` -> ``sub-01__anat__T1w``), so equal
file names in different folders never collide.

Inputs and label files may also be ``s3://bucket/key`` objects; an ``s3://`` prefix
(``s3://bucket/dir/``) is scanned like a directory, its keys taking the place of
relative paths.

Hidden files and directories (a name, or any folder of a key below the scanned
prefix, starting with ``.``) are skipped when scanning, so a NAS ``.snapshot/`` tree
is not processed a second time; a hidden file named explicitly as an INPUT is still
accepted. Files that a format's scan looked at and left out (junk and non-image objects
in a DICOM tree) come back with their reasons (:func:`find`, :class:`Found`) for the
batch's ``skipped`` rows. Scene ids are made safe in one place, :func:`safe_id`: they never leave
``--out``, are never hidden and never collide with the files a batch writes there
(``batch.json``, ``batch.csv``, ``catalog.json``): ``batch.json.tif`` gets the id
``_batch.json``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import formats
from pipeline.formats import Scene, identify
from pipeline.formats.base import SkippedFile, safe_id, scene_id_for, visible_files
from pipeline.storage import StorageError, objects
from pipeline.storage.location import Location, S3Uri, parse_location
from segcore.errors import ConfigError

__all__ = ["Found", "Scene", "discover", "find", "match_labels", "safe_id", "scan"]


@dataclass(frozen=True)
class Found:
    """What the INPUTs hold: the scenes, and the files scans left out with their reasons."""

    scenes: list[Scene]
    skipped: list[SkippedFile] = field(default_factory=list)


def _accepted() -> str:
    """``"a GeoTIFF (.tif, .tiff), a NIfTI file (.nii, .nii.gz)"``: what inputs may be."""
    return ", ".join(f.description for f in formats.FORMATS.values())


def _suffixes() -> str:
    return "/".join(s for f in formats.FORMATS.values() for s in f.suffixes)


def _remote_files(prefix: S3Uri) -> list[S3Uri]:
    """Visible objects below ``prefix`` (no part of the key below it hidden), in key order."""
    return [o.uri for o in objects.list_objects(prefix)
            if not any(part.startswith(".")
                       for part in o.uri.key[len(prefix.prefix):].split("/"))]


def scan(directory: Location) -> list[Scene]:
    """Every scene of every format under ``directory``, in path order (none is fine)."""
    return _scan(directory).scenes


def _scan(directory: Location) -> Found:
    skipped: list[SkippedFile] = []
    if isinstance(directory, S3Uri):
        found = [s for uri in _remote_files(directory)
                 if (fmt := identify(uri)) is not None for s in _file_scenes(fmt, uri, directory)]
    else:
        found = []
        for fmt in formats.FORMATS.values():  # ``survey``: scenes and left-out files in one scan
            survey = getattr(fmt, "survey", None)
            scenes, files = survey(directory) if survey is not None else \
                (fmt.discover(directory), [])
            found.extend(scenes)
            skipped.extend(files)
    unique = {(str(s.path), s.scene_id): s for s in found}  # a catalog and its Item files
    # files another scene reads (a STAC Item's band COGs) are not scenes of their own
    claimed = {p for f in formats.FORMATS.values() if hasattr(f, "claimed_files")
               for p in f.claimed_files(list(unique.values()))}
    kept = [s for s in unique.values() if str(s.path) not in claimed]
    left_out = [f for f in skipped if os.path.abspath(f.path) not in claimed]
    return Found(sorted(kept, key=lambda s: s.path), left_out)


def _remote_kind(uri: S3Uri) -> str:
    """``"file"`` for an object, ``"dir"`` for a prefix with objects below it;
    StorageError naming the URI otherwise (missing bucket or key, no access)."""
    if uri.key and objects.exists(uri):
        return "file"
    if objects.is_prefix(uri):
        return "dir"
    if not uri.key:
        return "dir"  # an empty bucket: nothing found, said by discover()
    objects.stat(uri)  # raises the precise reason (missing bucket or key)
    raise StorageError(str(uri), "no such key or prefix")


def _scenes_of(item: str | os.PathLike[str] | Location) -> Found:
    path = parse_location(item)
    if isinstance(path, S3Uri):
        if _remote_kind(path) == "dir":
            return _scan(path)
        return Found(_scenes_of_file(path))
    if path.is_dir():
        return _scan(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such file or directory")
    return Found(_scenes_of_file(path))


def _file_scenes(fmt: Any, path: Location, root: Location | None = None) -> list[Scene]:
    """The scenes of one file: several for a format whose files hold several (a STAC
    catalog: its ``scenes``), else the one ``scene``."""
    several = getattr(fmt, "scenes", None)
    return several(path, root) if several is not None else [fmt.scene(path, root)]


def _scenes_of_file(path: Location) -> list[Scene]:
    fmt = identify(path)
    if fmt is None:
        raise ConfigError(f"{path}: unsupported input; expected {_accepted()} "
                          "or a directory of them")
    return _file_scenes(fmt, path)


def discover(inputs: list[str | Path]) -> list[Scene]:
    """Expand files and directories into scenes, in a stable order (:func:`find`)."""
    return find(inputs).scenes


def find(inputs: list[str | Path]) -> Found:
    """Expand files and directories into scenes, in a stable order, with the files the
    directory scans left out (a junk file or an RTSTRUCT in a DICOM tree) and why.

    Raises
    ------
    ConfigError
        When an input does not exist, a file has an unsupported extension, nothing
        is found, or two inputs would get the same scene id.
    """
    founds = [_scenes_of(item) for item in inputs]
    scenes = [s for f in founds for s in f.scenes]
    skipped = [s for f in founds for s in f.skipped]
    if not scenes:
        left = f"; {len(skipped)} file(s) left out, e.g. {skipped[0].path}: " \
            f"{skipped[0].reason}" if skipped else ""
        raise ConfigError("no input found: " + ", ".join(str(i) for i in inputs)
                          + f" holds no {_suffixes()} file or DICOM image series" + left)
    seen: dict[str, Location] = {}
    for scene in scenes:
        if scene.scene_id in seen:
            raise ConfigError(
                f"{scene.path}: scene id '{scene.scene_id}' is also the id of "
                f"{seen[scene.scene_id]}; rename one or pass their common parent directory"
            )
        seen[scene.scene_id] = scene.path
    return Found(scenes, skipped)


def _label_files(directory: Location) -> dict[str, Location]:
    """Label files under ``directory`` by scene id (``<id>``, ``<id>_labels``, ...)."""
    by_id: dict[str, Location] = {}
    files = _remote_files(directory) if isinstance(directory, S3Uri) else \
        list(visible_files(directory))
    for p in files:
        fmt = identify(p)
        if fmt is not None:
            sid = scene_id_for(p, directory, getattr(fmt, "label_suffixes", fmt.suffixes))
            for suffix in ("_labels", "-labels", ".labels"):
                if sid.endswith(suffix):
                    sid = sid[: -len(suffix)]
            by_id.setdefault(sid, p)
    return by_id


def match_labels(scenes: list[Scene], labels: str | Path | S3Uri | None
                 ) -> dict[str, Location]:
    """Pair scenes with ground-truth files (``--labels``).

    A file goes with the single scene; a directory is scanned and its files are
    matched by scene id (``<id>.tif``, ``<id>_labels.tif`` or ``<id>-labels.tif``); a
    DICOM series no file name matches takes the DICOM-SEG in the directory that
    references it (``ReferencedSeriesSequence``). Scenes without a match get no metrics.
    """
    if labels is None:
        return {}
    path = parse_location(labels)
    kind = _remote_kind(path) if isinstance(path, S3Uri) else \
        "file" if path.is_file() else "dir" if path.is_dir() else None
    if kind == "file":
        if len(scenes) != 1:
            raise ConfigError(
                f"--labels {path}: a single label file needs a single INPUT, got "
                f"{len(scenes)} scenes; pass a directory of label files named by scene id"
            )
        return {scenes[0].scene_id: path}
    if kind is None:
        raise ConfigError(f"--labels {path}: no such file or directory")
    by_id = _label_files(path)
    matched = {s.scene_id: by_id[s.scene_id] for s in scenes if s.scene_id in by_id}
    unmatched = [s for s in scenes if s.kind == "dicom" and s.scene_id not in matched]
    if unmatched and isinstance(path, Path):  # DICOM-SEGs go by the series they reference
        from pipeline.formats.dicom import seg_labels_by_series

        claimed = set(matched.values())
        segs = [p for p in visible_files(path) if p not in claimed]
        matched.update(seg_labels_by_series(unmatched, segs))
    return matched
