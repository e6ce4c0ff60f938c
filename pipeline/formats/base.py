"""The ``SceneFormat`` protocol: everything that differs between kinds of input.

A scene format knows how to find its scenes, validate and ingest one into the scene
store in the canonical layout, describe where the scene sits in the world (the
report's grid fields), read a label file for metrics, total the classes in physical
units, write the exports on the input's own grid and draw quicklooks. The scene
runner (:mod:`pipeline.run`) only ever talks to this protocol, so a new input kind
is one module implementing it plus one line in :data:`pipeline.formats.FORMATS`.

Shared vocabulary:

* :class:`Scene`: one input to segment (path, scene id, format name).
* An *ingested scene* (:class:`IngestedScene`): what ingest learned, small and
  frozen; the format's own description of its input travels inside it.
* :class:`Truth`: a label file opened for metrics, as sliceable arrays on the
  stored grid.
* :class:`SkippedFile`: a file a format looked at while scanning a directory and left
  out, with its reason (the batch lists them; optional ``survey`` method).
* An *input identity* (:meth:`SceneFormat.input_identity`): what identifies the content
  of every file a scene is read from; the run fingerprint hashes it, so a scene whose
  files changed is computed again (:mod:`pipeline.run.resume`).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import zarr

from pipeline.blockmap import BlockMap, serial
from pipeline.bundle import ModelBundle
from pipeline.options import RunOptions
from pipeline.storage import objects
from pipeline.storage.location import Location, S3Uri, parse_location
from pipeline.streaming.summary import BlockSizes, ClassTotals, SizeUnit

_UNSAFE = re.compile(r"[^A-Za-z0-9._+=-]+")
RESERVED_NAMES = frozenset({"batch.json", "batch.csv", "catalog.json"})
"""Files a run writes directly in ``--out`` beside the scene directories (lower case)."""
MAX_ID_LENGTH = 200
"""Longest scene id: ``.<id>.partial`` and ``.<id>.lock`` must fit a 255-byte file name."""


@dataclass(frozen=True)
class Scene:
    """One input to segment: its path, its scene id and the name of its format."""

    path: Path
    scene_id: str
    kind: str


@dataclass(frozen=True)
class SkippedFile:
    """A file found while scanning a directory that is no scene of ``kind``, and why.

    ``path`` is the file as found: the scanned directory as given joined with the
    file's path below it (no header value ever goes into it).
    """

    path: str
    reason: str
    kind: str


def file_identity(path: str | os.PathLike[str] | Location) -> list:
    """What identifies one file's content: ``[path, size, mtime_ns]`` for a local file
    (path resolved), ``[uri, size, mtime_ns, etag]`` for an ``s3://`` object."""
    where = parse_location(path)
    if isinstance(where, S3Uri):
        info = objects.stat(where)
        return [str(where), info.size, info.mtime_ns, info.etag]
    st = where.stat()
    return [str(where.resolve()), st.st_size, st.st_mtime_ns]


def safe_id(text: str) -> str:
    """Make a scene id safe as a directory name directly under ``--out``.

    The one place scene ids are sanitised: path separators become ``__`` and other
    characters outside ``A-Za-z0-9._+=-`` become ``_``; an id that would be hidden
    (leading ``.``, including ``..``), that names a file the batch writes there
    (:data:`RESERVED_NAMES`, any case) or that is empty gets a leading ``_``; ids longer
    than :data:`MAX_ID_LENGTH` are cut and end with a digest of the whole id, so they
    stay distinct. ``safe_id(safe_id(x)) == safe_id(x)``.

    Examples
    --------
    >>> safe_id("sub-01/anat/T1w")
    'sub-01__anat__T1w'
    >>> safe_id("../x y"), safe_id(".snapshot"), safe_id("batch.json")
    ('_..__x_y', '_.snapshot', '_batch.json')
    """
    parts = [_UNSAFE.sub("_", p) for p in text.replace("\\", "/").split("/") if p]
    joined = "__".join(parts) or "scene"
    if joined.startswith(".") or joined.lower() in RESERVED_NAMES:
        joined = "_" + joined
    if len(joined) > MAX_ID_LENGTH:
        digest = hashlib.sha256(joined.encode()).hexdigest()[:12]
        joined = f"{joined[:MAX_ID_LENGTH - 13]}-{digest}"
    return joined


def strip_suffix(name: str, suffixes: Sequence[str]) -> str:
    """``name`` without the longest of ``suffixes`` it ends with (case-insensitive).

    Examples
    --------
    >>> strip_suffix("T1w.nii.gz", (".nii", ".nii.gz")), strip_suffix("a.v2.TIF", (".tif",))
    ('T1w', 'a.v2')
    """
    lower = name.lower()
    for suffix in sorted(suffixes, key=len, reverse=True):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def scene_id_for(path: Path, root: Path | None, suffixes: Sequence[str]) -> str:
    """Scene id of ``path``: its name without ``suffixes``, with the folders below the
    scanned ``root`` (``/`` becomes ``__``) when given.

    Examples
    --------
    >>> scene_id_for(Path("/a/sub-01/anat/T1w.nii.gz"), Path("/a"), (".nii.gz",))
    'sub-01__anat__T1w'
    """
    if root is not None:
        rel = path.relative_to(root)
        return safe_id("/".join([*rel.parts[:-1], strip_suffix(rel.name, suffixes)]))
    return safe_id(strip_suffix(path.name, suffixes))


@runtime_checkable
class IngestedScene(Protocol):
    """What ingest learned about a scene: small, frozen, no pixels.

    ``shape`` is the stored (canonical) grid of ``scene.zarr``; inference runs on
    ``model_shape``, in the subgroup ``model_group`` when the model needs another grid
    (the labels are then resampled back to ``shape`` by nearest neighbour).
    """

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def model_shape(self) -> tuple[int, ...]: ...

    @property
    def model_group(self) -> str | None: ...

    @property
    def seconds(self) -> float: ...


@dataclass(frozen=True)
class Truth:
    """A label file opened for metrics: class ids and instance ids on the stored grid.

    ``semantic`` and ``instance`` are sliceable with a tuple of slices (zarr arrays or
    window readers); ``ignore`` is the class id of unlabelled pixels; ``source`` names
    the file in error messages.
    """

    semantic: Any
    instance: Any
    ignore: int
    source: str


@runtime_checkable
class SceneFormat(Protocol):
    """One kind of input (GeoTIFF, NIfTI, ...); see the module docstring."""

    name: str  # "geotiff": report.json ``kind`` and Scene.kind
    noun: str  # "a GeoTIFF scene": messages
    description: str  # "a GeoTIFF (.tif, .tiff)": lists of what is accepted
    suffixes: tuple[str, ...]  # lower-case file name endings it claims
    ndim: int  # spatial dimensions of the models it feeds

    def identify(self, path: Path) -> bool:
        """Whether ``path`` (a file) is an input of this format."""
        ...

    def discover(self, root: Path) -> list[Scene]:
        """Every scene of this format under the directory ``root``."""
        ...

    def scene(self, path: Path, root: Path | None = None) -> Scene:
        """The scene of one file, named relative to ``root`` when it was found there."""
        ...

    def open(self, path: Path) -> Any:
        """Validate ``path`` without reading its pixels (InputError, one line)."""
        ...

    def input_identity(self, scene: Scene) -> list:
        """What identifies the content of every file ``scene`` is read from, JSON-able
        and small (the run fingerprint's ``input`` part): :func:`file_identity` of
        ``scene.path`` for a single-file scene; a scene read from several files covers
        them all (a DICOM series: every instance; a STAC Item: its band files)."""
        ...

    def ingest(self, info: Any, store: Path, *, bundle: ModelBundle, options: RunOptions,
               attrs: dict[str, Any], copy: bool, blocks: BlockMap = serial) -> IngestedScene:
        """Copy the selected bands/channels into ``store`` in canonical layout.

        ``copy=False``: a killed run already ingested ``store``; only describe it.
        ``blocks`` runs the block passes (here and in the methods below): Ray tasks
        in a run, a loop in tests (:mod:`pipeline.blockmap`). Block functions must be
        module-level and their arguments must pickle.
        """
        ...

    def grid_fields(self, ingested: Any, options: RunOptions) -> dict[str, Any]:
        """The report's fields that place the scene in the world (``shape`` first)."""
        ...

    def check_labels(self, path: Path, ingested: Any) -> None:
        """Validate a label file's header against the scene's grid, reading no pixels
        (InputError, one line naming the file); runs before inference."""
        ...

    def open_labels(self, path: Path, ingested: Any,
                    group: zarr.Group) -> AbstractContextManager[Truth]:
        """Validate a label file against the scene's grid and open it for reading."""
        ...

    def extra_metrics(self, group: zarr.Group, truth: Truth, ingested: Any, *,
                      classes: list[tuple[int, str]],
                      blocks: BlockMap = serial) -> dict[str, Any]:
        """Format-specific metrics beside the semantic and panoptic ones (may be empty)."""
        ...

    def summarise(self, semantic: zarr.Array, ingested: Any, num_classes: int,
                  blocks: BlockMap = serial) -> ClassTotals:
        """Pixels per class and their physical size (``area_m2`` or ``volume_ml``)."""
        ...

    def sizes(self, ingested: Any) -> tuple[SizeUnit, BlockSizes]:
        """The unit of class sizes and the per-block pixel size on the stored grid
        (a picklable ``key -> sizes``), as :meth:`summarise` weighs pixels."""
        ...

    def export(self, group: zarr.Group, names: list[str], ingested: Any, out_dir: Path,
               nodata: dict[str, int], blocks: BlockMap = serial) -> dict[str, str]:
        """Write each label array on the input's own grid; name -> file name."""
        ...

    def quicklooks(self, group: zarr.Group, semantic: zarr.Array, ingested: Any, *,
                   colors: list[tuple[int, int, int]], out_dir: Path,
                   options: RunOptions, blocks: BlockMap = serial) -> dict[str, str]:
        """Preview images for ``report.html``; caption -> file name."""
        ...


class SuffixFormat:
    """Discovery by file name ending, shared by single-file formats."""

    name: str
    suffixes: tuple[str, ...]

    def identify(self, path: Path) -> bool:
        return path.name.lower().endswith(self.suffixes)

    def input_identity(self, scene: Scene) -> list:
        """The scene's one file (:func:`file_identity`)."""
        return file_identity(scene.path)

    def scene(self, path: Path, root: Path | None = None) -> Scene:
        return Scene(path, scene_id_for(path, root, self.suffixes), self.name)

    def discover(self, root: Path) -> list[Scene]:
        return [self.scene(p, root) for p in visible_files(root) if self.identify(p)]


def visible_files(root: Path) -> Iterator[Path]:
    """Visible files under ``root``, in sorted order.

    Hidden files and directories (name starting with ``.``, e.g. a NAS ``.snapshot/``
    tree) are skipped and never descended into; symbolic links to directories are
    not followed (as ``Path.rglob``).
    """
    found = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found.extend(Path(folder, n) for n in names if not n.startswith("."))
    yield from (p for p in sorted(found) if p.is_file())
