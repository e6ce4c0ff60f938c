"""``segpipe run`` with an unusable label file: the segmentation is published, exit 1."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from flows.cli import app


def _invoke(args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def test_labels_on_another_grid_publish_the_segmentation_and_exit_1(scene_factory, tiny_bundle,
                                                                    tmp_path):
    image, labels = scene_factory("cli-labels", size=(256, 224))
    _, other = scene_factory("cli-labels-other", size=(200, 224))
    out = tmp_path / "out"
    args = ["run", image, "--model", tiny_bundle.path, "--out", out, "--executor", "local"]
    code, output = _invoke([*args, "--labels", other])
    assert code == 1, output
    assert "Traceback" not in output
    lines = [ln for ln in output.splitlines() if "labels unusable" in ln]
    assert len(lines) == 1 and "cli-labels" in lines[0], output
    assert str(other) in output.replace("\n", "")
    report = json.loads((out / "cli-labels" / "report.json").read_text())
    assert str(other) in report["metrics"]["error"]
    assert set(report["metrics"]) == {"error", "labels", "labels_digest"}
    assert (out / "cli-labels" / report["outputs"]["semantic"]).is_file()
    html = (out / "cli-labels" / "report.html").read_text()
    assert "label file was unusable" in html
    row = json.loads((out / "batch.json").read_text())["scenes"][0]
    assert row["status"] == "ok" and row["reason"].startswith("labels unusable: ")
    # the same unusable labels again: nothing to do, still exit 1; good labels: exit 0
    code, output = _invoke([*args, "--labels", other])
    assert code == 1 and json.loads((out / "batch.json").read_text())["scenes"][0]["reused"]
    code, output = _invoke([*args, "--labels", labels])
    assert code == 0, output
    report = json.loads((out / "cli-labels" / "report.json").read_text())
    assert report["metrics"]["semantic"]["miou"] is not None
    assert report["tiles"]["computed"] == 0
