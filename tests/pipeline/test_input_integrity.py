"""Integrity of compressed inputs: damage is found and reported as one line naming the file.

``.nii.gz``: each case starts from a real nibabel-written file and damages its bytes the
way disks, copies and downloads do: a flipped CRC byte (the deflate stream still
decodes), a flipped ISIZE byte, a stream cut short, a corrupted deflate block.
GeoTIFF: a DEFLATE tile with a flipped byte (GDAL's decoder checks the zlib stream).
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from flows.cli import app
from pipeline.formats.geotiff import copy_bands
from pipeline.io.geotiff import open_raster
from pipeline.io.nifti import VolumeReader, open_volume
from segcore.errors import InputError

SHAPE = (40, 48, 44)


def _write(path: Path, seed: int = 0) -> Path:
    """A real gzip-compressed NIfTI-1 written by nibabel (noise: many deflate blocks)."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 400, SHAPE).astype(np.int16)
    nib.save(nib.Nifti1Image(data, np.diag([1.5, 1.5, 1.5, 1.0])), str(path))
    return path


def _damage(path: Path, kind: str) -> Path:
    data = bytearray(path.read_bytes())
    if kind == "crc":
        data[-8] ^= 0xFF  # first byte of the CRC-32 trailer
    elif kind == "isize":
        data[-4] ^= 0x01  # low byte of the uncompressed length
    elif kind == "truncated":
        del data[len(data) * 3 // 5:]
    elif kind == "deflate":
        data[len(data) // 2] ^= 0x10  # one bit in the middle of the compressed data
    path.write_bytes(bytes(data))
    return path


def _ingest(path: Path) -> int:
    """What ingest does: open, then stream every block once; returns the voxels read."""
    info = open_volume(path)
    with VolumeReader(info) as reader:
        return sum(block.size for _, _, block in reader.blocks(max_voxels=20_000))


def test_intact_file_streams_completely(tmp_path: Path) -> None:
    assert _ingest(_write(tmp_path / "good.nii.gz")) == np.prod(SHAPE)


@pytest.mark.parametrize("kind, reason", [
    ("crc", "crc check failed"),
    ("isize", "length"),
    ("truncated", "truncated"),
    ("deflate", "corrupt"),
])
def test_damaged_gzip_gives_one_line_naming_the_file(tmp_path: Path, kind: str,
                                                     reason: str) -> None:
    path = _damage(_write(tmp_path / f"{kind}.nii.gz"), kind)
    with pytest.raises(InputError) as err:
        _ingest(path)
    message = str(err.value)
    assert str(path) in message and "\n" not in message, message
    assert reason in message.lower(), message


def test_bad_crc_is_found_after_the_data_decoded(tmp_path: Path) -> None:
    """The deflate stream is intact: opening succeeds and every voxel decodes; only the
    trailer check at the end of the stream can tell, and it does."""
    path = _damage(_write(tmp_path / "crc.nii.gz"), "crc")
    info = open_volume(path)
    seen = 0
    with VolumeReader(info) as reader, pytest.raises(InputError, match="CRC check failed"):
        for _, _, block in reader.blocks(max_voxels=20_000):
            seen += block.size
    assert seen == np.prod(SHAPE)


def test_corrupt_volume_fails_only_its_scene_and_keeps_a_finished_result(
        tmp_path: Path, ray_session, prefect_harness) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    _write(inputs / "good.nii.gz", seed=1)
    bad = _damage(_write(inputs / "bad.nii.gz", seed=2), "crc")
    out = tmp_path / "out"
    finished = out / "bad"  # a result of an earlier, intact copy of the file
    finished.mkdir(parents=True)
    (finished / "report.json").write_text('{"scene_id": "previous"}')
    result = CliRunner().invoke(app, ["run", str(inputs), "--model", "demo-medical",
                                      "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [ln for ln in result.output.splitlines() if "failed" in ln and "bad" in ln]
    assert len(lines) == 1, result.output
    assert str(bad) in result.output.replace("\n", "")
    assert (finished / "report.json").read_text() == '{"scene_id": "previous"}'
    assert not (out / ".bad.partial").exists()
    assert json.loads((out / "good" / "report.json").read_text())["scene_id"] == "good"
    batch = {s["scene_id"]: s for s in json.loads((out / "batch.json").read_text())["scenes"]}
    assert batch["good"]["status"] == "ok" and batch["bad"]["status"] == "failed"
    assert "crc" in batch["bad"]["reason"].lower()


def test_corrupt_deflate_tile_of_a_geotiff_is_one_line(tmp_path: Path) -> None:
    import rasterio

    path = tmp_path / "tiles.tif"
    data = np.random.default_rng(0).integers(0, 60, (256, 256)).astype(np.uint8)
    with rasterio.open(path, "w", driver="GTiff", width=256, height=256, count=1,
                       dtype="uint8", crs="EPSG:32633", transform=rasterio.Affine(10, 0, 5e5, 0, -10, 6e6),
                       tiled=True, blockxsize=128, blockysize=128, compress="deflate") as ds:
        ds.write(data, 1)
    with rasterio.open(path) as ds:
        offset = int(ds.get_tag_item("BLOCK_OFFSET_1_1", "TIFF", bidx=1))
        size = int(ds.get_tag_item("BLOCK_SIZE_1_1", "TIFF", bidx=1))
    raw = bytearray(path.read_bytes())
    raw[offset + size // 2] ^= 0x5A
    path.write_bytes(bytes(raw))
    info = open_raster(path)  # the structure is intact
    with pytest.raises(InputError) as err:
        copy_bands(info, tmp_path / "scene.zarr", bands=[1], image_chunk=64, attrs={})
    message = str(err.value)
    assert str(path) in message and "\n" not in message, message
    assert "rows 128-256, cols 128-256" in message and "decod" in message.lower(), message
