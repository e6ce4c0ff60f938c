"""The staging GeoTIFF wrapped around a Zarr array's compressed chunks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import zarr
from rasterio.crs import CRS

from pipeline.io.chunk_tiff import write_chunk_tiff
from pipeline.io.cog import write_cog
from pipeline.io.geotiff import RasterInfo
from pipeline.storage.chunk_io import Regions

UTM = (10.0, 0.0, 500000.0, 0.0, -10.0, 5200000.0)
LONLAT = (0.001, 0.0, 14.5, 0.0, -0.001, 48.2)


def _info(shape: tuple[int, int], crs: str | None, transform=UTM) -> RasterInfo:
    return RasterInfo(path="scene.tif", width=shape[1], height=shape[0], count=1,
                      dtype="uint8", crs_wkt=CRS.from_string(crs).to_wkt() if crs else "",
                      transform=transform, nodata=None, block_shape=(256, 256),
                      is_geographic=crs == "EPSG:4326", linear_unit_m=1.0)


def _array(tmp_path: Path, shape, chunks, dtype, fill, seed=0, **kwargs) -> zarr.Array:
    """Blocky labels with a band of fill value (chunks zarr does not store)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 7, size=(shape[0] // 9 + 1, shape[1] // 9 + 1))
    labels = np.kron(coarse, np.ones((9, 9), int))[: shape[0], : shape[1]].astype(dtype)
    labels[: chunks[0]] = fill  # a whole row of chunks holds only the fill value
    array = zarr.create_array(tmp_path / "a.zarr", shape=shape, chunks=chunks, dtype=dtype,
                              fill_value=fill, **kwargs)
    array[...] = labels
    return array


@pytest.mark.parametrize(("dtype", "fill"), [("uint8", 255), ("uint16", 65535),
                                             ("uint32", 0), ("int32", -1),
                                             ("float32", -9999.0)])
@pytest.mark.parametrize(("shape", "chunks"), [((1030, 1100), (256, 256)),
                                               ((300, 200), (64, 96)),
                                               ((40, 50), (64, 64))],
                         ids=["edges", "oblong", "one-chunk"])
def test_tiles_are_the_chunks(tmp_path: Path, dtype: str, fill, shape, chunks) -> None:
    array = _array(tmp_path, shape, chunks, dtype, fill)
    path = tmp_path / "staged.tif"
    assert write_chunk_tiff(path, Regions(array), info=_info(shape, "EPSG:32633"), dtype=dtype,
                            nodata=fill)
    with rasterio.open(path) as ds:
        assert ds.dtypes[0] == dtype and ds.shape == shape and ds.nodata == fill
        assert ds.block_shapes == [chunks] and ds.compression.name == "zstd"
        assert ds.crs == CRS.from_epsg(32633) and tuple(ds.transform)[:6] == UTM
        np.testing.assert_array_equal(ds.read(1), array[...])
        offsets = {ds.get_tag_item(f"BLOCK_OFFSET_{c}_{r}", "TIFF", bidx=1)
                   for r in range(-(-shape[0] // chunks[0]))
                   for c in range(-(-shape[1] // chunks[1]))}
    # the chunks zarr did not store (the fill band) share one fill tile
    stored = sum(1 for p in (tmp_path / "a.zarr" / "c").rglob("*") if p.is_file())
    assert len(offsets) == stored + 1


@pytest.mark.parametrize("crs, transform", [("EPSG:4326", LONLAT), (None, UTM)])
def test_cog_from_chunks_equals_cog_from_blocks(tmp_path: Path, crs, transform) -> None:
    """The chunk path (zarr source) and the block path (numpy source) give the same bytes."""
    shape = (1030, 1100)
    array = _array(tmp_path, shape, (256, 256), "uint8", 255, seed=3)
    info = _info(shape, crs, transform)
    write_cog(tmp_path / "chunks.tif", Regions(array), info=info, dtype="uint8", nodata=255)
    write_cog(tmp_path / "blocks.tif", np.asarray(array[...]), info=info, dtype="uint8",
              nodata=255)
    assert (tmp_path / "chunks.tif").read_bytes() == (tmp_path / "blocks.tif").read_bytes()
    with rasterio.open(tmp_path / "chunks.tif") as ds:
        np.testing.assert_array_equal(ds.read(1), array[...])
        assert ds.overviews(1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zarr", "blocks.tif", "chunks.tif"]


def test_layouts_it_cannot_wrap(tmp_path: Path) -> None:
    """Nothing is written where the chunks are not local zstd frames of TIFF tile size."""
    info = _info((100, 120), "EPSG:32633")
    cases = {
        "chunk side not a multiple of 16": _array(tmp_path / "odd", (100, 120), (50, 60),
                                                  "uint8", 255),
        "NaN fill (zarr's own path)": _array(tmp_path / "nan", (100, 120), (64, 64),
                                             "float32", np.nan),
        "other codecs": _array(tmp_path / "gzip", (100, 120), (64, 64), "uint8", 255,
                               compressors=zarr.codecs.GzipCodec()),
        "memory store": zarr.create_array(zarr.storage.MemoryStore(), shape=(100, 120),
                                          chunks=(64, 64), dtype="uint8"),
        "three dimensions": zarr.create_array(tmp_path / "3d.zarr", shape=(2, 100, 120),
                                              chunks=(1, 64, 64), dtype="uint8"),
        "another shape": _array(tmp_path / "shape", (100, 128), (64, 64), "uint8", 255),
    }
    for why, array in cases.items():
        path = tmp_path / f"{why}.tif"
        assert not write_chunk_tiff(path, array, info=info, dtype=str(array.dtype),
                                    nodata=255), why
        assert not path.exists(), why
    wider = _array(tmp_path / "wider", (100, 120), (64, 64), "uint8", 255)
    assert not write_chunk_tiff(tmp_path / "wider.tif", wider, info=info, dtype="uint16",
                                nodata=255)
    assert not (tmp_path / "wider.tif").exists()
