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

from pathlib import Path

from pipeline.formats.base import IngestedScene, Scene, SceneFormat, Truth
from pipeline.formats.dicom import DICOM
from pipeline.formats.geotiff import GEOTIFF
from pipeline.formats.nifti import NIFTI
from pipeline.formats.stac import STAC

FORMATS: dict[str, SceneFormat] = {f.name: f for f in (GEOTIFF, NIFTI, STAC, DICOM)}
"""DICOM is last: it claims files by their content, whatever their names."""

__all__ = ["FORMATS", "IngestedScene", "Scene", "SceneFormat", "Truth", "format_of",
           "identify"]


def format_of(scene: Scene) -> SceneFormat:
    """The format of a scene (by its ``kind``)."""
    return FORMATS[scene.kind]


def identify(path: Path) -> SceneFormat | None:
    """The first registered format that claims the file ``path``, or None."""
    return next((f for f in FORMATS.values() if f.identify(path)), None)
