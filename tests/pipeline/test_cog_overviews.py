"""Nearest overviews built for the COG export give the COG GDAL builds itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil
import zarr
from rasterio.crs import CRS
from rasterio.transform import Affine

from pipeline.io.cog import _cog_options, OverviewResampling, write_cog
from pipeline.io.cog_overviews import nearest_indices, overview_shapes
from pipeline.io.geotiff import RasterInfo
from pipeline.storage.chunk_io import Regions

ROTATED = (9.0, 1.5, 500000.0, 2.0, -8.0, 5200000.0)


def _info(shape, transform=ROTATED, crs="EPSG:32633") -> RasterInfo:
    return RasterInfo(path="scene.tif", width=shape[1], height=shape[0], count=1,
                      dtype="uint8", crs_wkt=CRS.from_string(crs).to_wkt(),
                      transform=transform, nodata=None, block_shape=(256, 256),
                      is_geographic=False, linear_unit_m=1.0)


def _labels(shape, dtype, seed) -> np.ndarray:
    """Noise: any other pick of pixels than GDAL's shows in the overviews."""
    top = np.iinfo(dtype).max if np.dtype(dtype).kind in "ui" else 1000
    return np.random.default_rng(seed).integers(0, min(top, 2**20), size=shape).astype(dtype)


def _gdal_cog(path: Path, labels: np.ndarray, info: RasterInfo, nodata, blocksize) -> bytes:
    """The COG with overviews computed by GDAL's COG driver itself."""
    source = path.with_suffix(".plain.tif")
    with rasterio.open(source, "w", driver="GTiff", width=info.width, height=info.height,
                       count=1, dtype=labels.dtype.name, crs=CRS.from_wkt(info.crs_wkt),
                       transform=Affine(*info.transform), nodata=nodata, tiled=True,
                       blockxsize=blocksize, blockysize=blocksize) as ds:
        ds.write(labels, 1)
    with rasterio.Env(GDAL_PAM_ENABLED="NO"):
        rasterio.shutil.copy(source, path, driver="COG", **_cog_options(
            labels.dtype.name, blocksize, OverviewResampling.NEAREST))
    return path.read_bytes()


SHAPES = [((1030, 1100), 256), ((3001, 2049), 512), ((600, 5000), 512), ((2047, 2047), 256),
          ((5000, 90), 512), ((513, 513), 512), ((200, 300), 512), ((97, 1000), 16)]
CASES = [(shape, block, "uint8", 255) for shape, block in SHAPES] + [
    ((1030, 1100), 256, "uint32", 0), ((97, 1000), 16, "uint32", 0),
    ((777, 1030), 128, "float32", -9999.0), ((97, 1000), 16, "float32", -9999.0)]


@pytest.mark.parametrize(("shape", "blocksize", "dtype", "nodata"), CASES, ids=str)
def test_cog_equals_the_one_gdal_builds(tmp_path: Path, shape, blocksize, dtype,
                                        nodata) -> None:
    labels = _labels(shape, dtype, seed=sum(shape))
    info = _info(shape)
    array = zarr.create_array(tmp_path / "a.zarr", shape=shape, chunks=(blocksize, blocksize),
                              dtype=dtype, fill_value=nodata)
    array[...] = labels
    write_cog(tmp_path / "ours.tif", Regions(array), info=info, dtype=dtype, nodata=nodata,
              blocksize=blocksize)
    expected = _gdal_cog(tmp_path / "gdal.tif", labels, info, nodata, blocksize)
    assert (tmp_path / "ours.tif").read_bytes() == expected
    with rasterio.open(tmp_path / "ours.tif") as ds:
        levels = len(ds.overviews(1))
    assert levels == len(overview_shapes(shape, blocksize))
    assert not [p for p in tmp_path.iterdir() if ".tiles." in p.name]  # temporaries gone


def test_levels_pick_gdals_pixels(tmp_path: Path) -> None:
    """Each level read back is the level above at ``nearest_indices`` (odd sizes too)."""
    shape = (1999, 1301)
    labels = _labels(shape, "uint16", seed=1)
    write_cog(tmp_path / "out.tif", labels, info=_info(shape), dtype="uint16", nodata=0,
              blocksize=128)
    above = labels
    for level, expected_shape in enumerate(overview_shapes(shape, 128)):
        with rasterio.open(tmp_path / "out.tif", overview_level=level) as ds:
            got = ds.read(1)
        assert got.shape == expected_shape
        rows, cols = (nearest_indices(a, b) for a, b in zip(above.shape, got.shape))
        np.testing.assert_array_equal(got, above[np.ix_(rows, cols)])
        above = got


def test_nearest_indices_stay_inside() -> None:
    for n_src in range(1, 300):
        for n_dst in {max(1, n_src // 2), max(1, n_src // 3), n_src}:
            index = nearest_indices(n_src, n_dst)
            assert index[0] == 0 and index[-1] < n_src and np.all(np.diff(index) > 0)
