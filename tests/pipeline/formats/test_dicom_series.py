"""The DICOM series reader (pipeline.io.dicom_series) on generated and real files.

Generated series (``dicom_make``) have known world coordinates: every test compares
with the geometry they were written from, not with what the reader computed. Real
files come from pydicom's test files and the ``pydicom-data`` package.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import data_store
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from pipeline.io.dicom_series import POSITION_TOLERANCE_MM, build_series, scan_folder
from segcore.errors import InputError
from tests.pipeline.formats.dicom_make import (
    Geometry,
    Options,
    non_image,
    oblique,
    tilted,
    write_series,
)

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
DATA_STORE = Path(data_store.__file__).parent / "data"
SHAPE = (20, 16, 9)  # (columns, rows, slices)


def _volume(seed: int = 0, dtype=np.int16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 3000, size=SHAPE).astype(dtype)


def _read(series) -> np.ndarray:
    """The whole series through read_slab, in small slabs (2 slices)."""
    parts = [slab for _, _, slab in series.slabs(max_voxels=SHAPE[0] * SHAPE[1] * 2)]
    assert len(parts) == (series.disk_shape[2] + 1) // 2  # really slab by slab
    return np.concatenate(parts, axis=2)


def _only_series(folder: Path):
    scan = scan_folder(folder)
    assert len(scan.groups) == 1, scan
    return build_series(scan.groups[0]), scan


def test_shuffled_names_no_preamble_duplicate_junk_and_non_images(tmp_path):
    volume = _volume()
    files = write_series(tmp_path, volume, Geometry(),
                         Options(names="shuffled", preamble=False, seed=4))
    shutil.copy(files[4], tmp_path / "copy-of-a-slice")  # a duplicated instance
    (tmp_path / "notes.txt").write_text("not dicom")
    (tmp_path / "junk.dcm").write_bytes(np.random.default_rng(1).bytes(600))
    non_image(tmp_path / "report", "1.2.840.10008.5.1.4.1.1.88.22")  # Enhanced SR
    non_image(tmp_path / "seg", "1.2.840.10008.5.1.4.1.1.66.4")  # Segmentation
    non_image(tmp_path / "pr", "1.2.840.10008.5.1.4.1.1.11.1")  # presentation state
    hidden = tmp_path / ".snapshot"
    write_series(hidden, _volume(seed=9), Geometry(), Options())  # hidden: never seen
    shutil.copy(files[0], tmp_path / ".hidden-slice")

    series, scan = _only_series(tmp_path)
    assert series.duplicates == 1 and len(series.frames) == SHAPE[2]
    np.testing.assert_array_equal(_read(series), volume)
    reasons = {s.path: s.reason for s in scan.skipped}
    assert set(reasons) == {"notes.txt", "junk.dcm", "report", "seg", "pr"}
    assert reasons["notes.txt"] == "not a DICOM file"
    assert "structured report" in reasons["report"] and "skipped" in reasons["report"]
    assert "SEG" in reasons["seg"] and "presentation state" in reasons["pr"]
    # order comes from positions, not names or InstanceNumber (written reversed)
    z = [f.position[2] for f in series.frames]
    assert z == sorted(z)


def test_a_missing_slice_is_refused_naming_the_gap(tmp_path):
    files = write_series(tmp_path, _volume(), Geometry(slice_spacing=2.5))
    files[5].unlink()
    group = scan_folder(tmp_path).groups[0]
    with pytest.raises(InputError) as err:
        build_series(group)
    message = str(err.value)
    assert "gap of 5 mm between slices 4 and 5" in message, message
    assert "1 slice(s) missing" in message and "\n" not in message


def test_uneven_spacing_is_refused(tmp_path):
    geometry = Geometry()
    files = write_series(tmp_path, _volume(), geometry)
    ds = pydicom.dcmread(files[3])
    ds.ImagePositionPatient = [v + (0.2 if i == 2 else 0.0)
                               for i, v in enumerate(geometry.position(3))]
    ds.save_as(files[3])
    with pytest.raises(InputError, match="uneven slice spacing: a slice lies 0.2 mm"):
        build_series(scan_folder(tmp_path).groups[0])


def test_two_images_at_one_position_are_refused(tmp_path):
    files = write_series(tmp_path, _volume(), Geometry())
    ds = pydicom.dcmread(files[2])
    ds.SOPInstanceUID = generate_uid()  # another instance, same place (a second echo)
    ds.save_as(tmp_path / "echo2.dcm")
    with pytest.raises(InputError, match="two images at the same position"):
        build_series(scan_folder(tmp_path).groups[0])


@pytest.mark.parametrize("geometry, tilt", [(Geometry(), 0.0), (tilted(15.0), 15.0),
                                            (oblique(30.0), 0.0), (tilted(-20.0), 20.0)],
                         ids=["axial", "gantry-tilt", "double-oblique", "tilt-negative"])
def test_affine_maps_every_voxel_to_its_patient_position(tmp_path, geometry, tilt):
    files = write_series(tmp_path, _volume(), geometry, Options(names="shuffled"))
    series, _ = _only_series(tmp_path)
    affine = np.asarray(series.affine)
    np.testing.assert_allclose(affine, geometry.affine(), atol=1e-6)
    assert series.tilt_deg == pytest.approx(tilt, abs=1e-6)
    assert series.residual_mm <= POSITION_TOLERANCE_MM
    cols, rows, _ = series.disk_shape
    row_step = np.asarray(geometry.row) * geometry.pixel_spacing[1]
    col_step = np.asarray(geometry.col) * geometry.pixel_spacing[0]
    for path in files:  # every voxel of every file, from the file's own header
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        k = [f.path for f in series.frames].index(str(path))
        i, j = np.meshgrid(np.arange(cols), np.arange(rows), indexing="ij")
        voxels = np.stack([i.ravel(), j.ravel(), np.full(i.size, k), np.ones(i.size)])
        world = (affine @ voxels)[:3].T
        want = (np.asarray(ds.ImagePositionPatient, float) + i.ravel()[:, None] * row_step
                + j.ravel()[:, None] * col_step)
        assert np.abs(world - want).max() < 1e-3
    # LPS -> RAS for NIfTI: x and y negated
    np.testing.assert_allclose(series.ras_affine[:2], -affine[:2])


def test_enhanced_multiframe_compressed_and_implicit_read_the_same(tmp_path):
    volume = _volume(seed=3)
    geometry = oblique(20.0)
    base, _ = _only_series(write_series(tmp_path / "a", volume, geometry)[0].parent)
    variants = {
        "multiframe": Options(multiframe=True, seed=2),
        "multiframe-rle": Options(multiframe=True, syntax="rle", names="shuffled"),
        "rle": Options(syntax="rle", names="uid"),
        "implicit-no-preamble": Options(syntax="implicit", preamble=False),
    }
    for name, opts in variants.items():
        series, _ = _only_series(write_series(tmp_path / name, volume, geometry, opts)[0].parent)
        np.testing.assert_allclose(series.affine, base.affine, atol=1e-9)
        np.testing.assert_array_equal(_read(series), volume, err_msg=name)


def test_rescale_slope_and_intercept_are_applied(tmp_path):
    volume = _volume(seed=5, dtype=np.uint16)
    hu, _ = _only_series(write_series(tmp_path / "hu", volume, opts=Options(intercept=-1024))
                         [0].parent)
    assert hu.dtype == "int32"  # 16 stored bits minus 1024 do not fit int16
    np.testing.assert_array_equal(_read(hu), volume.astype(np.int32) - 1024)
    scaled, _ = _only_series(write_series(tmp_path / "pet", volume,
                                          opts=Options(slope=0.5, intercept=1.25))[0].parent)
    assert scaled.dtype == "float32"
    np.testing.assert_allclose(_read(scaled), volume * 0.5 + 1.25)


def test_mixed_orientations_and_shared_series_numbers_split_into_named_groups(tmp_path):
    uid = generate_uid()
    write_series(tmp_path, _volume(), Geometry(), Options(series_uid=uid, names="uid"))
    write_series(tmp_path, _volume(), oblique(), Options(series_uid=uid, names="uid"))
    write_series(tmp_path, _volume(), Geometry(), Options(series_number=3, names="uid"))
    write_series(tmp_path, _volume(), Geometry(), Options(series_number=None, names="uid"))
    groups = scan_folder(tmp_path).groups
    names = sorted(g.name for g in groups)
    assert len(groups) == 4 and len(set(names)) == 4, names
    assert sum(n.startswith("s3-") and "part" not in n for n in names) == 2, names
    assert sum(n.endswith("-part2") for n in names) == 1, names
    assert sum(n.startswith("uid-") for n in names) == 1, names
    for group in groups:
        assert len(build_series(group).frames) == SHAPE[2]


# --------------------------------------------------------------------------- real files


def _single(tmp_path: Path, source: Path, name: str):
    folder = tmp_path / name
    folder.mkdir()
    shutil.copy(source, folder / "image")
    return _only_series(folder)[0]


def test_real_files_in_every_transfer_syntax_read_the_same(tmp_path):
    """pydicom's MR_small in explicit/implicit VR, big endian, RLE, JPEG-LS, JPEG 2000."""
    names = ["MR_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm",
             "MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm"]
    reference = pydicom.dcmread(PYDICOM_FILES / names[0]).pixel_array.T[:, :, None]
    for name in names:
        series = _single(tmp_path, PYDICOM_FILES / name, name)
        assert series.disk_shape == (64, 64, 1)
        np.testing.assert_array_equal(series.read_slab(0, 1), reference, err_msg=name)
        assert series.read_slab(0, 1).dtype.isnative


def test_real_jpeg2000_ct_in_hounsfield_units(tmp_path):
    """pydicom-data's CT in JPEG 2000 lossless equals its uncompressed copy, in HU."""
    lossless = _single(tmp_path, DATA_STORE / "693_J2KR.dcm", "j2k")
    plain = _single(tmp_path, DATA_STORE / "693_UNCR.dcm", "unc")
    stored = pydicom.dcmread(DATA_STORE / "693_UNCR.dcm").pixel_array
    assert lossless.group.transfer_syntaxes == ("1.2.840.10008.1.2.4.90",)
    np.testing.assert_array_equal(lossless.read_slab(0, 1), plain.read_slab(0, 1))
    np.testing.assert_array_equal(lossless.read_slab(0, 1)[:, :, 0],
                                  stored.T.astype(np.int32) - 1024)
    np.testing.assert_allclose(np.asarray(lossless.affine)[:3, 3], [-122.5, -112.4, 47.0])


def test_real_enhanced_ct_multiframe(tmp_path):
    """pydicom-data's enhanced CT: per-frame positions, shared orientation and spacing."""
    series = _single(tmp_path, DATA_STORE / "eCT_Supplemental.dcm", "ect")
    affine = np.asarray(series.affine)
    assert series.disk_shape == (512, 512, 2)
    # rows run towards -x (L->R): the normal points to -z, so slices go from -149 to -159
    np.testing.assert_allclose(affine[:3, 3], [99.5, -301.5, -149.0])
    np.testing.assert_allclose(affine[:3, 2], [0.0, 0.0, -10.0])
    np.testing.assert_allclose(affine[:3, 0], [-0.388672, 0.0, 0.0])
    frames = pydicom.dcmread(DATA_STORE / "eCT_Supplemental.dcm").pixel_array
    slab = series.read_slab(0, 2)
    transform = pydicom.dcmread(DATA_STORE / "eCT_Supplemental.dcm", stop_before_pixels=True) \
        .SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0]
    want = frames.astype(np.float64) * float(transform.RescaleSlope) \
        + float(transform.RescaleIntercept)
    np.testing.assert_array_equal(slab, np.transpose(want[::-1], (2, 1, 0)).astype(slab.dtype))


def test_real_non_image_objects_are_skipped(tmp_path):
    for name in ("test-SR.dcm", "rtstruct.dcm", "rtplan.dcm"):
        shutil.copy(PYDICOM_FILES / name, tmp_path / name)
    scan = scan_folder(tmp_path)
    assert scan.groups == ()
    assert {s.path for s in scan.skipped} == {"test-SR.dcm", "rtstruct.dcm", "rtplan.dcm"}
    assert all("not an image" in s.reason for s in scan.skipped)


def test_memory_is_bounded_by_one_slab_not_the_series(tmp_path):
    """Reading 64 slices of 128 x 128 (2 MiB) in slabs of 2 slices stays far below the
    series' size: frames are decoded one at a time, a slab at a time."""
    import tracemalloc

    volume = np.random.default_rng(2).integers(0, 3000, size=(128, 128, 64)).astype(np.int16)
    for name, opts in {"files": Options(names="uid"), "multiframe": Options(multiframe=True)}.items():
        series, _ = _only_series(write_series(tmp_path / name, volume, Geometry(), opts)[0].parent)
        tracemalloc.start()
        total = 0
        for _, _, slab in series.slabs(max_voxels=128 * 128 * 2):
            total += slab.nbytes
            del slab
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert total == volume.nbytes
        assert peak < volume.nbytes / 4, (name, peak)


def test_damaged_files_are_skipped_or_fail_in_one_line(tmp_path):
    files = write_series(tmp_path, _volume(), Geometry(), Options(names="uid"))
    rng = np.random.default_rng(7)
    (tmp_path / "fake").write_bytes(b"\x08\x00\x05\x00CS" + rng.bytes(2000))
    (tmp_path / "header-cut").write_bytes(files[0].read_bytes()[:300])
    data = files[5].read_bytes()
    files[5].write_bytes(data[: len(data) - 100])  # pixel data cut short
    scan = scan_folder(tmp_path)
    reasons = {s.path: s.reason for s in scan.skipped}
    assert set(reasons) <= {"fake", "header-cut"}, reasons
    series = build_series(scan.groups[0])
    with pytest.raises(InputError) as err:
        _read(series)
    assert str(files[5]) in str(err.value) and "\n" not in str(err.value)
