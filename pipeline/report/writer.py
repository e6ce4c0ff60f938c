"""``report.html``: the human report of one scene, from its :class:`SceneReport`."""

from __future__ import annotations

import html
import math
from typing import Any

from pipeline.report.model import SceneMetrics, SceneReport, SizeUnit


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
.error{color:#a00}
figure{display:inline-block;margin:0 1em 1em 0}img{max-width:520px;border:1px solid #aaa}
"""


def _class_table(report: SceneReport, colors: dict[str, tuple[int, int, int]]) -> str:
    classes = report.summary.classes
    total = sum(c.pixels for c in classes.values()) or 1
    volumes = any(c.unit is SizeUnit.VOLUME_ML for c in classes.values())
    rows = []
    for name, c in classes.items():
        r, g, b = colors.get(name, (128, 128, 128))
        label = Markup(f'<span class="swatch" style="background:rgb({r},{g},{b})"></span>'
                       f"{html.escape(name)}")
        size = c.size
        rows.append([label, c.pixels, f"{100.0 * c.pixels / total:.1f}",
                     None if size is None else (size if volumes else size / 1e6)])
    return _table(["class", "voxels" if volumes else "pixels", "share %",
                   "volume mL" if volumes else "area km²"], rows)


def _run_table(report: SceneReport) -> str:
    t = report.tiles
    rows = [["scene", report.scene_id], ["input", report.input], ["model", report.model],
            ["shape", " x ".join(map(str, report.shape))],
            ["tiles (computed / total)", f"{t.computed} / {t.total}"],
            ["tile / halo (px)", f"{t.tile} / {t.halo}"]]
    rows += [[f"time {k} (s)", v] for k, v in report.timings_s.model_dump().items()]
    return _table(["", ""], rows)


def _metric_tables(metrics: SceneMetrics) -> list[str]:
    sem = metrics.semantic
    parts = ["<h2>Metrics against labels</h2>",
             _table(["", "value"], [["mIoU", sem.miou], ["Dice", sem.dice]]),
             _table(["class", "IoU", "Dice"],
                    [[n, v.iou, v.dice] for n, v in sem.per_class.items()])]
    if metrics.surface:
        parts += ["<h2>Surface distance</h2>",
                  _table(["class", "HD95 (mm)"],
                         [[n, v.hd95_mm] for n, v in metrics.surface.items()])]
    return parts


def _panoptic_table(metrics: SceneMetrics) -> list[str]:
    pan = metrics.panoptic
    return ["<h2>Panoptic quality against labels</h2>",
            _table(["class", "PQ", "SQ", "RQ"],
                   [["all", pan.pq, pan.sq, pan.rq]]
                   + [[n, v.pq, v.sq, v.rq] for n, v in pan.per_class.items()])]


def render_html(report: SceneReport, colors: dict[str, tuple[int, int, int]],
                images: dict[str, str]) -> str:
    """A self-contained human report (images are files beside it)."""
    parts = [f"<h1>segpipe report: {html.escape(report.scene_id)}</h1>", _run_table(report),
             "<h2>Classes</h2>", _class_table(report, colors)]
    metrics = report.scores
    if metrics:
        parts += _metric_tables(metrics)
    elif report.metrics_error:
        reason = html.escape(report.metrics_error)
        parts += ["<h2>Metrics against labels</h2>",
                  f'<p class="error">No metrics: the label file was unusable: {reason}</p>']
    instances = report.summary.instances
    if instances:
        parts += ["<h2>Instances</h2>",
                  _table(["thing class", "instances"], [[k, v] for k, v in instances.items()])]
    seams = {k: v for k, v in report.seams.model_dump().items() if not isinstance(v, dict)}
    if seams:
        parts += ["<h2>Seams</h2>", _table(["", "count"], [[k.replace("_", " "), v]
                                                           for k, v in seams.items()])]
    if metrics:
        parts += _panoptic_table(metrics)
    figs = "".join(
        f'<figure><img src="{html.escape(src)}" alt="{html.escape(k)}">'
        f"<figcaption>{html.escape(k)}</figcaption></figure>" for k, src in images.items())
    parts += ["<h2>Quicklook</h2>", figs]
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>segpipe "
            f"{html.escape(report.scene_id)}</title><style>{_STYLE}</style></head>"
            f"<body>{''.join(parts)}</body></html>")
