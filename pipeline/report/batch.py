"""The batch summary: ``DIR/batch.json`` and ``DIR/batch.csv``, one :class:`BatchRow` per scene.

Examples
--------
>>> row = BatchRow.failed("a", "a.tif", reason="a.tif: empty file", kind="geotiff")
>>> row.status, row.ok, row.model_dump(mode="json")["status"]
(<Status.FAILED: 'failed'>, False, 'failed')
>>> row.complete
False
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from pipeline.atomic import write_json_atomic, write_text_atomic
from pipeline.report.model import SceneReport, Status

LABELS_UNUSABLE = "labels unusable"  # the reason's start for a scene published without metrics


class BatchRow(BaseModel):
    """How one scene ended, with its headline figures (one row of ``batch.csv``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    scene_id: str
    input: str
    status: Status
    reason: str = ""
    seconds: float = 0.0
    tiles: int = 0
    miou: float | None = None
    dice: float | None = None
    pq: float | None = None
    report: str = ""
    kind: str = ""
    # per-class headline figures, e.g. {"volume_ml.organ": 812.5, "dice.organ": 0.93,
    # "hd95_mm.lesion": 2.1}; batch.csv gets one column per key
    figures: dict[str, float | int | None] = Field(default_factory=dict)
    # True when a finished result with the same run fingerprint was reused (resume);
    # last, so batch.csv keeps its column order (it is the last fixed column)
    reused: bool = False

    @property
    def ok(self) -> bool:
        """The scene's segmentation was published (its labels may still be unusable)."""
        return self.status is Status.OK

    @property
    def labels_unusable(self) -> bool:
        """Published, but its label file was unusable (``reason`` says why)."""
        return self.ok and bool(self.reason)

    @property
    def complete(self) -> bool:
        """Published, with metrics wherever a label file was given (exit code 0)."""
        return self.ok and not self.reason

    @classmethod
    def from_report(cls, report: SceneReport, report_path: Path, *,
                    reused: bool = False) -> BatchRow:
        metrics, error = report.scores, report.metrics_error
        return cls(
            scene_id=report.scene_id, input=report.input, status=Status.OK,
            reason=f"{LABELS_UNUSABLE}: {error}" if error else "",
            seconds=report.timings_s.total, tiles=report.tiles.total,
            miou=metrics.semantic.miou if metrics else None,
            dice=metrics.semantic.dice if metrics else None,
            pq=metrics.panoptic.pq if metrics else None, report=str(report_path),
            kind=report.kind, figures=headline_figures(report), reused=reused,
        )

    @classmethod
    def failed(cls, scene_id: str, input: str, *, reason: str, kind: str) -> BatchRow:
        return cls(scene_id=scene_id, input=input, status=Status.FAILED, reason=reason,
                   kind=kind)


def headline_figures(report: SceneReport) -> dict[str, float | int | None]:
    """Flat per-class figures of a report: sizes, Dice, HD95 and instance counts."""
    out: dict[str, float | int | None] = {}
    for name, c in report.summary.classes.items():
        if c.size is not None:
            out[f"{c.unit.value}.{name}"] = round(c.size, 4)
    for name, n in report.summary.instances.items():
        out[f"instances.{name}"] = n
    metrics = report.scores
    if metrics is not None:
        for name, scores in metrics.semantic.per_class.items():
            out[f"dice.{name}"] = scores.dice
        for name, surface in (metrics.surface or {}).items():
            out[f"hd95_mm.{name}"] = surface.hd95_mm
    return out


def write_batch(out_dir: Path, rows: list[BatchRow], *, model: str) -> dict:
    """Write ``batch.json`` and ``batch.csv`` atomically; returns the JSON document."""
    dumped = [r.model_dump(mode="json") for r in rows]
    doc = {
        "model": model,
        "scenes": dumped,
        "ok": sum(r.ok for r in rows),
        "failed": sum(not r.ok for r in rows),
    }
    write_json_atomic(out_dir / "batch.json", doc)
    buffer = io.StringIO()
    fields = [f for f in BatchRow.model_fields if f != "figures"]
    extra: dict[str, None] = {}
    for row in dumped:
        extra.update(dict.fromkeys(row["figures"]))
    writer = csv.DictWriter(buffer, fieldnames=fields + list(extra), restval="")
    writer.writeheader()
    writer.writerows({**{k: v for k, v in row.items() if k != "figures"}, **row["figures"]}
                     for row in dumped)
    write_text_atomic(out_dir / "batch.csv", buffer.getvalue())
    return doc
