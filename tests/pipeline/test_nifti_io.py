"""NIfTI adapter: canonical round trips, channels, broken files, bounded streaming, labels."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from pipeline.io.nifti import (
    NIFTI_INTENT_LABEL,
    VolumeInfo,
    VolumeReader,
    open_label_volume,
    open_volume,
    write_label_volume,
)
from pipeline.synthdata.volumes import (
    BROKEN_KINDS,
    canonical_to_disk,
    orientation_affine,
    write_broken,
    write_canonical,
    write_nifti,
)
from segcore.errors import ConfigError, InputError

CANONICAL_SHAPE = (5, 6, 7)  # (Z, Y, X): distinct sizes catch transposition errors
LABEL_AT = (1, 4, 2)  # a canonical voxel for the world-position check

ROUND_TRIPS: dict[str, dict[str, Any]] = {
    "LPS": dict(axcodes="LPS"),
    "PLS": dict(axcodes="PLS"),
    "LAS": dict(axcodes="LAS"),
    "RAS": dict(axcodes="RAS"),
    "oblique-LPS": dict(axcodes="LPS", oblique_deg=17.0, origin=(-90.0, 120.0, -60.0)),
    "anisotropic-IRA": dict(axcodes="IRA", spacing=(3.0, 0.9, 0.7)),
    "big-endian-int16": dict(axcodes="LPS", big_endian=True),
    "nifti2": dict(axcodes="PLS", version=2, spacing=(3.0, 0.9, 0.7)),
    "nan-float32": dict(axcodes="LAS", dtype="float32", nan=True),
    "qform0-sform2": dict(axcodes="LPS", qform_code=0, sform_code=2),
    "qform-only": dict(axcodes="PLS", qform_code=1, sform_code=0, spacing=(2.0, 1.0, 0.5)),
    "scaled-int16": dict(axcodes="LPS", scl_slope=0.5, scl_inter=10.0),
    "micron-units": dict(axcodes="RAS", spacing=(500.0, 250.0, 250.0), xyzt_units="micron"),
}


def _canonical_data(case: dict[str, Any], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if case.get("dtype") == "float32":
        data = rng.normal(size=CANONICAL_SHAPE).astype(np.float32)
        if case.get("nan"):
            data[rng.random(CANONICAL_SHAPE) < 0.1] = np.nan
        return data
    return rng.integers(-2000, 2000, CANONICAL_SHAPE).astype(np.int16)


def _write_case(path: Path, case: dict[str, Any], data: np.ndarray) -> Path:
    kw = {k: v for k, v in case.items() if k not in ("dtype", "nan")}
    return write_canonical(path, data, **kw)


def _stream(info: VolumeInfo, max_voxels: int, channels: list[int] | None = None
            ) -> tuple[np.ndarray, list[tuple[int, tuple[slice, ...], np.ndarray]]]:
    """All blocks of a reader and the canonical (Z, Y, X, C) array they tile."""
    with VolumeReader(info, channels) as reader:
        blocks = list(reader.blocks(max_voxels=max_voxels))
        n = len(reader.channels)
    dtype = np.dtype(info.dtype)
    fill = np.nan if dtype.kind == "f" else np.iinfo(dtype).max  # never a streamed value here
    out = np.full((*info.shape, n), fill, dtype=dtype)
    for pos, slices, block in blocks:
        out[(*slices, pos)] = block
    return out, blocks


def _assert_same_grid(out_img: Any, in_img: Any) -> None:
    assert out_img.shape == in_img.shape[:3]
    np.testing.assert_allclose(out_img.affine, in_img.affine, rtol=0, atol=1e-6)
    for key in ("qform_code", "sform_code", "xyzt_units"):
        assert int(out_img.header[key]) == int(in_img.header[key]), key
    assert out_img.header.get_zooms()[:3] == in_img.header.get_zooms()[:3]
    assert type(out_img.header) is type(in_img.header)  # same NIfTI version


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("name", list(ROUND_TRIPS))
def test_round_trip(tmp_path: Path, name: str, suffix: str) -> None:
    case = ROUND_TRIPS[name]
    data = _canonical_data(case)
    path = _write_case(tmp_path / f"scene{suffix}", case, data)
    info = open_volume(path)
    expected = data.astype(np.float32) * 0.5 + 10 if "scl_slope" in case else data
    assert info.axcodes == tuple(case["axcodes"])
    assert info.shape == CANONICAL_SHAPE
    assert info.dtype == expected.dtype.name
    assert info.compressed == (suffix == ".nii.gz")
    assert info.version == case.get("version", 1)
    to_mm = 1e-3 if case.get("xyzt_units") == "micron" else 1.0
    np.testing.assert_allclose(info.spacing, np.multiply(case.get("spacing", (1, 1, 1)), to_mm),
                               rtol=1e-6)
    one_plane = info.disk_shape[0] * info.disk_shape[1]
    got, blocks = _stream(info, max_voxels=2 * one_plane)
    assert len(blocks) == -(-info.disk_shape[2] // 2)
    np.testing.assert_array_equal(got[..., 0], expected)
    img = nib.load(path)  # nibabel as the oracle of the canonical definition
    oracle = nib.as_closest_canonical(img).get_fdata().transpose(2, 1, 0)
    np.testing.assert_allclose(got[..., 0], oracle, rtol=1e-6, equal_nan=True)
    np.testing.assert_array_equal(np.asarray(info.affine), img.affine)
    _check_labels_written(tmp_path / f"labels{suffix}", info, img)


def _check_labels_written(path: Path, info: VolumeInfo, in_img: Any) -> None:
    labels = (np.arange(np.prod(info.shape)).reshape(info.shape) % 5).astype(np.uint16)
    labels[LABEL_AT] = 700
    write_label_volume(path, info, lambda s: labels[s], "uint16", max_voxels=40)
    out = nib.load(path)
    _assert_same_grid(out, in_img)
    assert out.header.get_data_dtype() == np.dtype("<u2")
    assert int(out.header["intent_code"]) == NIFTI_INTENT_LABEL
    disk = np.asarray(out.dataobj)
    np.testing.assert_array_equal(disk, canonical_to_disk(labels, "".join(info.axcodes)))
    (ijk,) = np.argwhere(disk == 700)
    world_out = out.affine @ [*ijk, 1]
    np.testing.assert_allclose(world_out, info.canonical_affine @ [*LABEL_AT, 1], atol=1e-6)
    back = open_label_volume(path, info)
    got, _ = _stream(back, max_voxels=10**6)
    np.testing.assert_array_equal(got[..., 0], labels)


@pytest.mark.parametrize("axcodes", ["LPS", "PLS", "SAR", "IRP"])
@pytest.mark.parametrize("oblique_deg", [0.0, 20.0])
def test_canonical_affine_maps_every_voxel_to_its_world_point(tmp_path: Path, axcodes: str,
                                                              oblique_deg: float) -> None:
    affine = orientation_affine(axcodes, (0.7, 0.9, 3.0), (5.0, -7.0, 11.0),
                                oblique_deg=oblique_deg)
    path = write_nifti(tmp_path / "v.nii", np.zeros((4, 5, 6), np.uint8), affine)
    info = open_volume(path)
    disk_index = np.arange(4 * 5 * 6).reshape((4, 5, 6))
    canonical_index = info.to_canonical(disk_index)  # disk linear index at each (z, y, x)
    zyx = np.indices(info.shape).reshape(3, -1)
    ijk = np.array(np.unravel_index(canonical_index.ravel(), (4, 5, 6)))
    ones = np.ones((1, zyx.shape[1]))
    world_disk = np.asarray(info.affine) @ np.vstack([ijk, ones])
    world_canon = info.canonical_affine @ np.vstack([zyx, ones])
    np.testing.assert_allclose(world_canon, world_disk, atol=1e-9)
    np.testing.assert_array_equal(info.to_disk(canonical_index), disk_index)
    region = (slice(1, 3), slice(0, 4), slice(2, 4))  # inside every shape here
    disk = info.disk_slices(region)
    np.testing.assert_array_equal(info.to_canonical(disk_index[disk]), canonical_index[region])
    assert info.canonical_slices(disk) == region


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_four_d_channels(tmp_path: Path, suffix: str) -> None:
    rng = np.random.default_rng(1)
    canon = rng.integers(0, 30000, (*CANONICAL_SHAPE, 2)).astype(np.uint16)
    info = open_volume(write_canonical(tmp_path / f"two{suffix}", canon, axcodes="LPS"))
    assert info.channels == 2 and info.shape == CANONICAL_SHAPE
    got, blocks = _stream(info, max_voxels=1)
    np.testing.assert_array_equal(got, canon)
    positions = [pos for pos, _, _ in blocks]
    assert positions == [0] * 5 + [1] * 5  # channel outer loop, 5 k-planes each
    only_second, _ = _stream(info, max_voxels=100, channels=[1])
    np.testing.assert_array_equal(only_second[..., 0], canon[..., 1])
    reversed_, blocks = _stream(info, max_voxels=10**6, channels=[1, 0])
    assert [pos for pos, _, _ in blocks] == [1, 0]  # file order, position in the selection
    np.testing.assert_array_equal(reversed_, canon[..., ::-1])
    with VolumeReader(info, channels=[1]) as reader:
        region = (slice(1, 4), slice(2, 6), slice(0, 3))
        np.testing.assert_array_equal(reader.read(region), canon[(*region, 1)])
    for bad in ([2], [-1], [0, 0]):
        with pytest.raises(InputError, match="has 2 channel") as err:
            VolumeReader(info, channels=bad)
        assert f"two{suffix}" in str(err.value)


BROKEN_REASONS = {
    "zero-byte": "empty file",
    "not-nifti": "not a NIfTI file",
    "text": "text file",
    "header-only": "header without image data",
    "truncated": "truncated",
    "truncated-gzip": "truncated",
    "cifti": "CIFTI-2",
    "absurd-size": "absurd image size",
    "five-d": "5-D image",
    "singular-affine": "singular affine",
    "non-finite-affine": "non-finite affine",
    "complex": "complex data type",
    "rgb": "RGB",
}


@pytest.mark.parametrize("kind, suffix", [
    (kind, suffix) for kind in BROKEN_KINDS for suffix in (".nii", ".nii.gz")
    if not (kind == "truncated-gzip" and suffix == ".nii")])
def test_broken_files_give_one_input_error(tmp_path: Path, kind: str, suffix: str) -> None:
    path = write_broken(tmp_path / f"bad-{kind}{suffix}", kind)
    with pytest.raises(InputError) as err:
        info = open_volume(path)
        _stream(info, max_voxels=10**6)  # a truncation not seen at open must surface here
    message = str(err.value)
    assert path.name in message and BROKEN_REASONS[kind] in message
    if kind == "absurd-size":  # states the declared size and the file size
        assert "54000000000000 bytes" in message
        assert f"{path.stat().st_size} bytes" in message


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_truncated_after_open_fails_mid_stream(tmp_path: Path, suffix: str) -> None:
    data = np.random.default_rng(2).integers(0, 2**15, (64, 16, 16)).astype(np.int16)
    path = write_canonical(tmp_path / f"cut{suffix}", data)
    info = open_volume(path)
    full = path.read_bytes()
    path.write_bytes(full[: len(full) * 2 // 3])
    with VolumeReader(info) as reader:
        stream = reader.blocks(max_voxels=256)
        next(stream)  # the start of the file is intact
        with pytest.raises(InputError, match="truncated") as err:
            list(stream)
    assert path.name in str(err.value)


class _CountingGzipFile(gzip.GzipFile):
    opened: list[str] = []
    decompressed = 0

    def __init__(self, filename: Any = None, mode: Any = None, *args: Any, **kw: Any) -> None:
        super().__init__(filename, mode, *args, **kw)
        _CountingGzipFile.opened.append(str(filename))

    def read(self, size: int = -1) -> bytes:
        data = super().read(size)
        _CountingGzipFile.decompressed += len(data)
        return data


def test_streaming_is_bounded_and_decompresses_once(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    data = np.random.default_rng(3).integers(0, 1000, (64, 16, 24)).astype(np.int16)
    path = write_canonical(tmp_path / "big.nii.gz", data, axcodes="PLS")
    info = open_volume(path)
    uncompressed = len(gzip.decompress(path.read_bytes()))
    monkeypatch.setattr(gzip, "GzipFile", _CountingGzipFile)
    _CountingGzipFile.opened, _CountingGzipFile.decompressed = [], 0
    plane = info.disk_shape[0] * info.disk_shape[1]
    got, blocks = _stream(info, max_voxels=plane + plane // 2)  # one plane per slab
    np.testing.assert_array_equal(got[..., 0], data)
    assert len(blocks) == 64
    assert all(block.size <= max(plane + plane // 2, plane) for _, _, block in blocks)
    assert _CountingGzipFile.opened == [str(path)]
    assert _CountingGzipFile.decompressed == uncompressed  # O(file size), nothing re-read


@pytest.mark.parametrize("max_voxels", [1, 100, 1000, 10**9])
def test_block_sizes_respect_max_voxels(tmp_path: Path, max_voxels: int) -> None:
    data = np.arange(10 * 12 * 9, dtype=np.int32).reshape(10, 12, 9)
    info = open_volume(write_canonical(tmp_path / "v.nii", data, axcodes="SAR"))
    plane = info.disk_shape[0] * info.disk_shape[1]
    got, blocks = _stream(info, max_voxels=max_voxels)
    np.testing.assert_array_equal(got[..., 0], data)
    assert all(block.size <= max(max_voxels, plane) for _, _, block in blocks)
    assert len(blocks) == -(-info.disk_shape[2] // max(1, max_voxels // plane))


def _scene(tmp_path: Path) -> VolumeInfo:
    return open_volume(write_canonical(tmp_path / "scene.nii", np.zeros(CANONICAL_SHAPE, np.int16),
                                       axcodes="LPS", spacing=(2.0, 1.0, 1.0)))


@pytest.mark.parametrize("problem, reason", [
    ("shape", "not on the scene's grid"),
    ("affine", "not on the scene's grid"),
    ("float", "integer data type"),
    ("scaled", "integer data type"),
    ("channels", "3 channels"),
])
def test_label_volume_must_match_the_scene(tmp_path: Path, problem: str, reason: str) -> None:
    scene = _scene(tmp_path)
    shape, kw = CANONICAL_SHAPE, dict(axcodes="LPS", spacing=(2.0, 1.0, 1.0))
    dtype: Any = np.uint16
    if problem == "shape":
        shape = (5, 6, 8)
    elif problem == "affine":
        kw["origin"] = (0.0, 0.0, 0.5)
    elif problem == "float":
        dtype = np.float32
    elif problem == "scaled":
        kw["scl_slope"] = 2.0
    elif problem == "channels":
        shape = (*shape, 3)
    path = write_canonical(tmp_path / "labels.nii.gz", np.zeros(shape, dtype), **kw)
    with pytest.raises(InputError, match=reason) as err:
        open_label_volume(path, scene)
    assert "labels.nii.gz" in str(err.value)
    if problem in ("shape", "affine"):
        assert "scene.nii" in str(err.value)


def test_label_volume_with_class_and_instance_channels(tmp_path: Path) -> None:
    scene = _scene(tmp_path)
    labels = np.zeros((*CANONICAL_SHAPE, 2), np.int32)
    labels[LABEL_AT] = (3, 12)
    path = write_canonical(tmp_path / "labels.nii", labels, axcodes="LPS", spacing=(2.0, 1.0, 1.0))
    info = open_label_volume(path, scene)
    assert info.channels == 2
    got, _ = _stream(info, max_voxels=10**6)
    np.testing.assert_array_equal(got, labels)


@pytest.mark.parametrize("version", [1, 2])
def test_label_writer_from_4d_big_endian_input(tmp_path: Path, version: int) -> None:
    canon = np.ones((*CANONICAL_SHAPE, 3), np.float32)
    path = write_canonical(tmp_path / "in.nii", canon, axcodes="PLS", version=version,
                           big_endian=True, xyzt_units="micron", spacing=(900.0, 800.0, 700.0))
    info = open_volume(path)
    labels = np.zeros(CANONICAL_SHAPE, np.int64)
    labels[LABEL_AT] = 2**40
    out = tmp_path / "out.nii"
    write_label_volume(out, info, lambda s: labels[s], np.int64)
    img = nib.load(out)
    _assert_same_grid(img, nib.load(path))
    assert img.header.endianness == "<" and img.header["dim"][0] == 3
    assert img.dataobj.offset == (352 if version == 1 else 544)
    with open(out, "rb") as fh:  # nibabel's loaded header hides the stored scaling
        stored = type(img.header).from_fileobj(fh)
    assert float(stored["scl_slope"]) == 1.0 and float(stored["scl_inter"]) == 0.0
    assert float(stored["cal_min"]) == 0.0 and float(stored["cal_max"]) == 0.0
    np.testing.assert_array_equal(np.asarray(img.dataobj), canonical_to_disk(labels, "PLS"))


def test_label_writer_is_atomic(tmp_path: Path) -> None:
    scene = _scene(tmp_path)
    calls = []

    def failing(slices: tuple[slice, ...]) -> np.ndarray:
        calls.append(slices)
        if len(calls) == 3:
            raise RuntimeError("zarr read failed")
        return np.zeros(tuple(s.stop - s.start for s in slices), np.uint8)

    before = sorted(os.listdir(tmp_path))
    with pytest.raises(RuntimeError, match="zarr read failed"):
        write_label_volume(tmp_path / "out.nii.gz", scene, failing, "uint8", max_voxels=1)
    too_big = np.full(CANONICAL_SHAPE, 300, np.int32)
    with pytest.raises(ConfigError, match="do not fit in uint8"):
        write_label_volume(tmp_path / "out.nii", scene, lambda s: too_big[s], "uint8")
    with pytest.raises(ConfigError, match="integer label dtype"):
        write_label_volume(tmp_path / "out.nii", scene, lambda s: too_big[s], "float32")
    assert sorted(os.listdir(tmp_path)) == before


def test_info_attrs_round_trip_and_write_without_the_input(tmp_path: Path) -> None:
    data = np.zeros((*CANONICAL_SHAPE, 2), np.int16)
    path = write_canonical(tmp_path / "in.nii.gz", data, axcodes="LAS", version=2)
    info = open_volume(path)
    attrs = json.loads(json.dumps(info.to_attrs()))
    assert VolumeInfo.from_attrs(attrs) == info
    assert attrs["shape"] == list(CANONICAL_SHAPE) and attrs["channels"] == 2
    reference = nib.load(path)
    path.unlink()  # the header travels with the attrs
    labels = np.ones(CANONICAL_SHAPE, np.uint8)
    write_label_volume(tmp_path / "out.nii.gz", VolumeInfo.from_attrs(attrs),
                       lambda s: labels[s], "uint8")
    _assert_same_grid(nib.load(tmp_path / "out.nii.gz"), reference)
    with pytest.raises(ConfigError, match="missing|expected keys"):
        VolumeInfo.from_attrs({"path": "x"})


def test_missing_and_gzip_named_plain(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="file not found"):
        open_volume(tmp_path / "nope.nii")
    data = np.arange(5 * 6 * 7, dtype=np.uint8).reshape(CANONICAL_SHAPE)
    plain = write_canonical(tmp_path / "plain.nii", data)
    renamed = plain.rename(tmp_path / "actually-plain.nii.gz")  # compression is sniffed
    info = open_volume(renamed)
    assert not info.compressed
    np.testing.assert_array_equal(_stream(info, 10**6)[0][..., 0], data)
