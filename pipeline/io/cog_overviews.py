"""Nearest-neighbour overviews for the COG export, built once from the staging file.

GDAL's COG driver, asked for overviews (``OVERVIEWS=AUTO``), computes them into a
temporary file, compressed, and reads them back to compress them again into the COG:
at 8192² labels that took about as much CPU as the full resolution itself (2.5-2.9 s of
CPU for the copy with overviews, 1.2-1.4 s without). Nearest-neighbour overviews are a
selection of pixels, so they are cheap to build directly: each level is half the size
of the one above (sizes rounded down) and takes the pixel at ``int(0.5 + i * ratio)``,
GDAL's own rule, until the long side is at most the COG's block size, GDAL's own count.
Each level is written uncompressed, block by block from the level above, and a VRT
hands the staging file and its levels to the COG driver, which then uses them as the
source's overviews and compresses every level once. The COG is byte for byte the one
GDAL builds itself (tested over odd, wide, tall and tiny shapes).

Only for ``nearest``: ``mode`` overviews are left to GDAL.
"""

from __future__ import annotations

import os
import warnings
from xml.etree import ElementTree

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from pipeline.io.geotiff import RasterInfo

__all__ = ["nearest_indices", "overview_shapes", "write_overview_vrt"]

_GDAL_TYPES = {"uint8": "Byte", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32",
               "int32": "Int32", "float32": "Float32", "float64": "Float64"}


def overview_shapes(shape: tuple[int, int], blocksize: int) -> list[tuple[int, int]]:
    """``(rows, cols)`` of each overview level the COG driver makes for ``shape``.

    Levels halve the size (rounded down) while the long side exceeds ``blocksize``.

    Examples
    --------
    >>> overview_shapes((3001, 2049), 512)
    [(1500, 1024), (750, 512), (375, 256)]
    >>> overview_shapes((512, 300), 512)
    []
    """
    rows, cols = shape
    out = []
    while max(rows, cols) > blocksize:
        rows, cols = rows // 2, cols // 2
        out.append((rows, cols))
    return out


def nearest_indices(n_src: int, n_dst: int) -> np.ndarray:
    """Index ``(n_dst,)`` in the level above of each pixel of a level, along one axis:
    ``int(0.5 + i * n_src / n_dst)``, as GDAL's nearest resampling picks it.

    Examples
    --------
    >>> nearest_indices(8, 4).tolist(), nearest_indices(7, 3).tolist()
    ([0, 2, 4, 6], [0, 2, 5])
    """
    return (0.5 + np.arange(n_dst, dtype=np.float64) * (n_src / n_dst)).astype(np.int64)


def write_overview_vrt(vrt_path: str, full_path: str, *, info: RasterInfo, dtype: str,
                       nodata: int | float | None, blocksize: int) -> None:
    """Build the nearest overviews of the tiled GeoTIFF ``full_path`` and write a VRT
    ``vrt_path`` of the file with them (the levels are ``vrt_path`` + ``.1.tif``, ...).

    Each level is read from the one above in blocks of ``blocksize`` (memory: a few
    blocks), so ``full_path`` is read once and every level once.
    """
    written: list[str] = []
    above, above_shape = full_path, info.shape
    for level, shape in enumerate(overview_shapes(info.shape, blocksize), start=1):
        path = f"{vrt_path}.{level}.tif"
        written.append(path)
        _write_level(above, above_shape, path, shape, dtype, blocksize)
        above, above_shape = path, shape
    _write_vrt(vrt_path, full_path, written, info=info, dtype=dtype, nodata=nodata)


def _write_level(src_path: str, src_shape: tuple[int, int], dst_path: str,
                 shape: tuple[int, int], dtype: str, blocksize: int) -> None:
    """Write the level ``shape`` of the level above at ``src_path``, one block at a time."""
    rows, cols = (nearest_indices(a, b) for a, b in zip(src_shape, shape))
    profile = dict(driver="GTiff", width=shape[1], height=shape[0], count=1, dtype=dtype,
                   tiled=True, blockxsize=blocksize, blockysize=blocksize, bigtiff="IF_SAFER")
    with warnings.catch_warnings():  # the levels need no georeferencing (the VRT has it)
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(src_path) as src, rasterio.open(dst_path, "w", **profile) as dst:
            for r0 in range(0, shape[0], blocksize):
                ys = rows[r0:r0 + blocksize]
                for c0 in range(0, shape[1], blocksize):
                    xs = cols[c0:c0 + blocksize]
                    region = src.read(1, window=Window(xs[0], ys[0], xs[-1] + 1 - xs[0],
                                                       ys[-1] + 1 - ys[0]))
                    block = region[_pick(ys - ys[0]), :][:, _pick(xs - xs[0])]
                    dst.write(block, 1, window=Window(c0, r0, len(xs), len(ys)))


def _pick(index: np.ndarray) -> slice | np.ndarray:
    """``index`` (starting at 0) as a slice where it is evenly spaced (every ratio-2 level
    of an even size), else as it is."""
    step = int(index[1] - index[0]) if len(index) > 1 else 1
    if step > 0 and index[-1] == step * (len(index) - 1) and \
            np.array_equal(index, np.arange(0, step * len(index), step)):
        return slice(0, step * len(index), step)
    return index


def _write_vrt(vrt_path: str, full_path: str, levels: list[str], *, info: RasterInfo,
               dtype: str, nodata: int | float | None) -> None:
    root = ElementTree.Element("VRTDataset", rasterXSize=str(info.width),
                               rasterYSize=str(info.height))
    if info.crs_wkt:
        ElementTree.SubElement(root, "SRS").text = info.crs_wkt
    a, b, c, d, e, f = info.transform
    ElementTree.SubElement(root, "GeoTransform").text = ", ".join(
        repr(float(v)) for v in (c, a, b, f, d, e))
    band = ElementTree.SubElement(root, "VRTRasterBand", dataType=_GDAL_TYPES[dtype], band="1")
    if nodata is not None:
        ElementTree.SubElement(band, "NoDataValue").text = repr(nodata)
    source = ElementTree.SubElement(band, "SimpleSource")
    for parent, path in [(source, full_path)] + [
            (ElementTree.SubElement(band, "Overview"), level) for level in levels]:
        ElementTree.SubElement(parent, "SourceFilename", relativeToVRT="0").text = \
            os.path.abspath(path)
        ElementTree.SubElement(parent, "SourceBand").text = "1"
    ElementTree.ElementTree(root).write(vrt_path, encoding="utf-8")
