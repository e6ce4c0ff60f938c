"""The batch summary: ``DIR/batch.json`` and ``DIR/batch.csv``, one row per scene."""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipeline.atomic import write_json_atomic, write_text_atomic


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
    pq: float | None = None
    report: str = ""
    kind: str = ""
    # per-class headline figures, e.g. {"volume_ml.organ": 812.5, "dice.organ": 0.93,
    # "hd95_mm.lesion": 2.1}; batch.csv gets one column per key
    figures: dict = field(default_factory=dict)
    # True when a finished result with the same run fingerprint was reused (resume);
    # last, so batch.csv keeps its column order (it is the last fixed column)
    reused: bool = False

    @classmethod
    def from_report(cls, report: dict, report_path: Path, *, reused: bool = False) -> SceneOutcome:
        metrics = report.get("metrics") or {}
        sem = metrics.get("semantic") or {}
        return cls(
            scene_id=report["scene_id"], input=report["input"], status="ok",
            seconds=report["timings_s"]["total"], tiles=report["tiles"]["total"],
            miou=sem.get("miou"), dice=sem.get("dice"),
            pq=(metrics.get("panoptic") or {}).get("pq"), report=str(report_path),
            kind=report.get("kind", ""), figures=headline_figures(report), reused=reused,
        )


def headline_figures(report: dict) -> dict:
    """Flat per-class figures of a report: sizes, Dice, HD95 and instance counts."""
    out: dict = {}
    for name, c in (report.get("summary") or {}).get("classes", {}).items():
        for unit in ("volume_ml", "area_m2"):
            if unit in c:
                out[f"{unit}.{name}"] = round(c[unit], 4)
    for name, n in (report.get("summary") or {}).get("instances", {}).items():
        out[f"instances.{name}"] = n
    metrics = report.get("metrics") or {}
    for name, c in ((metrics.get("semantic") or {}).get("per_class") or {}).items():
        out[f"dice.{name}"] = c.get("dice")
    for name, c in (metrics.get("surface") or {}).items():
        out[f"hd95_mm.{name}"] = c.get("hd95_mm")
    return out


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
    fields = [f for f in SceneOutcome.__dataclass_fields__ if f != "figures"]
    extra: dict[str, None] = {}
    for row in rows:
        extra.update(dict.fromkeys(row["figures"]))
    writer = csv.DictWriter(buffer, fieldnames=fields + list(extra), restval="")
    writer.writeheader()
    writer.writerows({**{k: v for k, v in row.items() if k != "figures"}, **row["figures"]}
                     for row in rows)
    write_text_atomic(out_dir / "batch.csv", buffer.getvalue())
    return doc
