"""The data kinds of a training config (``data: {kind: ...}``), each loading itself.

- ``synthetic-satellite`` (:class:`SyntheticData`): seeded synthetic satellite scenes;
- ``synthetic-phantom`` (:class:`PhantomData`): seeded synthetic 3-D phantoms, physical units;
- ``synthetic-attributes`` (:class:`AttributeData`): colour x texture scenes, open vocabulary;
- ``geotiff`` (:class:`GeoTiffData`): GeoTIFF image + label pairs;
- ``nifti`` (:class:`NiftiData`): NIfTI image + label volumes, physical units;
- ``zarr`` (:class:`ZarrData`): Zarr groups with ``image`` and ``labels`` arrays.

Every kind implements :class:`DataKind` (``load``, ``class_table``,
``physical_units``, ``input_bands``, ``vocabulary``, ``heldout_figures``,
``training_record``).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from pipeline.training.data.attributes import AttributeData
from pipeline.training.data.base import DataKind
from pipeline.training.data.geotiff import GeoTiffData, ImagePair
from pipeline.training.data.nifti import NiftiData
from pipeline.training.data.phantom import PhantomData
from pipeline.training.data.satellite import SyntheticData
from pipeline.training.data.zarr_stores import ZarrData

DATA_KINDS = (SyntheticData, GeoTiffData, PhantomData, NiftiData, ZarrData, AttributeData)
"""Every data kind; the ``kind:`` tag chooses one."""

DataConfig = Annotated[
    SyntheticData | GeoTiffData | PhantomData | NiftiData | ZarrData | AttributeData,
    Field(discriminator="kind"),
]
"""The ``data:`` field of a training config."""

__all__ = ["DATA_KINDS", "AttributeData", "DataConfig", "DataKind", "GeoTiffData", "ImagePair",
           "NiftiData", "PhantomData", "SyntheticData", "ZarrData"]
