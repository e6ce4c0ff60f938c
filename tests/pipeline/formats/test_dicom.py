"""The DICOM scene format: discovery in a tree, real runs, exports, no patient data out.

The same phantom series stored four ways (shuffled names without preambles beside a
duplicate, junk and non-image objects; one enhanced multi-frame file; RLE-compressed;
implicit VR) goes through ``segpipe run --model demo-medical --executor local``: the
label files must be byte-identical, on the series' exact grid, and no patient
identifier may reach any output, name or log line.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import data_store
import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from flows.cli import app
from pipeline.bundle import load_bundle
from pipeline.discovery import discover
from pipeline.executor import total_pixels
from pipeline.formats import FORMATS
from pipeline.formats.dicom import DICOM
from pipeline.options import RunOptions
from pipeline.store import IMAGE, open_store
from segcore.synthetic.phantom import PhantomSpec, render_phantom
from tests.pipeline.formats.dicom_make import (
    PATIENT,
    Geometry,
    Options,
    non_image,
    write_series,
)

GEOMETRY = Geometry(pixel_spacing=(2.0, 2.0), slice_spacing=2.0, origin=(-47.5, -60.0, 20.0))
RUN = ["--model", "demo-medical", "--executor", "local", "--halo-mode", "exact"]
STORAGES = {
    "shuffled": Options(names="shuffled", preamble=False, seed=1),
    "multiframe": Options(multiframe=True, seed=2),
    "rle": Options(syntax="rle", names="uid"),
    "implicit": Options(syntax="implicit"),
}


def _phantom() -> np.ndarray:
    """A demo-medical-like phantom as stored DICOM axes (columns=L, rows=P, slices=S)."""
    phantom = render_phantom(PhantomSpec(shape=(24, 40, 40), spacing=(2.0, 2.0, 2.0), seed=3,
                                         lesions=(4, 8), lesion_radius_mm=(6.0, 12.0)))
    canonical = phantom.image.astype(np.int16)  # (S, A, R)
    return np.ascontiguousarray(canonical.transpose(2, 1, 0)[::-1, ::-1, :])


def test_discovery_names_series_by_folder_and_number(tmp_path):
    volume = np.zeros((8, 6, 4), np.int16)
    root = tmp_path / "archive"
    write_series(root / "study1", volume, opts=Options(series_number=3, names="shuffled"))
    write_series(root / "study1", volume, opts=Options(series_number=4, names="uid"))
    non_image(root / "study1" / "sr", "1.2.840.10008.5.1.4.1.1.88.22")
    (root / "study1" / "junk").write_bytes(b"\x08\x00" + bytes(300))
    write_series(root / "study2" / "deep", volume, opts=Options(multiframe=True))
    write_series(root, volume, opts=Options(series_number=None, names="uid"))
    write_series(root / ".snapshot", volume)  # hidden: skipped
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.eye(4)),
             root / "study2" / "t1.nii.gz")
    scenes = discover([root])
    ids = sorted(s.scene_id for s in scenes)
    no_number = next(i for i in ids if i.startswith("archive__uid-"))
    assert ids == sorted(["study1__s3", "study1__s4", "study2__deep__s3", "study2__t1",
                          no_number]), ids
    kinds = {s.scene_id: s.kind for s in scenes}
    assert kinds["study2__t1"] == "nifti" and kinds["study1__s3"] == "dicom"
    assert not any(v.split("^")[0] in i for i in ids for v in PATIENT.values())
    # one file named as an INPUT is a scene named after itself
    one = discover([root / "study2" / "deep" / "series.dcm"])
    assert [(s.scene_id, s.kind) for s in one] == [("series", "dicom")]
    assert FORMATS["dicom"].identify(root / "study2" / "t1.nii.gz") is False


def _run(args: list) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def _leaks(root: Path, extra: str) -> list[str]:
    """Patient values found in any file name, file content (gunzipped too) or ``extra``."""
    values = [v for v in PATIENT.values()] + ["Doe", "Jane"]
    texts = {"output": extra}
    for path in root.rglob("*"):
        texts[f"name:{path}"] = str(path.relative_to(root))
        if path.name == "segmentation.dcm":  # the DICOM-SEG must copy the patient module
            continue
        if path.is_file() and ("scene.zarr" not in path.parts or path.name == "zarr.json"):
            data = path.read_bytes()
            texts[str(path)] = (gzip.decompress(data) if path.suffix == ".gz" else data) \
                .decode("latin-1")
    return [f"{v} in {where}" for where, text in texts.items() for v in values if v in text]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The phantom stored four ways plus a series with a missing slice, run once."""
    root = tmp_path_factory.mktemp("dicom-run")
    volume = _phantom()
    for name, opts in STORAGES.items():
        files = write_series(root / "in" / name, volume, GEOMETRY, opts)
        if name == "shuffled":  # a duplicate, junk and non-image objects beside
            shutil.copy(files[3], root / "in" / name / "dup")
            (root / "in" / name / "junk.bin").write_bytes(np.random.default_rng(0).bytes(999))
            non_image(root / "in" / name / "seg", "1.2.840.10008.5.1.4.1.1.66.4")
            non_image(root / "in" / name / "sr", "1.2.840.10008.5.1.4.1.1.88.11")
    gap = write_series(root / "in" / "gap", volume, GEOMETRY, Options(names="uid"))
    sorted(gap, key=lambda p: pydicom_z(p))[10].unlink()
    code, output = _run(["run", root / "in", *RUN, "--out", root / "out"])
    return root, code, output


def pydicom_z(path: Path) -> float:
    import pydicom

    return float(pydicom.dcmread(path, stop_before_pixels=True).ImagePositionPatient[2])


def test_the_same_series_stored_differently_gives_byte_identical_labels(runs):
    root, code, output = runs
    out = root / "out"
    assert code == 1, output  # the series with a gap fails, the others are published
    rows = {r["scene_id"]: r for r in json.loads((out / "batch.json").read_text())["scenes"]}
    assert set(rows) == {f"{n}__s3" for n in [*STORAGES, "gap"]}, rows
    assert rows["gap__s3"]["status"] != "ok"
    assert "gap of 4 mm between slices 9 and 10" in rows["gap__s3"]["reason"]
    reference = out / "shuffled__s3"
    report = json.loads((reference / "report.json").read_text())
    assert report["kind"] == "dicom" and report["shape"] == list(_phantom().shape)
    assert report["dicom"]["duplicates_dropped"] == 1
    assert {s["file"] for s in report["dicom"]["skipped"]} == {"junk.bin", "seg", "sr"}
    names = sorted(f for f in report["outputs"] if f in ("semantic", "instance", "panoptic"))
    assert names == ["instance", "panoptic", "semantic"]
    semantic = np.asarray(nib.load(reference / "semantic.nii.gz").dataobj)
    assert len(np.unique(semantic)) > 1  # the model found something: a real comparison
    for name in STORAGES:
        for label in names:
            want = (reference / report["outputs"][label]).read_bytes()
            got = (out / f"{name}__s3" / report["outputs"][label]).read_bytes()
            assert got == want, (name, label)


def test_exports_lie_on_the_series_grid(runs):
    root, _, _ = runs
    image = nib.load(root / "out" / "multiframe__s3" / "semantic.nii.gz")
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ GEOMETRY.affine()
    np.testing.assert_allclose(image.affine, ras, atol=1e-4)
    assert image.shape == _phantom().shape


def test_no_patient_identifier_reaches_any_output(runs):
    root, _, output = runs
    assert _leaks(root / "out", output) == []


def test_labels_on_the_series_grid_give_metrics(runs, tmp_path):
    root, _, _ = runs
    labels = root / "out" / "rle__s3" / "semantic.nii.gz"
    code, output = _run(["run", root / "in" / "implicit", *RUN, "--out", tmp_path / "out",
                         "--labels", labels])
    assert code == 0, output
    report = json.loads((tmp_path / "out" / "implicit__s3" / "report.json").read_text())
    assert report["metrics"]["semantic"]["miou"] == pytest.approx(1.0)
    assert _leaks(tmp_path / "out", output) == []


def test_a_real_jpeg2000_ct_is_ingested_in_hounsfield_units(tmp_path):
    import pydicom

    source = Path(data_store.__file__).parent / "data" / "693_J2KR.dcm"
    shutil.copy(source, tmp_path / "ct")
    opened = DICOM.open(tmp_path / "ct")
    ingested = DICOM.ingest(opened, tmp_path / "scene.zarr", bundle=load_bundle("demo-medical"),
                            options=RunOptions(spacing="ignore"), attrs={}, copy=True)
    stored = open_store(tmp_path / "scene.zarr")[IMAGE][0]
    hu = pydicom.dcmread(source).pixel_array.T[:, :, None].astype(np.int32) - 1024
    np.testing.assert_array_equal(stored, opened.volume.to_canonical(hu))
    assert total_pixels([DICOM.scene(tmp_path / "ct")]) == 512 * 512  # auto executor
    fields = DICOM.grid_fields(ingested, RunOptions(spacing="ignore"))
    assert fields["dicom"]["transfer_syntaxes"] == ["1.2.840.10008.1.2.4.90"]
    assert fields["dicom"]["modality"] == "CT" and fields["shape"] == [512, 512, 1]
    text = json.dumps(fields)
    header = pydicom.dcmread(source, stop_before_pixels=True)
    assert fields["dicom"]["series_uid"] == header.SeriesInstanceUID
    for key in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber"):
        value = str(header.get(key, "") or "")
        assert not value or value not in text, key
