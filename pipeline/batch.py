"""The batch summary: ``DIR/batch.json`` and ``DIR/batch.csv``, one row per scene."""

from __future__ import annotations

import csv
import io
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline.report.writer import write_json_atomic


@dataclass(frozen=True)
class SceneOutcome:
    """How one scene ended, with its headline figures."""

    scene_id: str
    input: str
    status: str  # "ok" | "failed"
    reason: str = ""
    seconds: float = 0.0
    tiles: int = 0
    miou: float | None = None
    dice: float | None = None
    report: str = ""

    @classmethod
    def from_report(cls, report: dict, report_path: Path) -> SceneOutcome:
        sem = (report.get("metrics") or {}).get("semantic") or {}
        return cls(
            scene_id=report["scene_id"], input=report["input"], status="ok",
            seconds=report["timings_s"]["total"], tiles=report["tiles"]["total"],
            miou=sem.get("miou"), dice=sem.get("dice"), report=str(report_path),
        )


def write_batch(out_dir: Path, outcomes: list[SceneOutcome], *, model: str) -> dict:
    """Write ``batch.json`` and ``batch.csv`` atomically; returns the JSON document."""
    rows = [asdict(o) for o in outcomes]
    doc = {
        "model": model,
        "scenes": rows,
        "ok": sum(o.status == "ok" for o in outcomes),
        "failed": sum(o.status != "ok" for o in outcomes),
    }
    write_json_atomic(out_dir / "batch.json", doc)
    buffer = io.StringIO()
    fields = list(SceneOutcome.__dataclass_fields__)
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    tmp = out_dir / ".batch.csv.tmp"
    tmp.write_text(buffer.getvalue())
    os.replace(tmp, out_dir / "batch.csv")
    return doc
