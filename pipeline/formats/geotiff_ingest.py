"""Ingest: copy the selected bands of a GeoTIFF into ``scene.zarr`` window by window.

Memory is bounded by one block of ``image_chunk`` x ``image_chunk`` pixels; the
scene is never loaded whole. The valid mask (False where the input is nodata) is
stored beside the image so every later stage masks the same pixels.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.io.geotiff import GeoTiffReader, RasterInfo, open_raster
from pipeline.store import IMAGE, VALID, create_store, iter_blocks
from segcore.errors import InputError


@dataclass(frozen=True)
class IngestResult:
    info: RasterInfo
    bands: tuple[int, ...]
    seconds: float


def check_bands(info: RasterInfo, bands: list[int], needed: int) -> None:
    """Raise one clear InputError when the scene cannot feed the model."""
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


def ingest_geotiff(
    path: Path, store_path: Path, *, bands: list[int], needed: int, image_chunk: int,
    attrs: dict, info: RasterInfo | None = None,
) -> IngestResult:
    """Validate ``path`` (unless its ``info`` is given) and copy its ``bands`` into a new
    store at ``store_path``."""
    start = time.perf_counter()
    info = info or open_raster(path)
    check_bands(info, bands, needed)
    attrs = {**attrs, **info.to_attrs(), "bands": list(bands)}
    group = create_store(
        store_path, bands=len(bands), shape=info.shape, dtype=info.dtype,
        image_chunk=image_chunk, attrs=attrs,
    )
    image, valid = group[IMAGE], group[VALID]
    block = (image_chunk * 2, image_chunk * 2)
    with GeoTiffReader(path, bands=bands) as reader:
        for rows, cols in iter_blocks(info.shape, block):
            try:
                pixels, mask = reader.read_with_valid((rows, cols))
                image[:, rows, cols] = pixels
                valid[rows, cols] = mask
            except InputError:
                raise
            except Exception as exc:  # a corrupt block deep inside a valid header
                raise InputError(
                    str(path),
                    f"cannot read pixels at rows {rows.start}-{rows.stop}, "
                    f"cols {cols.start}-{cols.stop}: {exc}",
                ) from exc
    return IngestResult(info=info, bands=tuple(bands), seconds=time.perf_counter() - start)
