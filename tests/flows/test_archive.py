"""Hospital archives: a directory tree of NIfTI volumes through `segpipe run` and the flows."""

from __future__ import annotations

import csv
import json
import threading

import pytest
from typer.testing import CliRunner

from flows.cli import app
from pipeline.synthdata.phantoms import write_archive

SMALL = (40, 48, 44)


def test_archive_of_twenty_with_three_broken_files(tmp_path, ray_session, prefect_harness):
    labels = write_archive(tmp_path, volumes=17, shape=SMALL, seed=11,
                           broken=("zero-byte", "cifti", "truncated-gzip"))
    assert len(labels) == 17
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(tmp_path / "archive"), "--model", "demo-medical",
                                      "--out", str(out), "--labels", str(tmp_path / "labels"),
                                      "--workers", "2"])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    reports = sorted(out.glob("*/report.json"))
    assert len(reports) == 17
    with open(out / "batch.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 20
    failed = {r["scene_id"]: r["reason"] for r in rows if r["status"] == "failed"}
    assert set(failed) == {"broken-00__anat__scan", "broken-01__anat__scan",
                           "broken-02__anat__scan"}
    assert "empty" in failed["broken-00__anat__scan"].lower()
    assert "cifti" in failed["broken-01__anat__scan"].lower()
    assert "truncated" in failed["broken-02__anat__scan"].lower()
    for scene_id, reason in failed.items():
        assert "scan.nii" in reason, reason  # the reason names the file
        assert f"failed {scene_id}" in " ".join(result.output.split())
    ok = [r for r in rows if r["status"] == "ok"]
    for row in ok:  # volumes and metrics per volume
        assert float(row["volume_ml.organ"]) > 0
        assert 0 < float(row["dice.organ"]) <= 1
        assert row["hd95_mm.organ"] != ""
        assert row["kind"] == "nifti"
    report = json.loads(reports[0].read_text())
    assert set(report["metrics"]["surface"]) == {"organ", "lesion"}
    assert report["outputs"]["semantic"] == "semantic.nii.gz"
    assert {"axial", "coronal", "sagittal"} <= set(report["outputs"]["quicklooks"])


class _Gate:
    """A progress sink that holds the first volume's inference until a second volume
    has started its own: it only gets through when volumes are in flight together."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.second = threading.Event()
        self.overlapped = False

    def start(self, scene_id: str, stage: str, total: int) -> None:
        self.started.append(scene_id)
        if len(self.started) == 1:
            self.overlapped = self.second.wait(timeout=60)
        else:
            self.second.set()

    def advance(self, scene_id: str, stage: str, n: int) -> None:
        pass


@pytest.mark.parametrize("in_flight", [2])
def test_volumes_are_in_flight_together(in_flight, tmp_path, ray_session, prefect_harness):
    from flows.segment_scene import segment_batch
    from pipeline.bundle import load_bundle
    from pipeline.options import RunOptions
    from pipeline.progress import progress_sink
    from pipeline.discovery import discover

    write_archive(tmp_path, volumes=3, shape=SMALL, seed=3, with_labels=False)
    scenes = discover([tmp_path / "archive"])
    gate = _Gate()
    with progress_sink(gate):
        result = segment_batch(scenes, load_bundle("demo-medical"),
                               RunOptions(workers=1, scenes_in_flight=in_flight),
                               tmp_path / "out")
    assert result.failed == 0
    assert gate.overlapped, f"second volume never started while the first was held: {gate.started}"
    assert sorted(gate.started) == sorted(s.scene_id for s in scenes)
