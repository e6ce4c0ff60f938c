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
from pathlib import Path
from typing import Any

from pipeline.formats.base import IngestedScene, Scene, SceneFormat, Truth

__all__ = ["FORMATS", "IngestedScene", "Scene", "SceneFormat", "Truth", "format_of",
           "identify"]


@functools.cache
def _registry() -> dict[str, SceneFormat]:
    """The formats, imported on first use: a process that only unpickles one of their
    small helpers (a tile worker's ground areas) does not import every reader."""
    from pipeline.formats.dicom import DICOM
    from pipeline.formats.geotiff import GEOTIFF
    from pipeline.formats.nifti import NIFTI
    from pipeline.formats.stac import STAC

    return {f.name: f for f in (GEOTIFF, NIFTI, STAC, DICOM)}  # DICOM last: claims by content


def __getattr__(name: str) -> Any:
    """``FORMATS``: name -> format, in the order formats claim files (DICOM is last: it
    claims files by their content, whatever their names)."""
    if name == "FORMATS":
        return _registry()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def format_of(scene: Scene) -> SceneFormat:
    """The format of a scene (by its ``kind``)."""
    return _registry()[scene.kind]


def identify(path: Path) -> SceneFormat | None:
    """The first registered format that claims the file ``path``, or None."""
    return next((f for f in _registry().values() if f.identify(path)), None)
