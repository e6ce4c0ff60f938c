"""GeoTIFF adapter: validate, describe and read scenes window by window.

A scene is never read whole: :func:`open_raster` checks a file and returns a
:class:`RasterInfo`, and :class:`GeoTiffReader` (one open dataset, e.g. per Ray
actor) reads ``(C, h, w)`` windows and their validity masks.

Validation runs in two passes and reports the first problem as one
:class:`~segcore.errors.InputError`:

1. The TIFF structure (:mod:`pipeline.io.tiff_structure`), read with ``struct``/numpy before GDAL sees the file
   (GDAL refuses some broken headers with opaque messages and accepts others,
   then fails on the first read): the file signature; the first image file
   directory (IFD, the full-resolution image in a GeoTIFF or COG); header
   sizes that are absurd (more than :data:`MAX_BANDS` bands, a side longer
   than :data:`MAX_SIDE`, a declared uncompressed size above
   :data:`MAX_UNCOMPRESSED_BYTES`); a block table that does not match the
   declared size; and truncation, i.e. any tile or strip whose ``offset +
   byte count`` lies beyond the end of the file. This is one vectorised pass
   over the offset tables (milliseconds for a 16384 x 16384 x 3 scene).
   Internal overviews and masks are not checked: the pipeline reads only the
   full-resolution image.
2. What GDAL reports: driver, one supported dtype for all bands, one nodata
   value, a CRS (unless ``require_crs=False``) and an invertible transform.

Inputs are local files or ``s3://`` objects (:mod:`pipeline.storage`): the structure
check reads an object with ranged requests, and GDAL reads it through ``/vsis3/`` with
its options derived from the standard AWS environment (``gdal_env``). COG export lives in
:mod:`pipeline.io.cog`.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import MaskFlags
from rasterio.errors import CRSError, NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from pipeline.io.tiff_structure import (
    MAX_BANDS,
    MAX_SIDE,
    MAX_UNCOMPRESSED_BYTES,
    check_tiff_structure,
)
from pipeline.storage import objects
from pipeline.storage.gdal import gdal_env
from pipeline.storage.location import S3Uri, parse_location
from segcore.errors import ConfigError, InputError

__all__ = [
    "MAX_BANDS",
    "MAX_SIDE",
    "MAX_UNCOMPRESSED_BYTES",
    "SUPPORTED_DTYPES",
    "GeoTiffReader",
    "RasterInfo",
    "WindowLike",
    "open_raster",
    "read_valid_mask",
    "read_window",
    "valid_mask_from_array",
]

SUPPORTED_DTYPES = ("uint8", "uint16", "int16", "uint32", "int32", "float32", "float64")
WindowLike = tuple[slice, slice] | Window
"""``(rows, cols)`` slices with explicit start and stop, or a rasterio Window."""

# --------------------------------------------------------------------------- RasterInfo


@dataclass(frozen=True)
class RasterInfo:
    """What the pipeline needs to know about a GeoTIFF scene.

    Attributes
    ----------
    path : str
        The file.
    width, height, count : int
        Columns, rows and bands.
    dtype : str
        numpy dtype name shared by all bands, one of :data:`SUPPORTED_DTYPES`.
    crs_wkt : str
        CRS as WKT1 (GDAL flavour); ``""`` when the file has none.
    transform : tuple of 6 float
        Affine terms ``(a, b, c, d, e, f)`` as in ``rasterio.Affine``.
    nodata : float or None
        Nodata value shared by all bands (may be NaN).
    block_shape : tuple of int
        Internal ``(rows, cols)`` block (tile or strip) shape.
    is_geographic : bool
        True for a lon/lat CRS.
    linear_unit_m : float or None
        Metres per CRS linear unit for projected CRSs, else None.
    """

    path: str
    width: int
    height: int
    count: int
    dtype: str
    crs_wkt: str
    transform: tuple[float, float, float, float, float, float]
    nodata: float | None
    block_shape: tuple[int, int]
    is_geographic: bool
    linear_unit_m: float | None

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` in pixels."""
        return (self.height, self.width)

    def to_attrs(self) -> dict[str, Any]:
        """JSON-safe dict (Zarr group attrs): ``crs`` is WKT, ``transform`` a list.

        A NaN or infinite nodata is written as the string ``"nan"``/``"inf"``/``"-inf"``.
        """
        attrs = asdict(self)
        attrs["crs"] = attrs.pop("crs_wkt")
        attrs["transform"] = list(self.transform)
        attrs["block_shape"] = list(self.block_shape)
        if self.nodata is not None and not math.isfinite(self.nodata):
            attrs["nodata"] = str(self.nodata)
        return attrs

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> RasterInfo:
        """Inverse of :meth:`to_attrs`; raises ConfigError naming missing keys."""
        missing = sorted(set(_ATTR_KEYS) - set(attrs))
        if missing:
            raise ConfigError(f"raster attrs: expected keys {missing}, got {sorted(attrs)}")
        nodata = attrs["nodata"]
        transform = tuple(float(v) for v in attrs["transform"])
        if len(transform) != 6:
            raise ConfigError(f"raster attrs: expected 6 transform terms, got {len(transform)}")
        unit = attrs["linear_unit_m"]
        return cls(
            path=str(attrs["path"]),
            width=int(attrs["width"]),
            height=int(attrs["height"]),
            count=int(attrs["count"]),
            dtype=str(attrs["dtype"]),
            crs_wkt=str(attrs["crs"]),
            transform=transform,  # type: ignore[arg-type]
            nodata=None if nodata is None else float(nodata),
            block_shape=(int(attrs["block_shape"][0]), int(attrs["block_shape"][1])),
            is_geographic=bool(attrs["is_geographic"]),
            linear_unit_m=None if unit is None else float(unit),
        )


_ATTR_KEYS = ("path", "width", "height", "count", "dtype", "crs", "transform", "nodata",
              "block_shape", "is_geographic", "linear_unit_m")


def open_raster(path: str | os.PathLike[str], *, require_crs: bool = True) -> RasterInfo:
    """Validate a GeoTIFF and describe it without reading its pixels.

    Parameters
    ----------
    path : str, PathLike or S3Uri
        A local GeoTIFF (or COG), or an ``s3://`` object.
    require_crs : bool
        Reject files without a CRS and geotransform (default).

    Returns
    -------
    RasterInfo

    Raises
    ------
    InputError
        One error whose reason names the problem: missing, empty, not a
        GeoTIFF, corrupt or truncated, absurd header sizes, mixed or
        unsupported dtypes, differing nodata, no CRS, non-invertible transform.
    StorageError
        For an ``s3://`` object that cannot be reached (missing bucket or key, no
        credentials, endpoint unreachable).
    """
    where = parse_location(path)
    if isinstance(where, S3Uri):
        return _open_remote(where, require_crs=require_crs)
    path = os.fspath(where)
    if not os.path.exists(path):
        raise InputError(path, "file not found")
    if not os.path.isfile(path):
        raise InputError(path, "not a regular file (expected a GeoTIFF file)")
    size = os.path.getsize(path)
    if size == 0:
        raise InputError(path, "empty file (0 bytes); expected a GeoTIFF")
    with open(path, "rb") as fh:
        check_tiff_structure(path, fh, size)
    with _open_dataset(path) as ds:
        return _describe(path, ds, require_crs=require_crs)


def _open_remote(uri: S3Uri, *, require_crs: bool) -> RasterInfo:
    """:func:`open_raster` for an ``s3://`` object (ranged reads, then ``/vsis3/``)."""
    name = str(uri)
    size = objects.stat(uri).size
    if size == 0:
        raise InputError(name, "empty object (0 bytes); expected a GeoTIFF")
    with objects.open_reader(uri) as fh:
        check_tiff_structure(name, fh, size)
    with gdal_env(), _open_dataset(uri.vsi, name=name) as ds:
        return _describe(name, ds, require_crs=require_crs)


def _gdal_path(path: str | os.PathLike[str] | S3Uri) -> tuple[str, AbstractContextManager]:
    """What GDAL opens for ``path`` and the configuration it needs while doing so."""
    where = parse_location(path)
    if isinstance(where, S3Uri):
        return where.vsi, gdal_env()
    return os.fspath(where), nullcontext()


def _open_dataset(path: str, *, name: str | None = None) -> Any:
    """Open with GDAL's GTiff driver only, mapping failures to InputError (``name``:
    the input as the user gave it, for messages)."""
    name = name or path
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            ds = rasterio.open(path, driver="GTiff")
    except RasterioError as exc:
        raise InputError(name, f"GDAL cannot open this TIFF: {_gdal_message(path, exc)}") from exc
    if ds.driver != "GTiff":  # defensive: driver= restricts GDAL already
        ds.close()
        raise InputError(name, f"not a GeoTIFF: GDAL reads it with the {ds.driver} driver")
    return ds


def _describe(path: str, ds: Any, *, require_crs: bool) -> RasterInfo:
    dtypes = sorted(set(ds.dtypes))
    if len(dtypes) > 1:
        raise InputError(path, f"bands have differing data types {dtypes}; segpipe needs one "
                         "dtype for all bands (convert with gdal_translate -ot)")
    if dtypes[0] not in SUPPORTED_DTYPES:
        raise InputError(path, f"unsupported data type {dtypes[0]}; expected one of "
                         f"{', '.join(SUPPORTED_DTYPES)}")
    nodata = _common_nodata(path, ds.nodatavals)
    crs = ds.crs
    if crs is None and require_crs:
        raise InputError(path, _no_crs_reason(ds))
    transform = tuple(float(v) for v in tuple(ds.transform)[:6])
    det = transform[0] * transform[4] - transform[1] * transform[3]
    if not (math.isfinite(det) and det != 0.0) or not all(map(math.isfinite, transform)):
        raise InputError(path, f"non-invertible geotransform {transform} (zero or non-finite "
                         "pixel size); fix the georeferencing, e.g. gdal_edit.py -a_ullr")
    if require_crs and ds.transform.is_identity:
        raise InputError(path, "has a CRS but no geotransform (pixel-to-map mapping); "
                         "georeference it, e.g. gdal_edit.py -a_ullr")
    is_geographic = bool(crs is not None and crs.is_geographic)
    return RasterInfo(
        path=path, width=int(ds.width), height=int(ds.height), count=int(ds.count),
        dtype=dtypes[0], crs_wkt="" if crs is None else crs.to_wkt(),
        transform=transform,  # type: ignore[arg-type]
        nodata=nodata, block_shape=tuple(ds.block_shapes[0]),  # type: ignore[arg-type]
        is_geographic=is_geographic,
        linear_unit_m=None if crs is None or is_geographic else _linear_unit(crs),
    )


def _common_nodata(path: str, values: Sequence[float | None]) -> float | None:
    first = values[0]
    for value in values[1:]:
        same = (value is None and first is None) or (
            value is not None and first is not None
            and (value == first or (math.isnan(value) and math.isnan(first))))
        if not same:
            raise InputError(path, f"bands declare differing nodata values {list(values)}; "
                             "segpipe needs one nodata value per file")
    return None if first is None else float(first)


def _no_crs_reason(ds: Any) -> str:
    gcps, _ = ds.gcps
    if gcps:
        return ("has no CRS/geotransform, only ground control points; warp it first "
                "(gdalwarp -t_srs EPSG:XXXX in.tif out.tif)")
    return ("has no CRS (no georeferencing); assign one, e.g. gdal_edit.py -a_srs EPSG:XXXX, "
            "or pass require_crs=False for unreferenced images")


def _linear_unit(crs: Any) -> float | None:
    try:
        return float(crs.linear_units_factor[1])
    except CRSError:
        return None


def _gdal_message(path: str | os.PathLike[str], exc: BaseException) -> str:
    """GDAL's message on one line, without the file name it repeats."""
    message = " ".join(str(exc).split())
    for name in (os.fspath(path), os.path.basename(path)):
        message = message.replace(f"{name}: ", "")
    return message


# --------------------------------------------------------------------------- reading


def read_window(
    path_or_dataset: str | os.PathLike[str] | Any,
    window: WindowLike,
    *,
    bands: Sequence[int] | None = None,
) -> np.ndarray:
    """Read a window of selected bands.

    Parameters
    ----------
    path_or_dataset : str, PathLike or rasterio dataset
        A path is opened (without validation; use :func:`open_raster` first)
        and closed again; a dataset is used as is.
    window : (slice, slice) or rasterio Window
        ``(rows, cols)`` with explicit start and stop, inside the raster.
    bands : sequence of int, optional
        1-based band indices (GDAL order); default all bands.

    Returns
    -------
    (C, h, w) ndarray of the file's dtype
    """
    if isinstance(path_or_dataset, (str, os.PathLike, S3Uri)):
        with _open_plain(path_or_dataset) as ds, _gdal_path(path_or_dataset)[1]:
            return read_window(ds, window, bands=bands)
    ds = path_or_dataset
    win = _to_window(ds, window)
    return ds.read(indexes=_check_bands(ds, bands), window=win)


def read_valid_mask(
    path_or_dataset: str | os.PathLike[str] | Any,
    window: WindowLike,
    *,
    bands: Sequence[int] | None = None,
) -> np.ndarray:
    """Valid-pixel mask of a window.

    A pixel is invalid where all selected bands equal the nodata value
    (NaN-aware), where any selected band is NaN (float data), or where the
    file's internal per-dataset mask (or alpha band) is zero. GDAL's own
    dataset mask is not used for the first two rules: it spans all bands, not
    the selected ones, and ignores NaN pixels when nodata is a number.

    Returns
    -------
    (h, w) ndarray of bool
        True where the pixel is valid.
    """
    if isinstance(path_or_dataset, (str, os.PathLike, S3Uri)):
        with _open_plain(path_or_dataset) as ds, _gdal_path(path_or_dataset)[1]:
            return read_valid_mask(ds, window, bands=bands)
    data = read_window(path_or_dataset, window, bands=bands)
    return _apply_dataset_mask(path_or_dataset, window,
                               valid_mask_from_array(data, path_or_dataset.nodata))


def valid_mask_from_array(data: np.ndarray, nodata: float | None) -> np.ndarray:
    """Valid-pixel mask of ``(C, h, w)`` data, as in :func:`read_valid_mask`.

    Examples
    --------
    >>> data = np.array([[[0, 5]], [[0, 0]]], dtype=np.uint8)  # (2, 1, 2)
    >>> valid_mask_from_array(data, 0)
    array([[False,  True]])
    >>> valid_mask_from_array(np.array([[[np.nan, 1.0]]]), None)
    array([[False,  True]])
    """
    floating = np.issubdtype(data.dtype, np.floating)
    valid = np.ones(data.shape[1:], dtype=bool)
    if floating:
        valid &= ~np.isnan(data).any(axis=0)
    value = _nodata_in_dtype(nodata, data.dtype)
    if value is not None and not (floating and math.isnan(value)):
        valid &= ~(data == value).all(axis=0)
    return valid


def _nodata_in_dtype(nodata: float | None, dtype: np.dtype) -> Any:
    """``nodata`` as a scalar of ``dtype``, or None if no pixel can equal it."""
    if nodata is None:
        return None
    if np.issubdtype(dtype, np.floating):
        return dtype.type(nodata)
    info = np.iinfo(dtype)
    if math.isfinite(nodata) and nodata == int(nodata) and info.min <= nodata <= info.max:
        return dtype.type(int(nodata))
    return None


def _apply_dataset_mask(ds: Any, window: WindowLike, valid: np.ndarray) -> np.ndarray:
    if MaskFlags.per_dataset in ds.mask_flag_enums[0]:
        valid &= ds.read_masks(1, window=_to_window(ds, window)) > 0
    return valid


class GeoTiffReader:
    """One open GeoTIFF, read window by window (context manager).

    Parameters
    ----------
    path : str, PathLike or S3Uri
        Validated with :func:`open_raster` on construction.
    bands : sequence of int, optional
        1-based band indices to read; default all bands.
    require_crs : bool
        Passed to :func:`open_raster`.
    """

    def __init__(self, path: str | os.PathLike[str], bands: Sequence[int] | None = None,
                 *, require_crs: bool = True) -> None:
        self.info = open_raster(path, require_crs=require_crs)
        self._remote = isinstance(parse_location(self.info.path), S3Uri)
        self._ds = _open_plain(self.info.path)
        try:
            self.bands = _check_bands(self._ds, bands)
        except ConfigError:
            self._ds.close()
            raise
        self._require_crs = require_crs

    def __reduce__(self) -> tuple:
        """Pickled as (path, bands): a copy in another process reopens the file."""
        return (_reopen, (self.info.path, self.bands, self._require_crs))

    def _env(self) -> AbstractContextManager:
        """GDAL's ``/vsis3/`` options around each read of a remote scene."""
        return gdal_env() if self._remote else nullcontext()

    def read(self, window: WindowLike) -> np.ndarray:
        """``(C, h, w)`` pixels of the selected bands."""
        with self._env():
            return read_window(self._ds, window, bands=self.bands)

    def valid(self, window: WindowLike) -> np.ndarray:
        """``(h, w)`` bool validity mask, see :func:`read_valid_mask`."""
        with self._env():
            return read_valid_mask(self._ds, window, bands=self.bands)

    def read_with_valid(self, window: WindowLike) -> tuple[np.ndarray, np.ndarray]:
        """``(C, h, w)`` pixels and their ``(h, w)`` mask from a single read."""
        data = self.read(window)
        valid = valid_mask_from_array(data, self.info.nodata)
        with self._env():
            return data, _apply_dataset_mask(self._ds, window, valid)

    def close(self) -> None:
        self._ds.close()

    def __enter__(self) -> GeoTiffReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _reopen(path: str, bands: list[int], require_crs: bool) -> GeoTiffReader:
    return GeoTiffReader(path, bands, require_crs=require_crs)


def _open_plain(path: str | os.PathLike[str] | S3Uri) -> Any:
    gdal_name, env = _gdal_path(path)
    with warnings.catch_warnings(), env:
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        try:
            return rasterio.open(gdal_name)
        except RasterioError as exc:
            where = parse_location(path)
            shown = str(where) if isinstance(where, S3Uri) else os.fspath(path)
            raise InputError(shown, f"cannot open: {_gdal_message(gdal_name, exc)}") from exc


def _check_bands(ds: Any, bands: Sequence[int] | None) -> list[int]:
    if bands is None:
        return list(range(1, ds.count + 1))
    chosen = [int(b) for b in bands if isinstance(b, (int, np.integer))]
    if not chosen or len(chosen) != len(bands) or not all(1 <= b <= ds.count for b in chosen):
        raise ConfigError(f"bands: expected 1-based band indices in 1..{ds.count} for "
                          f"{ds.name}, got {list(bands)}")
    return chosen


def _to_window(ds: Any, window: WindowLike) -> Window:
    if isinstance(window, Window):
        rows, cols = window.toslices()
    elif isinstance(window, tuple) and len(window) == 2:
        rows, cols = window
    else:
        raise ConfigError(f"window: expected (rows, cols) slices or a rasterio Window, "
                          f"got {window!r}")
    for name, sl, size in (("rows", rows, ds.height), ("cols", cols, ds.width)):
        if not isinstance(sl, slice) or sl.step not in (None, 1) or sl.start is None or \
                sl.stop is None or not 0 <= sl.start < sl.stop <= size or \
                sl.start != int(sl.start) or sl.stop != int(sl.stop):
            raise ConfigError(f"window: expected {name} as a slice with integer start < stop "
                              f"within 0..{size} of {ds.name}, got {sl!r}")
    return Window(int(cols.start), int(rows.start), int(cols.stop - cols.start),
                  int(rows.stop - rows.start))

