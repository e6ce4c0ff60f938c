"""Typed scene reports: the content of ``report.json`` and of a batch row.

The runner produces a :class:`SceneReport`; the command line, ``batch.json`` /
``batch.csv`` and the orchestrator's artifacts read it back with
:meth:`SceneReport.read` instead of re-parsing the JSON by hand. The JSON layout is
the one documented in ``docs/outputs.md``: the keys below in this order, then the
fields with which the scene's format places it in the world (``crs`` and
``transform`` for GeoTIFF scenes; ``affine``, ``spacing_mm``, ... for volumes), kept
as extra fields of the model.

Examples
--------
>>> size = ClassSize(pixels=4, area_m2=400.0)
>>> size.model_dump()
{'pixels': 4, 'area_m2': 400.0}
>>> size.unit, size.size
(<SizeUnit.AREA_M2: 'area_m2'>, 400.0)
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, model_serializer

from pipeline.streaming.summary import SizeUnit

__all__ = [
    "ClassScores", "ClassSize", "MetricsError", "PanopticMetrics", "QualityScores",
    "SceneMetrics", "SceneReport", "SceneSummary", "SeamMetrics", "Seams", "SemanticMetrics", "SizeUnit",
    "Status", "SurfaceScores", "TileCounts", "Timings",
]


class Status(str, Enum):
    """How a scene of a batch ended (``skipped``: a file found while scanning that is
    no scene, e.g. junk or a non-image object in a DICOM tree; batch rows only)."""

    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Sparse(_Model):
    """A model whose ``None`` fields are left out of its JSON (optional keys)."""

    @model_serializer(mode="wrap")
    def _drop_none(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        return {k: v for k, v in data.items()
                if v is not None or k not in type(self).model_fields}


class TileCounts(_Model):
    """Tiles of the scene's grid and what happened to them; core size and halo in pixels.

    ``tile``: the largest core side (``core``: per axis); ``halo_mode``: what sized
    the halo (``exact``, ``effective``, ``given``, ``quarter-tile``);
    ``halo_agreement``: with ``effective``, the share of a check scene's pixels whose
    class equals whole-scene inference (None otherwise).
    """

    total: int
    computed: int
    reused: int
    retried: int
    skipped_empty: int
    tile: int
    halo: int
    core: list[int] | None = None
    halo_mode: str | None = None
    halo_agreement: float | None = None


class Timings(_Model):
    """Seconds per stage and in all."""

    read: float
    infer: float
    stitch: float
    panoptic: float
    metrics: float
    export: float
    total: float


class ClassSize(_Sparse):
    """Pixels (voxels) of one class and their physical size, in one unit."""

    pixels: int
    area_m2: float | None = None
    volume_ml: float | None = None

    @property
    def unit(self) -> SizeUnit:
        return SizeUnit.VOLUME_ML if self.volume_ml is not None else SizeUnit.AREA_M2

    @property
    def size(self) -> float | None:
        return self.volume_ml if self.volume_ml is not None else self.area_m2


class SceneSummary(_Model):
    """Class sizes, instances per thing class and nodata pixels of the scene."""

    classes: dict[str, ClassSize]
    instances: dict[str, int]
    nodata_pixels: int


class ClassScores(_Model):
    iou: float | None
    dice: float | None


class SemanticMetrics(_Model):
    """Mean IoU and Dice over the classes, and per class (None: class absent)."""

    miou: float | None
    dice: float | None
    per_class: dict[str, ClassScores]


class QualityScores(_Model):
    pq: float | None
    sq: float | None
    rq: float | None


class PanopticMetrics(QualityScores):
    """Panoptic quality (PQ = SQ x RQ) overall, per class, over things and over stuff."""

    per_class: dict[str, QualityScores]
    things: QualityScores
    stuff: QualityScores


class SurfaceScores(_Model):
    hd95_mm: float | None


class SceneMetrics(_Sparse):
    """Metrics against the scene's label file (``surface``: volumes only).

    ``labels_digest``: SHA-256 of the label file's content (a rerun with the same
    content reuses these metrics; other labels get new ones without re-inference).
    """

    semantic: SemanticMetrics
    panoptic: PanopticMetrics
    surface: dict[str, SurfaceScores] | None = None
    labels: str
    labels_digest: str | None = None

    @property
    def error(self) -> None:
        """No error: these are scores (see :class:`MetricsError`)."""
        return None


class MetricsError(_Sparse):
    """``metrics`` of a scene whose label file was unusable: the segmentation is kept.

    ``error`` is one line naming the label file (another grid, a truncated or corrupt
    file, ...); ``labels`` and ``labels_digest`` as in :class:`SceneMetrics`.

    Examples
    --------
    >>> MetricsError(error="t.tif: labels are 2x2 pixels ...", labels="t.tif").error
    't.tif: labels are 2x2 pixels ...'
    """

    error: str
    labels: str
    labels_digest: str | None = None


class SeamMetrics(_Model):
    """Semantic metrics inside tile cores and within the halo width of a seam."""

    inside_tiles: SemanticMetrics
    near_seams: SemanticMetrics
    near_seams_pixels: int


class Seams(_Sparse):
    """Cross-tile stitching figures (instance models) and seam metrics (with labels)."""

    instances_merged_across_tiles: int | None = None
    merges: int | None = None
    instances_cut_at_halo: int | None = None
    tile_pieces: int | None = None
    metrics: SeamMetrics | None = None


class SceneReport(BaseModel):
    """``report.json`` of one scene; format-specific grid fields are extra fields."""

    model_config = ConfigDict(frozen=True, extra="allow")

    scene_id: str
    input: str
    kind: str
    shape: list[int]
    model: str
    tiles: TileCounts
    fingerprint: str
    timings_s: Timings
    summary: SceneSummary
    metrics: SceneMetrics | MetricsError | None
    seams: Seams
    outputs: dict[str, str | dict[str, str]]  # file names; ``quicklooks``: caption -> file

    @property
    def scores(self) -> SceneMetrics | None:
        """The metrics against the label file; None without labels or when unusable."""
        return self.metrics if isinstance(self.metrics, SceneMetrics) else None

    @property
    def metrics_error(self) -> str | None:
        """Why the label file was unusable (one line), or None."""
        return self.metrics.error if self.metrics is not None else None

    @property
    def grid(self) -> dict[str, Any]:
        """The format's grid fields (``crs``, ``transform``, ``affine``, ...)."""
        return dict(self.model_extra or {})

    def to_json(self) -> dict[str, Any]:
        """The JSON document (plain dicts, lists and numbers)."""
        return self.model_dump(mode="json")

    @classmethod
    def read(cls, path: Path) -> SceneReport:
        """Load ``report.json``; ``ValueError`` (pydantic's ValidationError) when malformed."""
        return cls.model_validate(json.loads(Path(path).read_text()))
