"""The batch summary: ``DIR/batch.json`` and ``DIR/batch.csv``, one :class:`BatchRow` per scene.

Files that a directory scan found but left out (junk and non-image objects in a DICOM
tree) are rows too, with status ``skipped`` (:func:`skipped_rows`): after the scenes in
``batch.csv``, under ``skipped`` in ``batch.json``. They never change the exit code.

Examples
--------
>>> row = BatchRow.failed("a", "a.tif", reason="a.tif: empty file", kind="geotiff")
>>> row.status, row.ok, row.model_dump(mode="json")["status"]
(<Status.FAILED: 'failed'>, False, 'failed')
>>> row.complete
False
>>> BatchRow.skipped_file("in/CT/notes.txt", reason="not a DICOM file", kind="dicom").status
<Status.SKIPPED: 'skipped'>
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pipeline.atomic import write_json_atomic, write_text_atomic
from pipeline.report.model import SceneReport, Status

LABELS_UNUSABLE = "labels unusable"  # the reason's start for a scene published without metrics
MAX_FILE_ROWS = 10
"""Most ``skipped`` rows for one folder and one kind of reason; more files are one row."""
_DETAIL = re.compile(r"\s*\([^()]*\)$")  # "unreadable DICOM header (KeyError: x)"


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

    @classmethod
    def skipped_file(cls, input: str, *, reason: str, kind: str) -> BatchRow:
        """A file found while scanning that is no scene (no scene id), and why."""
        return cls(scene_id="", input=input, status=Status.SKIPPED, reason=reason, kind=kind)


def skipped_rows(files: Iterable[Any]) -> list[BatchRow]:
    """``skipped`` rows for the files a scan left out, in scan order.

    Parameters
    ----------
    files : iterable
        Objects with ``path`` (the file as found), ``reason`` and ``kind`` (the format
        that left it out), e.g. :class:`pipeline.formats.base.SkippedFile`.

    Returns
    -------
    list of BatchRow
        One row per file; where one folder holds more than :data:`MAX_FILE_ROWS` files
        with the same reason (exception details aside), those are one row: ``input`` the
        folder, ``reason`` ``"<n> files: <reason>; e.g. <3 names>"``.

    Examples
    --------
    >>> from types import SimpleNamespace as F
    >>> junk = [F(path=f"a/t{i}.txt", reason="not a DICOM file", kind="dicom") for i in range(12)]
    >>> rows = skipped_rows([F(path="a/rt", reason="RTSTRUCT, not an image", kind="dicom"), *junk])
    >>> [(r.input, r.reason) for r in rows]  # doctest: +NORMALIZE_WHITESPACE
    [('a/rt', 'RTSTRUCT, not an image'),
     ('a', '12 files: not a DICOM file; e.g. t0.txt, t1.txt, t2.txt')]
    """
    groups: dict[tuple[str, str, str], list[Any]] = {}
    for f in files:
        key = (os.path.dirname(str(f.path)), str(f.kind), _DETAIL.sub("", str(f.reason)))
        groups.setdefault(key, []).append(f)
    rows = []
    for (folder, kind, reason), members in groups.items():
        if len(members) <= MAX_FILE_ROWS:
            rows.extend(BatchRow.skipped_file(str(m.path), reason=str(m.reason), kind=kind)
                        for m in members)
        else:
            names = ", ".join(os.path.basename(str(m.path)) for m in members[:3])
            rows.append(BatchRow.skipped_file(
                folder, reason=f"{len(members)} files: {reason}; e.g. {names}", kind=kind))
    return rows


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


def write_batch(out_dir: Path, rows: list[BatchRow], *, model: str,
                skipped: Sequence[BatchRow] = ()) -> dict:
    """Write ``batch.json`` and ``batch.csv`` atomically; returns the JSON document.

    ``rows`` are the scenes; ``skipped`` the files left out while scanning
    (:func:`skipped_rows`): ``batch.json``'s ``skipped`` list, and ``batch.csv`` rows
    after the scenes.
    """
    left_out = [r.model_dump(mode="json") for r in skipped]
    dumped = [r.model_dump(mode="json") for r in rows]
    doc = {
        "model": model,
        "scenes": dumped,
        "ok": sum(r.ok for r in rows),
        "failed": sum(not r.ok for r in rows),
        "skipped": left_out,
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
                     for row in [*dumped, *left_out])
    write_text_atomic(out_dir / "batch.csv", buffer.getvalue())
    return doc
