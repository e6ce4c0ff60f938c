"""Pixels of STAC bands that are separate files, on the grid of the finest band.

:func:`band_grid` opens every selected band's asset header (GeoTIFF/COG, local or
``s3://``; one InputError naming the href when one is missing or unreadable) and
describes the common grid: the CRS, transform and size of the band with the smallest
pixel. :class:`StacRasterReader` reads ``(C, h, w)`` windows of that grid: a band on
another grid (a 20 m band beside 10 m ones, or another CRS) is read through a
rasterio ``WarpedVRT`` onto the common grid, so only the window's source pixels are
read (nearest neighbour: a 20 m pixel covers its four 10 m pixels exactly). No band is
ever read whole.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass, replace
from typing import Any, Self

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.transform import Affine
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from pipeline.io.geotiff import SUPPORTED_DTYPES, RasterInfo, open_raster
from pipeline.io.stac_items import BandRef
from pipeline.storage.gdal import gdal_env
from pipeline.storage.location import S3Uri, parse_location
from segcore.errors import InputError

__all__ = ["BandGrid", "StacRasterReader", "band_grid", "largest_band_shape"]


@dataclass(frozen=True)
class BandGrid:
    """The selected bands and the grid they are read on.

    ``grid`` describes the common grid as a :class:`RasterInfo` (``count`` the number of
    bands, ``dtype`` their common type, ``path`` the finest band's href); ``infos`` the
    bands' own files, in band order.
    """

    bands: tuple[BandRef, ...]
    infos: tuple[RasterInfo, ...]
    grid: RasterInfo

    @property
    def resampled(self) -> tuple[str, ...]:
        """Names of the bands read through a warp (not on the common grid)."""
        return tuple(b.name for b, i in zip(self.bands, self.infos) if not _same_grid(i, self.grid))


def _pixel_area(info: RasterInfo) -> float:
    a, b, _, d, e, _ = info.transform
    return abs(a * e - b * d) * (info.linear_unit_m or 1.0) ** 2


def _same_grid(info: RasterInfo, grid: RasterInfo) -> bool:
    return info.shape == grid.shape and info.crs_wkt == grid.crs_wkt and np.allclose(
        info.transform, grid.transform, rtol=0, atol=1e-9 * max(1.0, *map(abs, grid.transform)))


def _open_band(band: BandRef, item_id: str) -> RasterInfo:
    where = parse_location(band.href)
    if not isinstance(where, S3Uri) and not where.exists():
        raise InputError(band.href, f"asset of band '{band.name}' (Item '{item_id}') not found")
    info = open_raster(band.href)
    if band.index > info.count:
        raise InputError(band.href, f"band '{band.name}' is band {band.index} of this asset, "
                         f"which has {info.count}")
    return info


def band_grid(bands: Sequence[BandRef], *, item_id: str) -> BandGrid:
    """Open the bands' headers and choose the grid of the finest one (no pixels read)."""
    infos = tuple(_open_band(b, item_id) for b in bands)
    finest = min(range(len(infos)), key=lambda i: _pixel_area(infos[i]))
    dtype = np.result_type(*(np.dtype(i.dtype) for i in infos)).name
    if dtype not in SUPPORTED_DTYPES:
        raise InputError(infos[finest].path, f"bands {[b.name for b in bands]} have data types "
                         f"{sorted({i.dtype for i in infos})} with no common supported type")
    nodatas = {i.nodata for i in infos}
    nodata = nodatas.pop() if len(nodatas) == 1 else None
    grid = replace(infos[finest], count=len(bands), dtype=dtype,
                   nodata=None if nodata is not None and math.isnan(nodata) else nodata)
    return BandGrid(tuple(bands), infos, grid)


def largest_band_shape(bands: Sequence[BandRef]) -> tuple[int, ...]:
    """``(H, W)`` of the largest of the bands' files, from their headers (``()`` when
    none can be opened): a size estimate that never fails."""
    shapes = []
    for href in dict.fromkeys(b.href for b in bands):
        name, env = _gdal(href)
        try:
            with env, warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                with rasterio.open(name) as ds:
                    shapes.append((int(ds.height), int(ds.width)))
        except Exception:  # noqa: BLE001, S112 - a missing asset fails its scene later
            continue
    return max(shapes, key=lambda s: s[0] * s[1], default=())


def _gdal(href: str) -> tuple[str, AbstractContextManager]:
    where = parse_location(href)
    if isinstance(where, S3Uri):
        return where.vsi, gdal_env()
    return str(where), nullcontext()


class StacRasterReader:
    """The bands of a :class:`BandGrid`, read window by window on its grid
    (context manager; pickles as its :class:`BandGrid` and reopens the files)."""

    def __init__(self, bands: BandGrid) -> None:
        self.bands = bands
        self._stack = ExitStack()
        self._sources: list[Any] = []
        try:
            for ref, info in zip(bands.bands, bands.infos):
                self._sources.append(self._open(ref, info))
        except BaseException:
            self._stack.close()
            raise

    def _open(self, ref: BandRef, info: RasterInfo) -> Any:
        name, env = _gdal(ref.href)
        grid = self.bands.grid
        with env, warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            try:
                ds = self._stack.enter_context(rasterio.open(name))
            except RasterioError as exc:
                raise InputError(ref.href, f"cannot open the asset: {exc}") from exc
            if _same_grid(info, grid):
                return ds
            return self._stack.enter_context(WarpedVRT(
                ds, crs=grid.crs_wkt, transform=Affine(*grid.transform), width=grid.width,
                height=grid.height, resampling=Resampling.nearest, nodata=info.nodata))

    def __reduce__(self) -> tuple:
        return (StacRasterReader, (self.bands,))

    def read_with_valid(self, window: tuple[slice, slice]) -> tuple[np.ndarray, np.ndarray]:
        """``(C, h, w)`` pixels in the grid's dtype and the ``(h, w)`` valid mask: False
        where every band equals its nodata value, or any band is NaN."""
        rows, cols = window
        win = Window(cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start)
        grid = self.bands.grid
        data = np.empty((grid.count, win.height, win.width), dtype=grid.dtype)
        nodata = np.ones((win.height, win.width), dtype=bool)
        for c, (ref, info, src) in enumerate(zip(self.bands.bands, self.bands.infos,
                                                 self._sources)):
            with _gdal(ref.href)[1]:
                try:
                    band = src.read(ref.index, window=win)
                except RasterioError as exc:
                    raise InputError(ref.href, f"cannot read pixels of band '{ref.name}': "
                                     f"{' '.join(str(exc).split())}") from exc
            nodata &= _is_nodata(band, info.nodata)
            data[c] = band
        if np.issubdtype(data.dtype, np.floating):
            nodata |= np.isnan(data).any(axis=0)
        return data, ~nodata

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _is_nodata(band: np.ndarray, nodata: float | None) -> np.ndarray:
    if nodata is None:
        return np.zeros(band.shape, dtype=bool)
    if math.isnan(nodata):
        return np.isnan(band) if np.issubdtype(band.dtype, np.floating) else \
            np.zeros(band.shape, dtype=bool)
    return band == nodata
