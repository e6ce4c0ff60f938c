"""Write synthetic satellite scenes (and their labels) as tiled GeoTIFFs.

The scene (:class:`segcore.synthetic.satellite.SatelliteSceneSpec`) is rendered
and written ``block`` x ``block`` pixels at a time, so a 16384 x 16384 scene never
sits in memory. Files are internally tiled (512 x 512), deflate-compressed,
georeferenced, and appear atomically: each is written under a temporary name in
its target directory and moved into place once complete (:mod:`pipeline.atomic`).

Pixel values by ``dtype``: ``uint8`` as rendered, ``uint16`` times 257 (full
range), ``float32`` divided by 255 (reflectance in ``[0, 1]``). With ``nodata``
and ``nodata_fraction > 0``, a wedge in the top-left corner covering about that
fraction of the scene is set to ``nodata`` in every band; valid pixels that
happen to equal ``nodata`` are nudged by one step so the mask stays exact.

The label file is a two-band GeoTIFF on the same grid: band 1 class id
(:data:`~segcore.synthetic.satellite.SATELLITE_CLASSES`), band 2 building
instance id (0 = none; large and L-shaped buildings too, with the spec's
``large_buildings`` > 0). Its dtype is ``uint16`` when every instance id of the
scene is below 65535, else ``uint32``; image nodata pixels get the unlabelled
class :data:`UNLABELLED` (65535) and instance 0.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path

import numpy as np
import rasterio
from numpy.typing import NDArray
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.errors import CRSError
from rasterio.transform import Affine
from rasterio.windows import Window as RioWindow

from pipeline.atomic import atomic_path
from segcore.errors import ConfigError, InputError
from segcore.geometry.window import Window
from segcore.hints import parse_choice
from segcore.synthetic.satellite import SATELLITE_CLASSES, SatelliteSceneSpec, render

__all__ = [
    "TILE",
    "UNLABELLED",
    "ImageDtype",
    "SceneFiles",
    "default_transform",
    "label_file_dtype",
    "nodata_wedge",
    "write_scene",
]

TILE = 512
"""Internal GeoTIFF tile size (pixels); ``block`` must be a multiple of it."""
UNLABELLED = 65535
"""Class id of unlabelled pixels in ``uint16`` and ``uint32`` label files (255 in ``uint8`` ones)."""
_GDAL_CACHE_MB = 64
_BAND_NAMES = ("red", "green", "blue", "nir")
_COLOR_INTERP = (ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.undefined)


class ImageDtype(str, Enum):
    """Sample type of the written image."""

    UINT8 = "uint8"
    UINT16 = "uint16"
    FLOAT32 = "float32"

    @classmethod
    def parse(cls, value: str | ImageDtype) -> ImageDtype:
        """Member named by ``value``; ConfigError with a "did you mean" hint."""
        return parse_choice(cls, value, name="dtype")



@dataclass(frozen=True)
class SceneFiles:
    """Paths written by :func:`write_scene`."""

    image: Path
    labels: Path | None


def label_file_dtype(spec: SatelliteSceneSpec) -> str:
    """``"uint16"`` when every instance id fits below 65535, else ``"uint32"``.

    Examples
    --------
    >>> label_file_dtype(SatelliteSceneSpec(seed=0, height=1024, width=1024))
    'uint16'
    >>> label_file_dtype(SatelliteSceneSpec(seed=0, height=16384, width=16384))
    'uint32'
    """
    return "uint16" if spec.max_instance_id < 65535 else "uint32"


def default_transform(crs: CRS) -> Affine:
    """10 m pixels at a UTM 33N origin, or 0.0001 degree pixels at 47N 15E when geographic.

    Examples
    --------
    >>> default_transform(CRS.from_epsg(32633)).a
    10.0
    >>> default_transform(CRS.from_epsg(4326)).c
    15.0
    """
    if crs.is_geographic:
        return Affine(1e-4, 0.0, 15.0, 0.0, -1e-4, 47.0)
    return Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5200000.0)


def _wedge_reach(fraction: float) -> float:
    """``s`` such that ``{u + v < s}`` covers ``fraction`` of the unit square."""
    if fraction <= 0.5:
        return math.sqrt(2.0 * fraction)
    return 2.0 - math.sqrt(2.0 * (1.0 - fraction))


def nodata_wedge(shape: tuple[int, int], window: Window, fraction: float) -> NDArray[np.bool_]:
    """Nodata mask of a window: a top-left corner wedge covering about ``fraction`` of the scene.

    A pixel ``(y, x)`` of a ``(H, W)`` scene is nodata when
    ``(x + 0.5) / W + (y + 0.5) / H < s``, with ``s`` chosen so the wedge covers
    ``fraction`` of the scene; the test is per pixel, so windows agree.

    Parameters
    ----------
    shape : tuple of int
        Scene ``(H, W)``.
    window : Window
        2-D window of the scene.
    fraction : float
        Target nodata fraction in ``[0, 1]``.

    Returns
    -------
    (h, w) ndarray of bool
        True where the window is nodata.

    Examples
    --------
    >>> m = nodata_wedge((100, 100), Window((0, 0), (100, 100)), 0.2)
    >>> round(float(m.mean()), 2)
    0.2
    """
    height, width = shape
    s = _wedge_reach(fraction)
    ys = (np.arange(window.start[0], window.stop[0]) + 0.5)[:, None] / height
    xs = (np.arange(window.start[1], window.stop[1]) + 0.5)[None, :] / width
    return (xs + ys) < s


def _check_nodata(nodata: float | None, dtype: ImageDtype, fraction: float) -> None:
    if not (isinstance(fraction, (int, float)) and 0.0 <= fraction <= 1.0):
        raise ConfigError(f"nodata_fraction: expected a number in [0, 1], received {fraction!r}")
    if fraction > 0 and nodata is None:
        raise ConfigError(
            f"nodata_fraction: expected 0 when nodata is None, received {fraction!r} "
            "(give nodata=... to mark a nodata region)"
        )
    if nodata is None or dtype is ImageDtype.FLOAT32:
        return
    info = np.iinfo(dtype.value)
    if not (float(nodata).is_integer() and info.min <= nodata <= info.max):
        raise ConfigError(
            f"nodata: expected an integer in {info.min}..{info.max} for dtype {dtype.value}, "
            f"received {nodata!r}"
        )


def _check_block(block: int) -> None:
    if isinstance(block, bool) or not isinstance(block, int) or block <= 0 or block % TILE:
        raise ConfigError(
            f"block: expected a positive multiple of {TILE} (whole tiles per write), received {block!r}"
        )


def _parse_crs(crs: str | CRS) -> CRS:
    try:
        return CRS.from_user_input(crs)
    except CRSError as exc:
        raise ConfigError(f"crs: expected an EPSG code, WKT or PROJ string, received {crs!r} ({exc})") from None


def _blocks(shape: tuple[int, int], block: int) -> Iterator[Window]:
    height, width = shape
    for y in range(0, height, block):
        for x in range(0, width, block):
            yield Window((y, x), (min(y + block, height), min(x + block, width)))


def _convert(pixels: NDArray[np.uint8], dtype: ImageDtype) -> NDArray:
    if dtype is ImageDtype.UINT16:
        return pixels.astype(np.uint16) * np.uint16(257)
    if dtype is ImageDtype.FLOAT32:
        return pixels.astype(np.float32) / np.float32(255.0)
    return pixels


def _apply_nodata(
    values: NDArray, mask: NDArray[np.bool_] | None, nodata: float, dtype: ImageDtype
) -> NDArray:
    """Nudge valid samples equal to ``nodata`` by one step; set ``mask`` to ``nodata`` in every band."""
    if not math.isnan(nodata):
        step = 1.0 / 255.0 if dtype is ImageDtype.FLOAT32 else 1
        top = 1.0 if dtype is ImageDtype.FLOAT32 else np.iinfo(dtype.value).max
        other = nodata + step if nodata + step <= top else nodata - step
        values[values == values.dtype.type(nodata)] = values.dtype.type(other)
    if mask is not None:
        values[:, mask] = values.dtype.type(nodata)
    return values


def _profile(spec: SatelliteSceneSpec, count: int, dtype: str, crs: CRS, transform: Affine) -> dict:
    return {
        "driver": "GTiff",
        "height": spec.height,
        "width": spec.width,
        "count": count,
        "dtype": dtype,
        "crs": crs,
        "transform": transform,
        "tiled": True,
        "blockxsize": TILE,
        "blockysize": TILE,
        "compress": "deflate",
        "predictor": 3 if dtype == "float32" else 2,
        "BIGTIFF": "IF_SAFER",
    }


def _check_paths(image_path: Path, label_path: Path | None) -> None:
    for path in (image_path, label_path):
        if path is not None and not path.parent.is_dir():
            raise InputError(str(path), f"directory {path.parent} does not exist (create it first)")
    if label_path is not None and label_path.resolve() == image_path.resolve():
        raise ConfigError(f"label_path: expected a path other than image_path, received {label_path}")


def write_scene(
    image_path: str | os.PathLike[str],
    *,
    spec: SatelliteSceneSpec,
    label_path: str | os.PathLike[str] | None = None,
    crs: str | CRS = "EPSG:32633",
    transform: Affine | None = None,
    nodata: float | None = None,
    dtype: str | ImageDtype = "uint8",
    block: int = 1024,
    nodata_fraction: float = 0.0,
) -> SceneFiles:
    """Render ``spec`` block by block into a tiled GeoTIFF (and a label GeoTIFF).

    Parameters
    ----------
    image_path : path
        Output image, ``spec.bands`` bands (R, G, B[, NIR]).
    spec : SatelliteSceneSpec
        The scene to render (its fields, ``large_buildings`` included, are stored in
        the image's ``SEGPIPE_SYNTHETIC_SPEC`` tag).
    label_path : path, optional
        Output labels: band 1 class id, band 2 instance id, same grid.
    crs : str or CRS, optional
        Coordinate reference system (projected or geographic).
    transform : Affine, optional
        Pixel-to-CRS transform; default :func:`default_transform` of ``crs``.
    nodata : float, optional
        Dataset nodata value (NaN allowed for ``float32``).
    dtype : {"uint8", "uint16", "float32"}, optional
        Image sample type (``uint16`` = value x 257, ``float32`` = value / 255).
    block : int, optional
        Side of the rendered blocks, a multiple of 512: memory is a few float32
        copies of one block.
    nodata_fraction : float, optional
        About this fraction of the scene (a top-left wedge) is set to ``nodata``.

    Returns
    -------
    SceneFiles
        The image path and the label path (or ``None``).

    Raises
    ------
    ConfigError
        On an invalid dtype, CRS, nodata, fraction or block.
    InputError
        If an output directory does not exist.
    """
    kind = ImageDtype.parse(dtype)
    _check_nodata(nodata, kind, nodata_fraction)
    _check_block(block)
    crs_obj = _parse_crs(crs)
    image_out = Path(image_path)
    label_out = None if label_path is None else Path(label_path)
    _check_paths(image_out, label_out)
    profile = _profile(spec, spec.bands, kind.value, crs_obj, transform or default_transform(crs_obj))
    # the label file lands first, the image last: a complete image always has its labels
    with atomic_path(image_out) as image_tmp, \
            (nullcontext(None) if label_out is None else atomic_path(label_out)) as label_tmp:
        temps = [image_tmp] + ([] if label_tmp is None else [label_tmp])
        _write(temps, spec, profile, nodata=nodata, dtype=kind, block=block, fraction=nodata_fraction)
    return SceneFiles(image_out, label_out)


def _write(
    temps: list[Path], spec: SatelliteSceneSpec, profile: dict, *,
    nodata: float | None, dtype: ImageDtype, block: int, fraction: float,
) -> None:
    lab_dtype = label_file_dtype(spec)
    with rasterio.Env(GDAL_CACHEMAX=_GDAL_CACHE_MB), \
            rasterio.open(temps[0], "w", **profile, nodata=nodata) as image:
        image.descriptions = _BAND_NAMES[: spec.bands]
        image.colorinterp = _COLOR_INTERP[: spec.bands]
        image.update_tags(SEGPIPE_SYNTHETIC_SPEC=json.dumps(asdict(spec)))
        labels = None
        if len(temps) > 1:
            labels = rasterio.open(temps[1], "w", **{**profile, "count": 2, "dtype": lab_dtype, "predictor": 2})
            labels.descriptions = ("class", "instance")
            labels.update_tags(
                UNLABELLED_CLASS=str(UNLABELLED),
                CLASSES=json.dumps([asdict(c) for c in SATELLITE_CLASSES]),
            )
        try:
            for window in _blocks(spec.shape, block):
                _write_block(image, labels, spec, window, nodata, dtype, fraction)
        finally:
            if labels is not None:
                labels.close()


def _write_block(
    image: rasterio.io.DatasetWriter, labels: rasterio.io.DatasetWriter | None,
    spec: SatelliteSceneSpec, window: Window, nodata: float | None, dtype: ImageDtype,
    fraction: float,
) -> None:
    scene = render(spec, window)
    values = _convert(scene.image, dtype)
    mask = nodata_wedge(spec.shape, window, fraction) if fraction > 0 else None
    if nodata is not None:
        values = _apply_nodata(values, mask, nodata, dtype)
    rio_window = RioWindow(window.start[1], window.start[0], window.shape[1], window.shape[0])
    image.write(values, window=rio_window)
    if labels is None:
        return
    out = np.stack([scene.semantic.astype(labels.dtypes[0]), scene.instance.astype(labels.dtypes[1])])
    if mask is not None:
        out[0][mask] = UNLABELLED
        out[1][mask] = 0
    labels.write(out, window=rio_window)
