"""Scene formats: one :class:`~pipeline.formats.base.SceneFormat` per kind of input.

:data:`FORMATS` is the registry the rest of the pipeline consults (discovery, the scene
runner, label matching); a new input kind is one module implementing the protocol plus
one entry here.

Examples
--------
>>> from pathlib import Path
>>> identify(Path("scan.nii.gz")).name, identify(Path("scene.TIF")).name
('nifti', 'geotiff')
>>> identify(Path("notes.txt")) is None
True
"""

from __future__ import annotations

import functools
import importlib
from pathlib import Path
from typing import Any

from pipeline.formats.base import IngestedScene, Scene, SceneFormat, Truth

__all__ = ["FORMATS", "IngestedScene", "Scene", "SceneFormat", "Truth", "format_of",
           "identify"]

_WHERE = {  # in the order formats claim files (DICOM last: it claims files by content)
    "geotiff": ("pipeline.formats.geotiff", "GEOTIFF"),
    "nifti": ("pipeline.formats.nifti", "NIFTI"),
    "stac": ("pipeline.formats.stac", "STAC"),
    "dicom": ("pipeline.formats.dicom", "DICOM"),
}
_ENDINGS = {  # the name endings a format can claim (its ``suffixes``), known before its
    # import: a NIfTI run does not import the GeoTIFF reader (rasterio) to be told "no"
    "geotiff": (".tif", ".tiff"),
    "nifti": (".nii", ".nii.gz"),
    "stac": (".json",),
}  # DICOM: any name


@functools.cache
def _load(name: str) -> SceneFormat:
    """The format ``name``, its module imported on first use: a run of one GeoTIFF does
    not import the NIfTI and DICOM readers (nibabel, pydicom), and a process that only
    unpickles a small helper of one format (a tile worker's ground areas) imports no
    reader at all."""
    module, attribute = _WHERE[name]
    return getattr(importlib.import_module(module), attribute)


def _registry() -> dict[str, SceneFormat]:
    """Every format, each imported."""
    return {name: _load(name) for name in _WHERE}


def __getattr__(name: str) -> Any:
    """``FORMATS``: name -> format, in the order formats claim files (DICOM is last: it
    claims files by their content, whatever their names). Imports every format."""
    if name == "FORMATS":
        return _registry()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def format_of(scene: Scene) -> SceneFormat:
    """The format of a scene (by its ``kind``)."""
    return _load(scene.kind)


def identify(path: Path) -> SceneFormat | None:
    """The first registered format that claims the file ``path``, or None. Formats
    after the one that claims it, and formats whose name endings it lacks, are not
    imported."""
    name = path.name.lower()
    maybe = (n for n in _WHERE if n not in _ENDINGS or name.endswith(_ENDINGS[n]))
    return next((f for f in map(_load, maybe) if f.identify(path)), None)
