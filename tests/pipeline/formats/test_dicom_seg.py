"""DICOM-SEG out (pipeline.io.dicom_seg, the DICOM format's export) and in, as labels.

Series come from ``dicom_make`` with known world coordinates (plain, double-oblique,
gantry-tilted, enhanced multi-frame). The SEG is read back with highdicom and pydicom and
compared with the labels it was written from, frame by frame against its source
instances; a real ``segpipe run`` writes ``segmentation.dcm`` beside ``semantic.nii.gz``
(equal voxel for voxel) and a second run takes that SEG as labels (mIoU 1.0).
"""

from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from flows.cli import app
from pipeline.bundle import ClassSpec
from pipeline.discovery import discover, match_labels
from pipeline.formats.dicom import DICOM
from pipeline.io.dicom_seg import (
    LESION,
    TISSUE,
    check_seg,
    class_codes,
    is_seg,
    read_seg_slab,
    write_dicom_seg,
)
from segcore.errors import InputError
from tests.pipeline.formats.dicom_make import (
    PATIENT,
    Geometry,
    Options,
    oblique,
    tilted,
    write_series,
)

SHAPE = (20, 16, 9)  # (columns, rows, slices)
CLASSES = [
    {"id": 0, "name": "background", "isthing": False, "color": (0, 0, 0)},
    {"id": 1, "name": "liver", "isthing": False, "color": (200, 60, 60),
     "dicom": {"category": {"value": "123037004", "scheme": "SCT",
                            "meaning": "Anatomical Structure"},
               "type": {"value": "10200004", "scheme": "SCT", "meaning": "Liver"}}},
    {"id": 2, "name": "lesion", "isthing": True, "color": (60, 200, 60)},
]
GEOMETRIES = {"plain": (Geometry(), False), "oblique": (oblique(), False),
              "tilted": (tilted(), False), "multiframe": (Geometry(), True)}


def _labels(seed: int = 0) -> np.ndarray:
    """Class ids ``(columns, rows, slices)``; slice 4 empty (its frames are omitted)."""
    labels = np.random.default_rng(seed).integers(0, 3, SHAPE).astype(np.uint8)
    labels[:, :, 4] = 0
    return labels


def _series(root: Path, name: str):
    geometry, multiframe = GEOMETRIES[name]
    volume = np.zeros(SHAPE, np.int16)
    files = write_series(root / name, volume, geometry, Options(multiframe=multiframe))
    return DICOM.open(files[0]).series, geometry


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_seg_frames_lie_on_their_source_slices(tmp_path, name):
    series, geometry = _series(tmp_path, name)
    labels = _labels()
    path = write_dicom_seg(tmp_path / "seg.dcm", series, lambda a, b: labels[:, :, a:b],
                           CLASSES, model="demo", nodata=255, max_voxels=SHAPE[0] * SHAPE[1] * 2)
    assert is_seg(path) and not is_seg(Path(series.frames[0].path))
    check_seg(path, series)
    ds = pydicom.dcmread(path)
    assert ds.SegmentationType == "BINARY" and ds.Modality == "SEG"
    sources = {(f.sop_uid, f.index): k for k, f in enumerate(series.frames)}
    normal = np.cross(geometry.row, geometry.col)
    seen = set()
    bits = ds.pixel_array.reshape(-1, SHAPE[1], SHAPE[0])  # (frames, rows, columns)
    for i, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        ref = item.DerivationImageSequence[0].SourceImageSequence[0]
        frame = int(ref.ReferencedFrameNumber) - 1 if "ReferencedFrameNumber" in ref else None
        k = sources[(str(ref.ReferencedSOPInstanceUID), frame)]
        seen.add(k)
        position = np.array(item.PlanePositionSequence[0].ImagePositionPatient, float)
        np.testing.assert_allclose(position, geometry.position(k), atol=1e-4)  # tilt kept
        number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        np.testing.assert_array_equal(bits[i].T, labels[:, :, k] == number)
    assert seen == set(range(SHAPE[2])) - {4}  # every non-empty slice, the empty one omitted
    orientation = ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0]
    np.testing.assert_allclose(np.cross(*np.reshape(orientation.ImageOrientationPatient,
                                                    (2, 3))), normal, atol=1e-6)
    # read back with highdicom onto the series grid, in slabs
    seg = hd.seg.segread(path, lazy_frame_retrieval=True)
    back = np.concatenate([read_seg_slab(seg, series, k, min(k + 4, SHAPE[2]))
                           for k in range(0, SHAPE[2], 4)], axis=2)
    np.testing.assert_array_equal(back, labels)


def test_segments_are_the_classes_with_codes_and_a_new_identity(tmp_path):
    series, _ = _series(tmp_path, "plain")
    labels = _labels(1)
    labels[0, 0, 0] = 255  # nodata: written as background
    path = write_dicom_seg(tmp_path / "seg.dcm", series, lambda a, b: labels[:, :, a:b],
                           CLASSES, model="demo", nodata=255)
    ds = pydicom.dcmread(path)
    segments = {int(s.SegmentNumber): s for s in ds.SegmentSequence}
    assert sorted(segments) == [1, 2]
    assert [segments[n].SegmentLabel for n in (1, 2)] == ["liver", "lesion"]
    liver, lesion = (segments[n].SegmentedPropertyTypeCodeSequence[0] for n in (1, 2))
    assert (liver.CodeValue, liver.CodingSchemeDesignator, liver.CodeMeaning) == \
        ("10200004", "SCT", "Liver")
    assert (lesion.CodeValue, lesion.CodingSchemeDesignator) == LESION[:2]  # default (thing)
    assert segments[1].SegmentAlgorithmType == "AUTOMATIC"
    assert segments[1].SegmentAlgorithmName == "demo"
    source = pydicom.dcmread(series.frames[0].path, stop_before_pixels=True)
    # new UIDs in the source's study and frame of reference; the patient module copied
    assert ds.SeriesInstanceUID != source.SeriesInstanceUID
    assert ds.SOPInstanceUID not in {f.sop_uid for f in series.frames}
    assert ds.StudyInstanceUID == source.StudyInstanceUID
    assert ds.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert ds.PatientID == PATIENT["PatientID"]
    refs = {str(i.ReferencedSOPInstanceUID) for s in ds.ReferencedSeriesSequence
            for i in s.ReferencedInstanceSequence}
    assert refs == {f.sop_uid for f in series.frames}
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    seg = hd.seg.segread(path)
    back = read_seg_slab(seg, series, 0, SHAPE[2])
    assert back[0, 0, 0] == 0
    np.testing.assert_array_equal(back.ravel()[1:], labels.ravel()[1:])
    # class table codes: defaults for stuff, the model.yaml block validated
    codes = class_codes([{"id": 0, "name": "bg"}, {"id": 1, "name": "organ"}])
    assert [(c.id, c.category, c.type) for c in codes] == [(1, TISSUE, TISSUE)]
    with pytest.raises(ValueError, match="extra"):
        ClassSpec.model_validate({"id": 1, "name": "x", "dicom": {"typ": {}}})
    assert "dicom" not in ClassSpec(id=1, name="x").model_dump()  # dumps unchanged
    with pytest.raises(InputError, match=r"class ids 7\.\.7; expected 0\.\.2"):
        write_dicom_seg(tmp_path / "bad.dcm", series, lambda a, b: labels[:, :, a:b] * 0 + 7,
                        CLASSES, model="demo")


def test_a_seg_of_another_series_is_refused(tmp_path):
    series, _ = _series(tmp_path, "plain")
    other, _ = _series(tmp_path, "oblique")
    labels = _labels(2)
    path = write_dicom_seg(tmp_path / "seg.dcm", other, lambda a, b: labels[:, :, a:b],
                           CLASSES, model="demo")
    with pytest.raises(InputError, match="not in the series s3") as err:
        check_seg(path, series)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def _run(args: list) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def test_a_run_writes_the_seg_and_takes_it_back_as_labels(tmp_path):
    from tests.pipeline.formats.test_dicom import GEOMETRY, RUN, _phantom

    volume = _phantom()
    write_series(tmp_path / "in" / "ct", volume, GEOMETRY,
                 Options(names="shuffled", preamble=False))  # headers read with force
    code, output = _run(["run", tmp_path / "in" / "ct", *RUN, "--out", tmp_path / "out"])
    assert code == 0, output
    scene = tmp_path / "out" / "ct__s3"
    report = json.loads((scene / "report.json").read_text())
    assert report["outputs"]["dicom_seg"] == "segmentation.dcm"
    semantic = np.asarray(nib.load(scene / "semantic.nii.gz").dataobj)  # (column, row, slice)
    assert len(np.unique(semantic)) > 1
    series = DICOM.open(next((tmp_path / "in" / "ct").iterdir())).series
    seg = hd.seg.segread(scene / "segmentation.dcm")
    np.testing.assert_array_equal(read_seg_slab(seg, series, 0, volume.shape[2]), semantic)
    assert [seg.get_segment_description(n).segment_label for n in seg.segment_numbers] == \
        ["organ", "lesion"]
    # the SEG as labels: a single file, then matched by scene id in a labels folder
    code, output = _run(["run", tmp_path / "in" / "ct", *RUN, "--out", tmp_path / "again",
                         "--labels", scene / "segmentation.dcm"])
    assert code == 0, output
    metrics = json.loads((tmp_path / "again" / "ct__s3" / "report.json").read_text())["metrics"]
    assert metrics["semantic"]["miou"] == pytest.approx(1.0), metrics
    folder = tmp_path / "labels"
    folder.mkdir()
    (folder / "ct__s3.dcm").write_bytes((scene / "segmentation.dcm").read_bytes())
    scenes = discover([tmp_path / "in"])
    assert match_labels(scenes, folder) == {"ct__s3": folder / "ct__s3.dcm"}


def test_segments_of_another_tool_are_matched_to_classes_by_label(tmp_path):
    from pipeline.formats.dicom import _segment_lookup

    series, _ = _series(tmp_path, "plain")
    labels = _labels(3)
    renumbered = [CLASSES[0], {**CLASSES[2], "id": 1}, {**CLASSES[1], "id": 2}]
    path = write_dicom_seg(tmp_path / "seg.dcm", series, lambda a, b: labels[:, :, a:b],
                           renumbered, model="other")  # segment 1 = lesion, 2 = liver
    seg = hd.seg.segread(path)
    assert _segment_lookup(path, seg, CLASSES).tolist() == [0, 2, 1]  # by label
    anonymous = [{"id": 0, "name": "bg"}, {"id": 1, "name": "a"}]
    with pytest.raises(InputError, match=r"segment numbers up to 2 .* numbers below 2"):
        _segment_lookup(path, seg, anonymous)  # neither names nor numbers fit


def test_a_labels_folder_pairs_segs_with_the_series_they_reference(tmp_path):
    """PACS exports name SEG files by UID or counter, not by scene id: a series that no
    file name matches takes the SEG that references it; other files are ignored."""
    plain, _ = _series(tmp_path / "in", "plain")
    tilted_series, _ = _series(tmp_path / "in", "tilted")
    folder = tmp_path / "labels"
    folder.mkdir()
    labels = _labels(4)
    seg_of = {}
    for series, name in ((plain, "1.2.826.0.1.3680043.8.498.1.dcm"), (tilted_series, "IM0002")):
        seg_of[series.group.series_uid] = write_dicom_seg(
            folder / name, series, lambda a, b: labels[:, :, a:b], CLASSES, model="demo")
    (folder / "notes.txt").write_text("not DICOM")
    scenes = discover([tmp_path / "in"])
    assert len(scenes) == 2
    uid_of = {s.scene_id: DICOM.open(s.path).series.group.series_uid for s in scenes}
    assert len(set(uid_of.values())) == 2 and set(uid_of.values()) == set(seg_of)
    assert match_labels(scenes, folder) == {sid: seg_of[uid] for sid, uid in uid_of.items()}
    named = folder / f"{scenes[0].scene_id}.dcm"  # a file named by scene id still comes first
    named.write_bytes(seg_of[uid_of[scenes[1].scene_id]].read_bytes())
    assert match_labels(scenes, folder)[scenes[0].scene_id] == named
