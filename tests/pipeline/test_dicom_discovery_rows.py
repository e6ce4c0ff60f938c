"""Files a DICOM tree holds beside its series are batch rows with status ``skipped``.

A tree with two series, junk (text, an empty file, a DICOM file cut short), non-image
objects (RTSTRUCT, SR, DICOMDIR) and a folder of many junk files goes through
``segpipe run``: both series are published and the exit code is 0; every left-out file
is a ``skipped`` row naming it and its reason (many of one reason in one folder: one
row), no patient data in the batch files. A tree without DICOM lists nothing.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from rasterio.transform import Affine
from typer.testing import CliRunner

from flows.cli import app
from pipeline.discovery import find
from pipeline.report.batch import MAX_FILE_ROWS
from tests.pipeline.formats.cases import write_band
from tests.pipeline.formats.dicom_make import (
    PATIENT,
    Geometry,
    Options,
    non_image,
    write_series,
)

GEOMETRY = Geometry(pixel_spacing=(2.0, 2.0), slice_spacing=2.0)
RTSTRUCT, SR, DICOMDIR = ("1.2.840.10008.5.1.4.1.1.481.3", "1.2.840.10008.5.1.4.1.1.88.22",
                          "1.2.840.10008.1.3.10")


def _tree(root: Path) -> None:
    rng = np.random.default_rng(3)
    ct = write_series(root / "CT", rng.integers(-100, 100, (20, 24, 12)).astype(np.int16),
                      GEOMETRY, Options(series_number=3, names="shuffled"))
    write_series(root / "MR", rng.integers(0, 500, (20, 24, 10)).astype(np.int16), GEOMETRY,
                 Options(series_number=5, names="uid"))
    (root / "CT" / "notes.txt").write_text("exported by PACS")
    (root / "CT" / "empty").write_bytes(b"")
    (root / "CT" / "cut.dcm").write_bytes(ct[0].read_bytes()[:300])  # header cut short
    non_image(root / "CT" / "rtstruct", RTSTRUCT)
    non_image(root / "CT" / "sr", SR)
    non_image(root / "DICOMDIR", DICOMDIR)
    (root / "thumbs").mkdir()
    for k in range(MAX_FILE_ROWS + 2):
        (root / "thumbs" / f"t{k:02d}.jpg").write_bytes(b"\xff\xd8\xff" + bytes(50))


def test_left_out_files_are_skipped_rows_and_do_not_change_the_exit_code(tmp_path):
    root, out = tmp_path / "archive", tmp_path / "out"
    _tree(root)
    result = CliRunner().invoke(app, ["run", str(root), "--model", "demo-medical",
                                      "--executor", "local", "--out", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "batch.json").read_text())
    assert sorted(r["scene_id"] for r in doc["scenes"]) == ["CT__s3", "MR__s5"]
    assert (doc["ok"], doc["failed"]) == (2, 0)
    reasons = {r["input"]: r["reason"] for r in doc["skipped"]}
    assert all(r["status"] == "skipped" and r["scene_id"] == "" and r["kind"] == "dicom"
               for r in doc["skipped"])
    ct = f"{root}/CT"
    assert set(reasons) == {f"{root}/DICOMDIR", f"{ct}/notes.txt", f"{ct}/empty",
                            f"{ct}/cut.dcm", f"{ct}/rtstruct", f"{ct}/sr", f"{root}/thumbs"}
    assert reasons[f"{ct}/rtstruct"].startswith("RTSTRUCT") and \
        "not an image" in reasons[f"{ct}/rtstruct"]
    assert reasons[f"{ct}/sr"].startswith("SR ") and "not an image" in reasons[f"{ct}/sr"]
    assert reasons[f"{root}/DICOMDIR"].startswith("DICOMDIR")
    assert reasons[f"{ct}/notes.txt"] == "not a DICOM file"
    assert reasons[f"{ct}/empty"] == "empty file (0 bytes)"
    assert "cut short" in reasons[f"{ct}/cut.dcm"]
    assert reasons[f"{root}/thumbs"] == (f"{MAX_FILE_ROWS + 2} files: not a DICOM file; "
                                         "e.g. t00.jpg, t01.jpg, t02.jpg")
    assert "skipped 7 row(s)" in result.output
    # batch.csv: the scenes, then the skipped rows
    rows = list(csv.DictReader((out / "batch.csv").open()))
    assert [r["status"] for r in rows] == ["ok", "ok"] + ["skipped"] * 7
    # the scene's report still lists its own folder's left-out files
    report = json.loads((out / "CT__s3" / "report.json").read_text())
    assert {s["file"] for s in report["dicom"]["skipped"]} == {
        "notes.txt", "empty", "cut.dcm", "rtstruct", "sr"}
    batch = (out / "batch.json").read_text() + (out / "batch.csv").read_text() + result.output
    assert not [v for v in [*PATIENT.values(), "Doe", "Jane"] if v in batch]


def test_a_tree_without_dicom_lists_no_files(tmp_path):
    write_band(tmp_path / "scene.tif", np.ones((3, 32, 32), np.uint8),
               transform=Affine(10, 0, 500000, 0, -10, 6100000))
    (tmp_path / "README.md").write_text("a GeoTIFF folder")
    found = find([tmp_path])
    assert [s.kind for s in found.scenes] == ["geotiff"] and found.skipped == []
    non_image(tmp_path / "sr", SR)  # one DICOM object: now it is a DICOM tree
    assert {Path(s.path).name for s in find([tmp_path]).skipped} == {"README.md", "sr"}
