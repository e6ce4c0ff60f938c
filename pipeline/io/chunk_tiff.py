"""A tiled GeoTIFF assembled from a Zarr array's compressed chunks, without re-encoding.

The COG export hands GDAL's COG driver a tiled GeoTIFF to copy from (the driver lays
out the final file with its overviews in one pass; :mod:`pipeline.io.cog`). The labels
are already stored compressed: each chunk file of a local ``bytes`` + ``zstd`` Zarr
array is one zstd frame of a full C-ordered block (edge chunks padded), which is what a
tiled TIFF with ZSTD compression (TIFF code 50000, no predictor) holds for each tile.
So GDAL writes the file's header and georeferencing with no tile at all
(``SPARSE_OK``), the chunk files are appended as its tiles, and the two tile tables
(TileOffsets, TileByteCounts) are filled in. Nothing is decoded or compressed again:
the 8192² bench labels' 256 chunks are wrapped in 0.02-0.03 s of CPU, against about
0.4 s to decode and compress them into a new file. A chunk zarr did not store (all fill
value) points at one fill chunk written once.

:func:`write_chunk_tiff` returns False, writing nothing, where the layout does not
allow it (object storage, other codecs, a chunk side that is not a multiple of 16, a
3-D array); the caller then writes the file block by block.
"""

from __future__ import annotations

import math
import os
from typing import Any, BinaryIO

import numpy as np
import rasterio
import zarr
from rasterio.crs import CRS
from rasterio.transform import Affine

from pipeline.io.geotiff import SUPPORTED_DTYPES, RasterInfo
from pipeline.io.tiff_structure import first_ifd
from pipeline.storage.chunk_io import Regions, StoredChunks, stored_chunks

__all__ = ["write_chunk_tiff"]

TILE_OFFSETS, TILE_BYTE_COUNTS = 324, 325


def write_chunk_tiff(path: str | os.PathLike[str], source: Any, *, info: RasterInfo,
                     dtype: str, nodata: int | float | None) -> bool:
    """Write ``source``'s chunks as the tiles of a GeoTIFF at ``path``; False if it cannot.

    Parameters
    ----------
    path : str or PathLike
        The file to create (a temporary file of the caller's).
    source : zarr.Array or Regions
        A 2-D array ``(H, W)`` with ``(H, W) == info.shape``.
    info : RasterInfo
        CRS and transform of the file.
    dtype : str
        The file's sample type: the array's own, or nothing is written.
    nodata : int, float or None
        The file's nodata value.

    Returns
    -------
    bool
        True when the file was written; False (nothing written) where the array's
        chunks are not stored as local zstd frames with sides that are multiples of 16,
        or its sample type is not ``dtype``.

    Examples
    --------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> labels = zarr.create_array(f"{folder}/a.zarr", shape=(40, 50), chunks=(32, 32),
    ...                            dtype="uint8", fill_value=255)
    >>> labels[:20, :] = 3
    >>> info = RasterInfo(path="scene.tif", width=50, height=40, count=1, dtype="uint8",
    ...                   crs_wkt=CRS.from_epsg(32633).to_wkt(),
    ...                   transform=(10.0, 0.0, 500000.0, 0.0, -10.0, 5200000.0),
    ...                   nodata=None, block_shape=(32, 32), is_geographic=False,
    ...                   linear_unit_m=1.0)
    >>> write_chunk_tiff(f"{folder}/a.tif", labels, info=info, dtype="uint8", nodata=255)
    True
    >>> with rasterio.open(f"{folder}/a.tif") as ds:
    ...     back = ds.read(1)
    >>> bool((back == labels[...]).all())
    True
    """
    array = source.array if isinstance(source, Regions) else source
    if not isinstance(array, zarr.Array) or array.ndim != 2 \
            or tuple(array.shape) != tuple(info.shape):
        return False
    stored = stored_chunks(array)
    if stored is None or np.dtype(array.dtype) != np.dtype(dtype) \
            or dtype not in SUPPORTED_DTYPES or any(side % 16 for side in stored.chunks):
        return False
    rows, cols = stored.chunks
    profile = dict(
        driver="GTiff", width=info.width, height=info.height, count=1, dtype=dtype,
        crs=CRS.from_wkt(info.crs_wkt) if info.crs_wkt else None,
        transform=Affine(*info.transform), nodata=nodata, tiled=True, blockxsize=cols,
        blockysize=rows, compress="zstd", predictor=1, bigtiff="YES", sparse_ok=True,
    )
    with rasterio.open(path, "w", **profile):
        pass  # the header, the georeferencing and empty tile tables
    grid = (math.ceil(info.height / rows), math.ceil(info.width / cols))
    with open(path, "r+b") as f:
        _append_tiles(f, stored, grid)
    return True


def _append_tiles(f: BinaryIO, stored: StoredChunks, grid: tuple[int, int]) -> None:
    """Append every chunk's frame to the open file and fill in its tile tables."""
    tables = _tile_tables(f)
    count = grid[0] * grid[1]
    if any(n != count for n, _, _ in tables.values()):
        raise ValueError(f"{f.name}: GDAL wrote tile tables of "
                         f"{[n for n, _, _ in tables.values()]} entries, expected {count}")
    end = f.seek(0, os.SEEK_END)
    offsets = np.zeros(count, np.uint64)
    sizes = np.zeros(count, np.uint64)
    fill_at: int | None = None
    fill_size = 0
    for i, coords in enumerate(np.ndindex(grid)):  # TIFF tiles: row by row, as chunks
        data = stored.payload(coords)
        if data is None:
            if fill_at is None:
                data = stored.fill_payload()
                fill_at, fill_size = end, len(data)
            else:
                offsets[i], sizes[i] = fill_at, fill_size
                continue
        offsets[i], sizes[i] = end, len(data)
        f.write(data)
        end += len(data)
    for tag, values in ((TILE_OFFSETS, offsets), (TILE_BYTE_COUNTS, sizes)):
        _, kind, at = tables[tag]
        if values.size and int(values.max()) > np.iinfo(kind).max:
            raise ValueError(f"{f.name}: tile table {tag} ({kind}) cannot hold "
                             f"{int(values.max())}")
        f.seek(at)
        f.write(values.astype(kind).tobytes())


def _tile_tables(f: BinaryIO) -> dict[int, tuple[int, np.dtype, int]]:
    """``{tag: (entries, type, file offset of the values)}`` of the two tile tables of the
    first image file directory (values that fit sit in the entry itself)."""
    f.seek(0)
    ifd = first_ifd(f.name, f, os.fstat(f.fileno()).st_size)
    return {tag: (count, dtype, at) for tag in (TILE_OFFSETS, TILE_BYTE_COUNTS)
            for dtype, count, at in [ifd.values_at(tag)]}
