"""Finding scenes on disk and naming them.

A scene id is the input file name without its extensions, made safe; for files
found by scanning a directory it is the path relative to that directory, with
``/`` replaced by ``__`` (``sub-01/anat/T1w.nii.gz`` -> ``sub-01__anat__T1w``),
so equal file names in different folders never collide (CONTRACT.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from segcore.errors import ConfigError

GEOTIFF_SUFFIXES = (".tif", ".tiff")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
_UNSAFE = re.compile(r"[^A-Za-z0-9._+=-]+")


class SceneKind(str, Enum):
    GEOTIFF = "geotiff"
    NIFTI = "nifti"


@dataclass(frozen=True)
class Scene:
    """One input to segment."""

    path: Path
    scene_id: str
    kind: SceneKind


def kind_of(path: Path) -> SceneKind | None:
    """The scene kind a file name announces, or None."""
    name = path.name.lower()
    if name.endswith(GEOTIFF_SUFFIXES):
        return SceneKind.GEOTIFF
    if name.endswith(NIFTI_SUFFIXES):
        return SceneKind.NIFTI
    return None


def strip_extensions(name: str) -> str:
    """``'a.nii.gz'`` -> ``'a'``; ``'b.tif'`` -> ``'b'``; ``'c.d.tif'`` -> ``'c.d'``.

    Examples
    --------
    >>> strip_extensions("T1w.nii.gz"), strip_extensions("scene.v2.TIF")
    ('T1w', 'scene.v2')
    """
    lower = name.lower()
    for suffix in (".nii.gz", ".tiff", ".tif", ".nii"):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def safe_id(text: str) -> str:
    """Make a scene id safe for a directory name (no separators, no ``..``).

    Examples
    --------
    >>> safe_id("sub-01/anat/T1w")
    'sub-01__anat__T1w'
    >>> safe_id("../x y")
    '_.._x_y'
    """
    parts = [_UNSAFE.sub("_", p) for p in text.replace("\\", "/").split("/") if p]
    joined = "__".join(parts) or "scene"
    if joined in {".", ".."} or joined.startswith(".."):
        joined = "_" + joined
    return joined


def scene_id_for(path: Path, root: Path | None = None) -> str:
    """Scene id of ``path``, relative to the scanned ``root`` when given."""
    if root is not None:
        rel = path.relative_to(root)
        return safe_id("/".join([*rel.parts[:-1], strip_extensions(rel.name)]))
    return safe_id(strip_extensions(path.name))


def discover(inputs: list[str | Path]) -> list[Scene]:
    """Expand files and directories into scenes, in a stable order.

    Raises
    ------
    ConfigError
        When an input does not exist, a file has an unsupported extension, nothing
        is found, or two inputs would get the same scene id.
    """
    scenes: list[Scene] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = [
                p for p in sorted(path.rglob("*"))
                if p.is_file() and kind_of(p) is not None and not p.name.startswith(".")
            ]
            scenes += [Scene(p, scene_id_for(p, path), kind_of(p)) for p in found]  # type: ignore[arg-type]
        elif path.exists():
            kind = kind_of(path)
            if kind is None:
                raise ConfigError(
                    f"{path}: unsupported input; expected a GeoTIFF (.tif, .tiff), "
                    "a NIfTI file (.nii, .nii.gz) or a directory of them"
                )
            scenes.append(Scene(path, scene_id_for(path), kind))
        else:
            raise ConfigError(f"{path}: no such file or directory")
    if not scenes:
        raise ConfigError(
            "no input found: " + ", ".join(str(i) for i in inputs)
            + " holds no .tif/.tiff/.nii/.nii.gz file"
        )
    seen: dict[str, Path] = {}
    for scene in scenes:
        if scene.scene_id in seen:
            raise ConfigError(
                f"{scene.path}: scene id '{scene.scene_id}' is also the id of "
                f"{seen[scene.scene_id]}; rename one or pass their common parent directory"
            )
        seen[scene.scene_id] = scene.path
    return scenes


def match_labels(scenes: list[Scene], labels: str | Path | None) -> dict[str, Path]:
    """Pair scenes with ground-truth files (CONTRACT.md ``--labels``).

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
    by_id: dict[str, Path] = {}
    for p in sorted(path.rglob("*")):
        if p.is_file() and kind_of(p) is not None:
            sid = scene_id_for(p, path)
            for suffix in ("_labels", "-labels", ".labels"):
                if sid.endswith(suffix):
                    sid = sid[: -len(suffix)]
            by_id.setdefault(sid, p)
    return {s.scene_id: by_id[s.scene_id] for s in scenes if s.scene_id in by_id}
