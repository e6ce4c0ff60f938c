"""Prefect artifacts of a batch: a table (one row per scene) and a markdown summary.

Artifact keys are Prefect keys: lowercase letters, digits and dashes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.exit_codes import ExitCode
from flows.segment_scene import BatchResult
from pipeline.report.batch import BatchRow

_KEY_UNSAFE = re.compile(r"[^a-z0-9-]+")


def artifact_key(*parts: str) -> str:
    """A valid Prefect artifact key from free text.

    Examples
    --------
    >>> artifact_key("segpipe", "Nightly_Scenes")
    'segpipe-nightly-scenes'
    """
    text = "-".join(parts).lower()
    return _KEY_UNSAFE.sub("-", text).strip("-") or "segpipe"


def scene_rows(outcomes: list[BatchRow]) -> list[dict]:
    """One table row per scene: id, status, reused/computed and headline figures."""
    rows = []
    for o in outcomes:
        classes = sorted(k.split(".", 1)[1] for k in o.figures
                         if k.startswith(("area_m2.", "volume_ml.")))
        rows.append({
            "scene_id": o.scene_id,
            "status": o.status.value,
            "run": "failed" if not o.ok else ("reused" if o.reused else "computed"),
            "miou": o.miou, "dice": o.dice, "pq": o.pq,
            "classes": ", ".join(classes),
            "tiles": o.tiles,
            "seconds": round(o.seconds, 2),
            "reason": o.reason,
            "report": str(Path(o.report).with_suffix(".html")) if o.report else "",
        })
    return rows


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def summary_markdown(title: str, outcomes: list[BatchRow], counts: dict,
                     out_dir: Path) -> str:
    """A markdown summary with file:// links to every scene's ``report.html``."""
    lines = [f"# {title}", "",
             f"Output: `{out_dir}`  ",
             f"Scenes: {counts['scenes']}: {counts['computed']} computed, "
             f"{counts['reused']} reused, {counts['failed']} failed", ""]
    if outcomes:
        lines += ["| scene | status | run | mIoU | PQ | report |", "| --- | --- | --- | --- | --- | --- |"]
    for row, o in zip(scene_rows(outcomes), outcomes):
        link = f"[report.html]({Path(row['report']).resolve().as_uri()})" if row["report"] else \
            row["reason"].replace("|", "\\|")
        lines.append(f"| {o.scene_id} | {o.status.value} | {row['run']} | {_fmt(o.miou)} | "
                     f"{_fmt(o.pq)} | {link} |")
    return "\n".join(lines) + "\n"


def publish_batch(prefix: str, title: str, outcomes: list[BatchRow], counts: dict,
                  out_dir: Path) -> dict[str, str]:
    """Create the table and markdown artifacts; returns their keys."""
    keys = {"table": artifact_key(prefix, "scenes"), "markdown": artifact_key(prefix, "summary")}
    create_table_artifact(scene_rows(outcomes), key=keys["table"],
                          description=f"{title}: one row per scene")
    create_markdown_artifact(summary_markdown(title, outcomes, counts, out_dir),
                             key=keys["markdown"], description=title)
    return keys


def pass_summary(prefix: str, title: str, result: BatchResult, out_dir: Path,
                 model: str) -> dict[str, Any]:
    """Publish a batch's artifacts; the flow's return value (counts, exit code, rows)."""
    counts = result.counts()
    keys = publish_batch(prefix, title, result.outcomes, counts, out_dir)
    return {
        **counts, "exit_code": int(ExitCode.for_rows(result.outcomes)),
        "model": model, "batch": str(out_dir / "batch.json"), "artifacts": keys,
        "outcomes": [o.model_dump(mode="json", exclude={"figures"}) for o in result.outcomes],
    }
