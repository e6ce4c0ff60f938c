"""GeoTIFF adapter and COG export: conformance, broken files, atomic export."""

from __future__ import annotations

import json
import math
import os
import struct
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import Affine

from pipeline.io.cog import OverviewResampling, write_cog
from pipeline.io.geotiff import (
    GeoTiffReader,
    RasterInfo,
    open_raster,
    read_valid_mask,
    read_window,
    valid_mask_from_array,
)
from segcore.errors import ConfigError, InputError

H, W, C = 48, 64, 3
PROJECTED = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 6000000.0)
GEOGRAPHIC = Affine(1e-4, 0.0, 15.0, 0.0, -1e-4, 60.0)
ROTATED = Affine(8.660254037844387, -5.0, 500000.0, -5.0, -8.660254037844387, 6000000.0)

# --------------------------------------------------------------------------- helpers


def _write(path: Path, data: np.ndarray, **profile: Any) -> Path:
    """Write ``(C, H, W)`` data as a GeoTIFF; keyword args override the profile."""
    base = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                dtype=data.dtype.name, crs="EPSG:32633", transform=PROJECTED, tiled=True,
                blockxsize=16, blockysize=16, compress="deflate")
    base.update(profile)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **base) as ds:
            ds.write(data)
    return path


def _scene(dtype: str, nodata: float | None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded ``(C, H, W)`` data and its expected ``(H, W)`` validity.

    Some pixels are nodata in every band (invalid), some in one band only
    (valid unless nodata is NaN), and float data has NaN pixels in one band
    (always invalid).
    """
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype) if np.issubdtype(np.dtype(dtype), np.integer) else None
    hi = 250 if info is None else min(int(info.max), 5000)
    data = rng.integers(1, hi, size=(C, H, W)).astype(dtype)
    all_nd, one_nd, nan_px = (rng.random((H, W)) < p for p in (0.1, 0.1, 0.05))
    invalid = np.zeros((H, W), dtype=bool)
    if nodata is not None:
        data[:, all_nd] = nodata
        data[1, one_nd & ~all_nd] = nodata
        invalid |= all_nd
        if math.isnan(nodata):
            invalid |= one_nd
    if info is None:
        data[0, nan_px] = np.nan
        invalid |= nan_px
    return data, ~invalid


def _patch_tag(path: Path, tag: int, value: int, index: int = 0) -> None:
    """Overwrite an inline integer value of IFD0 (classic little-endian TIFF)."""
    with open(path, "r+b") as fh:
        head = fh.read(8)
        assert head[:4] == b"II*\x00"
        (offset,) = struct.unpack("<I", head[4:])
        fh.seek(offset)
        (n,) = struct.unpack("<H", fh.read(2))
        for i in range(n):
            pos = offset + 2 + 12 * i
            fh.seek(pos)
            found, typ, _ = struct.unpack("<HHI", fh.read(8))
            if found != tag:
                continue
            if typ == 3 and value > 0xFFFF:  # SHORT too small: make it a LONG
                fh.seek(pos + 2)
                fh.write(struct.pack("<HII", 4, 1, value))
            else:
                fh.seek(pos + 8 + index * (2 if typ == 3 else 4))
                fh.write(struct.pack("<H" if typ == 3 else "<I", value))
            return
    raise KeyError(tag)


def _nan_equal(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return a == b or (math.isnan(a) and math.isnan(b))


# --------------------------------------------------------------------------- conformance

CASES = [
    (dtype, nodata, crs)
    for dtype, nodatas in (("uint8", (None, 0, 255)), ("uint16", (None, 0, 255)),
                           ("float32", (None, 0, -9999.0, math.nan)))
    for nodata in nodatas
    for crs in ("EPSG:32633", "EPSG:4326")
]


@pytest.fixture(params=CASES + [("uint16", 0, "rotated")], ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}")
def scene(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    dtype, nodata, crs = request.param
    transform = {"EPSG:32633": PROJECTED, "EPSG:4326": GEOGRAPHIC, "rotated": ROTATED}[crs]
    crs = "EPSG:32633" if crs == "rotated" else crs
    data, valid = _scene(dtype, nodata)
    path = _write(tmp_path / "scene.tif", data, crs=crs, transform=transform, nodata=nodata)
    return dict(path=path, data=data, valid=valid, dtype=dtype, nodata=nodata, crs=crs,
                transform=transform)


def test_open_raster_describes_the_file(scene: dict[str, Any]) -> None:
    info = open_raster(scene["path"])
    assert (info.width, info.height, info.count, info.shape) == (W, H, C, (H, W))
    assert info.dtype == scene["dtype"]
    assert CRS.from_wkt(info.crs_wkt) == CRS.from_string(scene["crs"])
    assert info.transform == pytest.approx(tuple(scene["transform"])[:6], rel=1e-15)
    assert _nan_equal(info.nodata, scene["nodata"])
    assert info.block_shape == (16, 16)
    assert info.is_geographic is (scene["crs"] == "EPSG:4326")
    assert info.linear_unit_m == (None if info.is_geographic else 1.0)
    again = RasterInfo.from_attrs(json.loads(json.dumps(info.to_attrs(), allow_nan=False)))
    assert again.to_attrs() == info.to_attrs()


def test_read_window_returns_what_was_written(scene: dict[str, Any]) -> None:
    data = scene["data"]
    rows, cols = slice(5, 37), slice(3, 61)
    np.testing.assert_array_equal(read_window(scene["path"], (rows, cols)), data[:, rows, cols])
    with rasterio.open(scene["path"]) as ds:
        got = read_window(ds, rasterio.windows.Window(3, 5, 58, 32), bands=[3, 1])
    np.testing.assert_array_equal(got, data[[2, 0], rows, cols])
    assert got.dtype == np.dtype(scene["dtype"])


def test_read_valid_mask_is_right(scene: dict[str, Any]) -> None:
    window = (slice(0, H), slice(0, W))
    np.testing.assert_array_equal(read_valid_mask(scene["path"], window), scene["valid"])
    with GeoTiffReader(scene["path"], bands=[2, 3]) as reader:
        data, valid = reader.read_with_valid(window)
        np.testing.assert_array_equal(data, scene["data"][1:])
        np.testing.assert_array_equal(valid, reader.valid(window))
        expected = valid_mask_from_array(scene["data"][1:], scene["nodata"])
        np.testing.assert_array_equal(valid, expected)


@pytest.mark.parametrize("nodata", [0, 255])
@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_integer_mask_equals_gdal_dataset_mask(tmp_path: Path, dtype: str, nodata: int) -> None:
    data, valid = _scene(dtype, nodata, seed=3)
    path = _write(tmp_path / "m.tif", data, nodata=nodata)
    with rasterio.open(path) as ds:
        np.testing.assert_array_equal(ds.dataset_mask() > 0, valid)


@pytest.mark.parametrize("nodata", [-9999.0, math.nan])
def test_gdal_mask_misses_nan_pixels_ours_does_not(tmp_path: Path, nodata: float) -> None:
    """Why read_valid_mask does not use GDAL's dataset mask for float data."""
    data, valid = _scene("float32", nodata, seed=4)
    path = _write(tmp_path / "m.tif", data, nodata=nodata)
    with rasterio.open(path) as ds:
        gdal = ds.dataset_mask() > 0
        ours = read_valid_mask(ds, (slice(0, H), slice(0, W)))
    np.testing.assert_array_equal(ours, valid)
    assert (gdal & ~valid).any()  # GDAL calls partially-NaN pixels valid


def test_internal_mask_band_is_honoured(tmp_path: Path) -> None:
    data = np.full((1, 32, 32), 7, dtype=np.uint8)
    path = tmp_path / "masked.tif"
    with rasterio.open(path, "w", driver="GTiff", width=32, height=32, count=1, dtype="uint8",
                       crs="EPSG:32633", transform=PROJECTED) as ds:
        ds.write(data)
        mask = np.full((32, 32), 255, dtype=np.uint8)
        mask[:8] = 0
        ds.write_mask(mask)
    with GeoTiffReader(path) as reader:
        valid = reader.valid((slice(0, 32), slice(0, 32)))
    assert not valid[:8].any() and valid[8:].all()


def test_reader_validates_bands_and_windows(tmp_path: Path) -> None:
    data, _ = _scene("uint8", None)
    path = _write(tmp_path / "s.tif", data)
    with pytest.raises(ConfigError, match=r"1\.\.3.*s\.tif"):
        GeoTiffReader(path, bands=[0, 4])
    with GeoTiffReader(path) as reader:
        assert reader.bands == [1, 2, 3] and reader.info.shape == (H, W)
        for bad in [(slice(0, H + 1), slice(0, 4)), (slice(None, 4), slice(0, 4)),
                    (slice(0, 4, 2), slice(0, 4)), (slice(4, 4), slice(0, 4)), slice(0, 4)]:
            with pytest.raises(ConfigError, match="window"):
                reader.read(bad)  # type: ignore[arg-type]


def test_unreferenced_file_allowed_when_crs_not_required(tmp_path: Path) -> None:
    data, _ = _scene("uint8", None)
    path = _write(tmp_path / "plain.tif", data, crs=None, transform=None)
    info = open_raster(path, require_crs=False)
    assert info.crs_wkt == "" and not info.is_geographic and info.linear_unit_m is None


# --------------------------------------------------------------------------- TIFF layouts

LAYOUTS = {
    "tiled-pixel": {},
    "tiled-band": {"interleave": "band"},
    "striped": {"tiled": False, "blockysize": 5},
    "bigtiff": {"bigtiff": "YES"},
    "big-endian": {"endianness": "BIG"},
    "sparse": {"sparse_ok": True, "nodata": 0},
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layouts_open_and_truncation_is_detected(tmp_path: Path, layout: str) -> None:
    data = np.random.default_rng(1).integers(1, 255, size=(C, H, W), dtype=np.uint8)
    data[:, :16, :32] = 0  # two empty blocks: not written at all when sparse
    path = _write(tmp_path / f"{layout}.tif", data, compress=None, **LAYOUTS[layout])
    assert open_raster(path).shape == (H, W)
    np.testing.assert_array_equal(read_window(path, (slice(0, H), slice(0, W))), data)
    size = os.path.getsize(path)
    os.truncate(path, size - 100)
    with pytest.raises(InputError) as err:
        open_raster(path)
    assert str(err.value).startswith(f"{path}: truncated: file is {size - 100} bytes")
    assert "block data extends to" in str(err.value)


def test_open_raster_is_fast_on_a_large_tiled_scene(tmp_path: Path) -> None:
    path = tmp_path / "large.tif"
    with rasterio.open(path, "w", driver="GTiff", width=16384, height=16384, count=3,
                       dtype="uint8", crs="EPSG:32633", transform=PROJECTED, tiled=True,
                       blockxsize=256, blockysize=256, compress="deflate", interleave="band",
                       sparse_ok=False):
        pass  # every block is written (zeros) at close
    start = time.perf_counter()
    info = open_raster(path)
    elapsed = time.perf_counter() - start
    assert info.shape == (16384, 16384) and info.count == 3
    assert elapsed < 1.0, f"open_raster took {elapsed:.3f} s for 12288 blocks"
    os.truncate(path, os.path.getsize(path) - 10)
    with pytest.raises(InputError, match="truncated"):
        open_raster(path)


# --------------------------------------------------------------------------- broken files


def _broken(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.tif"
    small, _ = _scene("uint8", None)
    if kind == "missing":
        return path
    if kind == "empty":
        path.touch()
    elif kind == "text":
        path.write_text("id,value\n1,2\n")
    elif kind in ("png", "jpeg"):
        src = _write(tmp_path / "src.tif", small, crs=None, transform=None, tiled=False)
        rasterio.shutil.copy(src, path, driver=kind.upper())
    elif kind == "truncated-header":
        _write(path, small)
        os.truncate(path, 20)
    elif kind == "65535-bands":  # a real header GDAL writes (and would open)
        with rasterio.open(path, "w", driver="GTiff", width=1, height=1, count=65535,
                           dtype="uint8", crs="EPSG:32633", transform=PROJECTED):
            pass  # writing 65535 bands one by one takes minutes; GDAL fills them at close
    elif kind == "65535-bands-patched":
        _write(path, small[:1], compress=None)
        _patch_tag(path, 277, 65535)
    elif kind in ("huge-width", "huge-size", "block-table", "mixed-dtypes"):
        _write(path, small[:2], compress=None)
        if kind == "huge-width":
            _patch_tag(path, 256, 2**31 + 5)
        elif kind == "huge-size":
            _patch_tag(path, 256, 2**30)
            _patch_tag(path, 257, 2**30)
        elif kind == "block-table":
            _patch_tag(path, 256, 2**20)
        else:
            _patch_tag(path, 258, 16, index=1)
    elif kind == "unknown-codec":
        _write(path, small, compress=None)
        _patch_tag(path, 259, 12345)  # Compression
    elif kind == "mixed-sample-formats":
        _write(path, small[:2].astype(np.float32), compress=None)
        _patch_tag(path, 339, 1, index=1)  # SampleFormat: band 2 unsigned int
    elif kind == "int8":
        _write(path, small.astype(np.int8))
    elif kind == "no-crs":
        _write(path, small, crs=None, transform=None)
    elif kind == "gcps-only":
        gcps = [GroundControlPoint(0, 0, 15.0, 60.0), GroundControlPoint(0, W, 15.1, 60.0),
                GroundControlPoint(H, 0, 15.0, 59.9)]
        _write(path, small, crs=None, transform=None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path, "r+") as ds:
                ds.gcps = (gcps, CRS.from_epsg(4326))
    elif kind == "singular-transform":
        _write(path, small, transform=Affine(10.0, 0.0, 0.0, 0.0, 0.0, 0.0))
    return path


BROKEN = {
    "missing": "file not found",
    "empty": "empty file (0 bytes)",
    "text": "not a GeoTIFF: it looks like a text file",
    "png": "not a GeoTIFF: it is a PNG image",
    "jpeg": "not a GeoTIFF: it is a JPEG image",
    "truncated-header": "truncated",
    "65535-bands": "absurd header: 65535 bands",
    "65535-bands-patched": "absurd header: 65535 bands",
    "huge-width": f"absurd header: width is {2**31 + 5} pixels",
    "huge-size": f"declared uncompressed size {2**61} bytes",
    "block-table": "the block table lists",
    "mixed-dtypes": "differing data types (bits per sample [8, 16])",
    "mixed-sample-formats": "differing data types (sample format [1, 3])",
    "unknown-codec": "GDAL cannot open this TIFF: Cannot open TIFF file due to missing codec",
    "int8": "unsupported data type int8",
    "no-crs": "has no CRS",
    "gcps-only": "only ground control points",
    "singular-transform": "non-invertible geotransform",
}


@pytest.mark.parametrize("kind", BROKEN)
def test_broken_file_gives_one_clear_input_error(tmp_path: Path, kind: str) -> None:
    path = _broken(tmp_path, kind)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one error, no side warnings
        with pytest.raises(InputError) as err:
            open_raster(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ")
    assert BROKEN[kind] in message
    assert "\n" not in message
    assert err.value.path == str(path)
    assert isinstance(err.value, ValueError)


# --------------------------------------------------------------------------- COG export


class StripSource:
    """Array-like over a numpy array that records reads and can fail on one."""

    def __init__(self, array: np.ndarray, fail_on: int | None = None) -> None:
        self.array, self.fail_on, self.reads = array, fail_on, []  # type: list[Any]
        self.shape, self.dtype = array.shape, array.dtype

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        self.reads.append(key)
        if self.fail_on is not None and len(self.reads) == self.fail_on:
            raise RuntimeError("source failed")
        return self.array[key]


@pytest.fixture
def grid(tmp_path: Path) -> RasterInfo:
    data = np.zeros((1, 1030, 1100), dtype=np.uint8)
    return open_raster(_write(tmp_path / "grid.tif", data, blockxsize=256, blockysize=256))


def _labels(shape: tuple[int, int], values: list[int], dtype: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.choice(values, size=(shape[0] // 10 + 1, shape[1] // 10 + 1))
    return np.kron(coarse, np.ones((10, 10), dtype=int))[: shape[0], : shape[1]].astype(dtype)


@pytest.mark.parametrize(("dtype", "nodata", "resampling"),
                         [("uint8", 255, "nearest"), ("uint16", 65535, "mode"),
                          ("uint32", 0, "nearest")])
def test_cog_round_trip(tmp_path: Path, grid: RasterInfo, dtype: str, nodata: int,
                        resampling: str) -> None:
    values = [0, 10, 200, nodata] if dtype == "uint8" else [0, 10, 200, 70000 % 65535, nodata]
    labels = _labels(grid.shape, values, dtype)
    source = StripSource(labels)
    dst = tmp_path / "out.tif"
    write_cog(dst, source, info=grid, dtype=dtype, nodata=nodata, resampling=resampling,
              block_rows=300)
    # bounded square blocks (never whole, never full-width strips), covering each pixel once
    assert all(k[0].stop - k[0].start <= 512 and k[1].stop - k[1].start <= 512
               for k in source.reads)
    area = sum((k[0].stop - k[0].start) * (k[1].stop - k[1].start) for k in source.reads)
    assert area == grid.height * grid.width
    with rasterio.open(dst) as ds:
        assert ds.driver == "GTiff" and ds.profile["tiled"] and ds.block_shapes == [(512, 512)]
        assert (ds.width, ds.height) == (grid.width, grid.height)
        assert ds.crs == CRS.from_wkt(grid.crs_wkt)
        assert tuple(ds.transform)[:6] == grid.transform
        assert ds.nodata == nodata and ds.dtypes[0] == dtype
        assert ds.overviews(1), "a >= 1024 px COG must have overviews"
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT", "COG") == "COG"
        assert ds.tags(ns="IMAGE_STRUCTURE").get("COMPRESSION") == "DEFLATE"
        np.testing.assert_array_equal(ds.read(1), labels)
        assert not ds.dataset_mask()[labels == nodata].any()
    with rasterio.open(dst, overview_level=0) as ov:
        assert set(np.unique(ov.read(1))) <= set(values)  # never averaged
    assert sorted(os.listdir(tmp_path)) == ["grid.tif", "out.tif"]


def test_cog_keeps_geographic_and_rotated_grids(tmp_path: Path) -> None:
    for name, crs, transform in (("geo", "EPSG:4326", GEOGRAPHIC), ("rot", "EPSG:32633", ROTATED)):
        info = open_raster(_write(tmp_path / f"{name}.tif", np.zeros((1, 40, 50), np.uint8),
                                  crs=crs, transform=transform))
        labels = _labels(info.shape, [1, 2, 255], "uint8")
        write_cog(tmp_path / f"{name}_cog.tif", labels, info=info, dtype="uint8", nodata=255,
                  blocksize=16)
        with rasterio.open(tmp_path / f"{name}_cog.tif") as ds:
            assert ds.crs == CRS.from_string(crs)
            assert tuple(ds.transform)[:6] == pytest.approx(tuple(transform)[:6], rel=1e-15)
            np.testing.assert_array_equal(ds.read(1), labels)


def test_cog_failure_leaves_destination_untouched(tmp_path: Path, grid: RasterInfo) -> None:
    dst = tmp_path / "out.tif"
    dst.write_bytes(b"previous export")
    before = sorted(os.listdir(tmp_path))
    source = StripSource(_labels(grid.shape, [1, 2], "uint8"), fail_on=3)
    with pytest.raises(RuntimeError, match="source failed"):
        write_cog(dst, source, info=grid, dtype="uint8", nodata=255, block_rows=256)
    assert dst.read_bytes() == b"previous export"
    assert sorted(os.listdir(tmp_path)) == before


def test_cog_rejects_bad_arguments(tmp_path: Path, grid: RasterInfo) -> None:
    labels = np.zeros(grid.shape, dtype=np.int64)
    dst = tmp_path / "out.tif"
    with pytest.raises(ConfigError, match="did you mean 'nearest'"):
        write_cog(dst, labels, info=grid, dtype="uint8", nodata=255, resampling="neares")
    with pytest.raises(ConfigError, match="must not be averaged"):
        write_cog(dst, labels, info=grid, dtype="uint8", nodata=255, resampling="average")
    with pytest.raises(ConfigError, match="shape"):
        write_cog(dst, labels[:-1], info=grid, dtype="uint8", nodata=255)
    with pytest.raises(ConfigError, match="nodata"):
        write_cog(dst, labels, info=grid, dtype="uint8", nodata=-1)
    with pytest.raises(ConfigError, match="blocksize"):
        write_cog(dst, labels, info=grid, dtype="uint8", nodata=255, blocksize=100)
    with pytest.raises(ConfigError, match="directory"):
        write_cog(tmp_path / "nowhere" / "x.tif", labels, info=grid, dtype="uint8", nodata=255)
    labels[700, 3] = 300
    with pytest.raises(ConfigError, match=r"values 0\.\.300 that do not fit uint8"):
        write_cog(dst, labels, info=grid, dtype="uint8", nodata=255)
    assert sorted(os.listdir(tmp_path)) == ["grid.tif"]
    assert OverviewResampling.parse("MODE") is OverviewResampling.MODE
    assert Resampling.nearest.name == OverviewResampling.NEAREST.value


def test_cog_from_zarr_and_float_data(tmp_path: Path) -> None:
    zarr = pytest.importorskip("zarr")
    info = open_raster(_write(tmp_path / "g.tif", np.zeros((1, 70, 90), np.float32)))
    labels = _labels(info.shape, [1, 7, 9], "uint16").astype(np.float32)
    labels[:5] = np.nan
    array = zarr.create_array(store=zarr.storage.MemoryStore(), shape=info.shape,
                              chunks=(32, 32), dtype="float32")
    array[:] = labels
    write_cog(tmp_path / "f.tif", array, info=info, dtype="float32", nodata=math.nan,
              blocksize=32, block_rows=40)
    with rasterio.open(tmp_path / "f.tif") as ds:
        assert math.isnan(ds.nodata) and ds.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == "3"
        np.testing.assert_array_equal(ds.read(1), labels)
        assert ds.overviews(1)
