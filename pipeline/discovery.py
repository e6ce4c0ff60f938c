"""Finding scenes on disk and pairing them with label files.

Every registered format (:data:`pipeline.formats.FORMATS`) finds its own scenes. A
scene id is the input file name without its extensions, made safe; for files found
by scanning a directory it is the path relative to that directory, with ``/``
replaced by ``__`` (``sub-01/anat/T1w.nii.gz`` -> ``sub-01__anat__T1w``), so equal
file names in different folders never collide.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.formats import FORMATS, Scene, identify
from pipeline.formats.base import safe_id, scene_id_for
from segcore.errors import ConfigError

__all__ = ["Scene", "discover", "match_labels", "safe_id", "scan"]


def _accepted() -> str:
    """``"a GeoTIFF (.tif, .tiff), a NIfTI file (.nii, .nii.gz)"``: what inputs may be."""
    return ", ".join(f.description for f in FORMATS.values())


def _suffixes() -> str:
    return "/".join(s for f in FORMATS.values() for s in f.suffixes)


def scan(directory: Path) -> list[Scene]:
    """Every scene of every format under ``directory``, in path order (none is fine)."""
    found = [s for f in FORMATS.values() for s in f.discover(directory)]
    return sorted(found, key=lambda s: s.path)


def _scenes_of(path: Path) -> list[Scene]:
    if path.is_dir():
        return scan(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such file or directory")
    fmt = identify(path)
    if fmt is None:
        raise ConfigError(f"{path}: unsupported input; expected {_accepted()} "
                          "or a directory of them")
    return [fmt.scene(path)]


def discover(inputs: list[str | Path]) -> list[Scene]:
    """Expand files and directories into scenes, in a stable order.

    Raises
    ------
    ConfigError
        When an input does not exist, a file has an unsupported extension, nothing
        is found, or two inputs would get the same scene id.
    """
    scenes = [s for item in inputs for s in _scenes_of(Path(item))]
    if not scenes:
        raise ConfigError("no input found: " + ", ".join(str(i) for i in inputs)
                          + f" holds no {_suffixes()} file")
    seen: dict[str, Path] = {}
    for scene in scenes:
        if scene.scene_id in seen:
            raise ConfigError(
                f"{scene.path}: scene id '{scene.scene_id}' is also the id of "
                f"{seen[scene.scene_id]}; rename one or pass their common parent directory"
            )
        seen[scene.scene_id] = scene.path
    return scenes


def _label_files(directory: Path) -> dict[str, Path]:
    """Label files under ``directory`` by scene id (``<id>``, ``<id>_labels``, ...)."""
    by_id: dict[str, Path] = {}
    for p in sorted(directory.rglob("*")):
        fmt = identify(p) if p.is_file() else None
        if fmt is not None:
            sid = scene_id_for(p, directory, fmt.suffixes)
            for suffix in ("_labels", "-labels", ".labels"):
                if sid.endswith(suffix):
                    sid = sid[: -len(suffix)]
            by_id.setdefault(sid, p)
    return by_id


def match_labels(scenes: list[Scene], labels: str | Path | None) -> dict[str, Path]:
    """Pair scenes with ground-truth files (``--labels``).

    A file goes with the single scene; a directory is scanned and its files are
    matched by scene id (``<id>.tif``, ``<id>_labels.tif`` or ``<id>-labels.tif``).
    Scenes without a match get no metrics.
    """
    if labels is None:
        return {}
    path = Path(labels)
    if path.is_file():
        if len(scenes) != 1:
            raise ConfigError(
                f"--labels {path}: a single label file needs a single INPUT, got "
                f"{len(scenes)} scenes; pass a directory of label files named by scene id"
            )
        return {scenes[0].scene_id: path}
    if not path.is_dir():
        raise ConfigError(f"--labels {path}: no such file or directory")
    by_id = _label_files(path)
    return {s.scene_id: by_id[s.scene_id] for s in scenes if s.scene_id in by_id}
