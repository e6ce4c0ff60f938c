"""``report.json`` (CONTRACT.md keys) and ``report.html`` for one scene."""

from __future__ import annotations

import html
import math
from typing import Any


class Markup(str):
    """A cell that is already HTML (not escaped again)."""


def _fmt(value: Any) -> str:
    if isinstance(value, Markup):
        return str(value)
    if value is None:
        return "–"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:,.4f}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return html.escape(str(value))


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers) if any(headers) else ""
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
    thead = f"<thead><tr>{head}</tr></thead>" if head else ""
    return f"<table>{thead}<tbody>{body}</tbody></table>"


_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.swatch{display:inline-block;width:12px;height:12px;margin-right:6px;vertical-align:middle}
figure{display:inline-block;margin:0 1em 1em 0}img{max-width:520px;border:1px solid #aaa}
"""


def render_html(report: dict, colors: dict[str, tuple[int, int, int]], images: dict[str, str]) -> str:
    """A self-contained human report (images are files beside it)."""
    summary = report["summary"]["classes"]
    total = sum(c["pixels"] for c in summary.values()) or 1
    rows = []
    volumes = report.get("kind") == "nifti"
    for name, c in summary.items():
        r, g, b = colors.get(name, (128, 128, 128))
        label = Markup(f'<span class="swatch" style="background:rgb({r},{g},{b})"></span>'
                       f"{html.escape(name)}")
        size = c.get("volume_ml") if volumes else c.get("area_m2")
        rows.append([label, c["pixels"], f"{100.0 * c['pixels'] / total:.1f}",
                     None if size is None else (size if volumes else size / 1e6)])
    class_table = _table(["class", "voxels" if volumes else "pixels", "share %",
                          "volume mL" if volumes else "area km²"], rows)
    t = report["tiles"]
    run_rows = [["scene", report["scene_id"]], ["input", report["input"]],
                ["model", report["model"]], ["shape", " x ".join(map(str, report["shape"]))],
                ["tiles (computed / total)", f"{t['computed']} / {t['total']}"],
                ["tile / halo (px)", f"{t.get('tile', '–')} / {t.get('halo', '–')}"]]
    run_rows += [[f"time {k} (s)", v] for k, v in report["timings_s"].items()]
    parts = [f"<h1>segpipe report: {html.escape(report['scene_id'])}</h1>",
             _table(["", ""], run_rows), "<h2>Classes</h2>", class_table]
    metrics = report.get("metrics")
    if metrics and metrics.get("semantic"):
        sem = metrics["semantic"]
        parts += ["<h2>Metrics against labels</h2>",
                  _table(["", "value"], [["mIoU", sem["miou"]], ["Dice", sem["dice"]]]),
                  _table(["class", "IoU", "Dice"],
                         [[n, v["iou"], v["dice"]] for n, v in sem["per_class"].items()])]
    if metrics and metrics.get("surface"):
        parts += ["<h2>Surface distance</h2>",
                  _table(["class", "HD95 (mm)"],
                         [[n, v.get("hd95_mm")] for n, v in metrics["surface"].items()])]
    instances = report["summary"].get("instances") or {}
    if instances:
        parts += ["<h2>Instances</h2>",
                  _table(["thing class", "instances"], [[k, v] for k, v in instances.items()])]
    seams = {k: v for k, v in (report.get("seams") or {}).items() if not isinstance(v, dict)}
    if seams:
        parts += ["<h2>Seams</h2>", _table(["", "count"], [[k.replace("_", " "), v]
                                                           for k, v in seams.items()])]
    if metrics and metrics.get("panoptic"):
        pan = metrics["panoptic"]
        parts += ["<h2>Panoptic quality against labels</h2>",
                  _table(["class", "PQ", "SQ", "RQ"],
                         [["all", pan["pq"], pan["sq"], pan["rq"]]]
                         + [[n, v["pq"], v["sq"], v["rq"]] for n, v in pan["per_class"].items()])]
    figs = "".join(
        f'<figure><img src="{html.escape(src)}" alt="{html.escape(k)}">'
        f"<figcaption>{html.escape(k)}</figcaption></figure>" for k, src in images.items())
    parts += ["<h2>Quicklook</h2>", figs]
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>segpipe "
            f"{html.escape(report['scene_id'])}</title><style>{_STYLE}</style></head>"
            f"<body>{''.join(parts)}</body></html>")
