"""GeoTIFF scenes: georeferenced rasters in, Cloud-Optimized GeoTIFFs out.

* **Ingest** copies the selected bands into ``scene.zarr/image`` ``(C, H, W)`` window by
  window (memory: one block of ``2 * image_chunk`` pixels a side), with the valid mask
  (False where the input is nodata) beside it, so every later stage masks the same pixels.
* **Labels** (one band of class ids, an optional second band of instance ids) must share
  the scene's grid; they are read window by window, never copied.
* **Sizes** are ground areas in m² on the CRS's ellipsoid, in every CRS
  (:mod:`pipeline.formats.ground_areas`).
* **Exports** are COGs with the input's CRS, transform and size (:mod:`pipeline.io.cog`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from pipeline.blockmap import BlockMap, serial
from pipeline.bundle import ModelBundle
from pipeline.formats.base import SuffixFormat, Truth
from pipeline.formats.ground_areas import GroundAreas
from pipeline.io.cog import write_cog
from pipeline.io.geotiff import GeoTiffReader, RasterInfo, open_raster
from pipeline.options import RunOptions, band_numbers
from pipeline.report.quicklook import (
    assemble,
    decimation,
    strided_window,
    write_quicklooks,
)
from pipeline.resolution import warn_resolution
from pipeline.storage.chunk_io import Regions, write_region
from pipeline.store import IMAGE, VALID, create_store, iter_blocks
from pipeline.streaming.metrics import unlabelled_value
from pipeline.streaming.summary import ClassTotals, SizeUnit, summarise
from segcore.errors import InputError


@dataclass(frozen=True)
class GeoTiffScene:
    """An ingested GeoTIFF: the raster's description and the bands fed to the model."""

    info: RasterInfo
    bands: tuple[int, ...]
    seconds: float
    # the image (C, h, w) and valid mask (h, w) at the quicklook's stride, kept by ingest
    # (None after a resumed ingest: the quicklook reads the store then)
    preview: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False,
                                                          compare=False)

    @property
    def shape(self) -> tuple[int, int]:
        return self.info.shape

    @property
    def model_shape(self) -> tuple[int, int]:
        return self.info.shape

    @property
    def model_group(self) -> None:
        return None


def check_bands(info: RasterInfo, bands: list[int], needed: int) -> None:
    """Raise one clear InputError when the scene cannot feed the model."""
    bands = band_numbers(bands, path=info.path, noun="a GeoTIFF")
    if len(bands) != needed:
        raise InputError(
            info.path,
            f"the model needs {needed} input bands, --bands selects {len(bands)} ({bands})",
        )
    missing = [b for b in bands if b > info.count]
    if missing:
        raise InputError(
            info.path,
            f"has {info.count} band(s) but the model needs band(s) {bands}; "
            f"band {missing[0]} does not exist (choose others with --bands)",
        )


def copy_bands(info: RasterInfo, store_path: Path, *, bands: list[int], image_chunk: int,
               attrs: dict, blocks: BlockMap = serial, preview_step: int | None = None
               ) -> tuple[np.ndarray, np.ndarray] | None:
    """Copy ``bands`` of the raster into a new store at ``store_path``, one block pass.

    Blocks are ``2 * image_chunk`` pixels a side (whole chunks: no two writers share one).
    With ``preview_step``, returns the image ``(C, h, w)`` and valid mask ``(h, w)`` at
    that stride (``[..., ::step, ::step]``), gathered from the blocks as they are copied.
    """
    group = create_store(store_path, bands=len(bands), shape=info.shape, dtype=info.dtype,
                         image_chunk=image_chunk, attrs=attrs)
    keys = list(iter_blocks(info.shape, (image_chunk * 2, image_chunk * 2)))
    # one reader per group of blocks, not per block: each group (thread or task) gets its
    # own copy, which reopens the file (opening and validating it cost about 8 ms a block)
    with GeoTiffReader(Path(info.path), bands=list(bands)) as reader:
        parts = blocks.map(_copy_block, keys, reader, group[IMAGE], group[VALID],
                           preview_step, label="ingest")
    if preview_step is None:
        return None
    h, w = (-(-n // preview_step) for n in info.shape)
    return (assemble([p[0] for p in parts], (len(bands), h, w), np.dtype(info.dtype)),
            assemble([p[1] for p in parts], (h, w), np.dtype(bool)))


def _copy_block(key: tuple[slice, slice], reader: GeoTiffReader, image: zarr.Array,
                valid: zarr.Array, preview_step: int | None = None) -> tuple | None:
    rows, cols = key
    try:
        pixels, mask = reader.read_with_valid((rows, cols))
    except InputError:
        raise
    except Exception as exc:  # a corrupt block deep inside a valid header
        raise InputError(
            reader.info.path,
            f"cannot read pixels at rows {rows.start}-{rows.stop}, "
            f"cols {cols.start}-{cols.stop}: {_first_cause(exc)}",
        ) from exc
    write_region(image, (slice(None), rows, cols), pixels)
    write_region(valid, (rows, cols), mask)
    if preview_step is None:
        return None
    start = (rows.start, cols.start)  # the block's share of the quicklook (small)
    return (strided_window(pixels, start, preview_step), strided_window(mask, start, preview_step))


def _first_cause(exc: BaseException) -> str:
    """The innermost message of an exception chain on one line (GDAL's decoder error,
    e.g. ``ZIPDecode:Decoding error``, sits below rasterio's "Read failed")."""
    seen = [exc]
    while (nxt := seen[-1].__cause__ or seen[-1].__context__) is not None and nxt not in seen:
        seen.append(nxt)
    return " ".join(str(seen[-1]).split())


def open_label_raster(path: Path, scene: RasterInfo) -> RasterInfo:
    """Validate a label file against the scene's grid."""
    info = open_raster(path, require_crs=False)
    if info.shape != scene.shape:
        raise InputError(
            str(path),
            f"labels are {info.width}x{info.height} pixels but the scene "
            f"{Path(scene.path).name} is {scene.width}x{scene.height}; they must share one grid",
        )
    if info.crs_wkt and scene.crs_wkt and not np.allclose(
        info.transform, scene.transform, rtol=0, atol=1e-9 * max(1.0, *map(abs, scene.transform))
    ):
        raise InputError(
            str(path), f"labels transform {info.transform} differs from the scene's {scene.transform}"
        )
    if np.dtype(info.dtype).kind not in "ui":
        raise InputError(str(path), f"labels must hold integer class ids, got {info.dtype}")
    return info


class _Band:
    """A 2-D sliceable view of one label band (``None`` reader -> zeros)."""

    def __init__(self, reader: GeoTiffReader | None, shape: tuple[int, int]) -> None:
        self.reader, self.shape = reader, shape

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        rows, cols = key
        if self.reader is None:
            return np.zeros((rows.stop - rows.start, cols.stop - cols.start), np.uint32)
        return self.reader.read((rows, cols))[0]


class GeoTiffFormat(SuffixFormat):
    """GeoTIFF input (``.tif``, ``.tiff``); see the module docstring."""

    name = "geotiff"
    noun = "a GeoTIFF scene"
    description = "a GeoTIFF (.tif, .tiff)"
    suffixes = (".tif", ".tiff")
    ndim = 2

    def open(self, path: Path) -> RasterInfo:
        return open_raster(path)

    def ingest(self, info: RasterInfo, store: Path, *, bundle: ModelBundle,
               options: RunOptions, attrs: dict[str, Any], copy: bool,
               blocks: BlockMap = serial) -> GeoTiffScene:
        start = time.perf_counter()
        bands = options.bands or bundle.default_bands(info.count)
        check_bands(info, bands, bundle.spec.input.channels)
        warn_resolution(info, bundle.spec)  # the model's declared ground sample distance
        preview = None
        if copy:
            preview = copy_bands(info, store, bands=bands, image_chunk=options.image_chunk,
                                 attrs={**attrs, **info.to_attrs(), "bands": list(bands)},
                                 blocks=blocks,
                                 preview_step=decimation(info.shape, options.quicklook_size))
        seconds = time.perf_counter() - start if copy else 0.0
        return GeoTiffScene(info=info, bands=tuple(bands), seconds=seconds, preview=preview)

    def grid_fields(self, ingested: GeoTiffScene, options: RunOptions) -> dict[str, Any]:
        info = ingested.info
        return {"shape": list(info.shape), "bands": list(ingested.bands),
                "crs": info.crs_wkt, "transform": list(info.transform)}

    def check_labels(self, path: Path, ingested: GeoTiffScene) -> None:
        open_label_raster(path, ingested.info)

    @contextmanager
    def open_labels(self, path: Path, ingested: GeoTiffScene,
                    group: zarr.Group) -> Iterator[Truth]:
        labels = open_label_raster(path, ingested.info)
        classes = GeoTiffReader(Path(labels.path), bands=[1])
        instances = GeoTiffReader(Path(labels.path), bands=[2]) if labels.count >= 2 else None
        try:
            yield Truth(_Band(classes, labels.shape), _Band(instances, labels.shape),
                        unlabelled_value(labels.dtype), labels.path)
        finally:
            classes.close()
            if instances is not None:
                instances.close()

    def extra_metrics(self, group: zarr.Group, truth: Truth, ingested: GeoTiffScene, *,
                      classes: list[tuple[int, str]],
                      blocks: BlockMap = serial) -> dict[str, Any]:
        return {}

    def summarise(self, semantic: zarr.Array, ingested: GeoTiffScene, num_classes: int,
                  blocks: BlockMap = serial) -> ClassTotals:
        unit, sizes = self.sizes(ingested)
        return summarise(semantic, num_classes, unit=unit, sizes=sizes, blocks=blocks)

    def sizes(self, ingested: GeoTiffScene) -> tuple[SizeUnit, GroundAreas]:
        return SizeUnit.AREA_M2, ground_areas(ingested.info)

    def export(self, group: zarr.Group, names: list[str], ingested: GeoTiffScene,
               out_dir: Path, nodata: dict[str, int], blocks: BlockMap = serial) -> dict[str, str]:
        """One COG per array, each written by its own block task."""
        files = blocks.map(_export_cog, names, group, ingested.info, out_dir, nodata,
                           label="export")
        return dict(zip(names, files))

    def quicklooks(self, group: zarr.Group, semantic: zarr.Array, ingested: GeoTiffScene, *,
                   colors: list[tuple[int, int, int]], out_dir: Path,
                   options: RunOptions, blocks: BlockMap = serial) -> dict[str, str]:
        return write_quicklooks(group, semantic, colors, out_dir, options.quicklook_size,
                                blocks=blocks, preview=ingested.preview)


def ground_areas(info: RasterInfo) -> GroundAreas:
    """Per-block pixel areas in m² on the CRS's ellipsoid (:mod:`pipeline.formats.ground_areas`)."""
    return GroundAreas(info.crs_wkt, tuple(info.transform)[:6], info.is_geographic,
                       info.linear_unit_m)


def cog_file(name: str) -> str:
    """File name of the COG a label array is exported to (``item.json`` names it too).

    >>> cog_file("semantic")
    'semantic.tif'
    """
    return f"{name}.tif"


def _export_cog(name: str, group: zarr.Group, info: RasterInfo, out_dir: Path,
                nodata: dict[str, int]) -> str:
    array = group[name]
    dst = Path(out_dir) / cog_file(name)
    write_cog(dst, Regions(array), info=info, dtype=str(array.dtype), nodata=nodata.get(name))
    return dst.name


GEOTIFF = GeoTiffFormat()
