"""Quicklook images: a decimated RGB view of the scene with the classes overlaid.

Read chunk by chunk with a stride, so memory is bounded by the quicklook size
(about ``max_size`` pixels on the long side), not the scene.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import zarr
from PIL import Image

from pipeline.blockmap import BlockMap, serial
from pipeline.report.png import write_rgb_png
from pipeline.storage.chunk_io import read_region
from pipeline.store import IMAGE, INSTANCE, VALID, iter_blocks


def decimation(shape: tuple[int, int], max_size: int) -> int:
    """Stride that brings the long side down to ``max_size`` or less.

    Examples
    --------
    >>> decimation((4096, 2048), 1024), decimation((500, 300), 1024)
    (4, 1)
    """
    return max(1, math.ceil(max(shape) / max_size))


def _strided_block(key: tuple[slice, slice], array: zarr.Array, step: int,
                   lead: tuple) -> np.ndarray:
    # whole chunks decoded (a stride of ``step`` touches every chunk anyway), then strided;
    # a copy, so the block is freed at once
    return np.ascontiguousarray(read_region(array, (*lead, *key))[..., ::step, ::step])


def _strided(array: zarr.Array, step: int, lead: tuple = (),
             blocks: BlockMap = serial) -> np.ndarray:
    """``array[..., ::step, ::step]`` assembled from a block pass over the chunks."""
    h, w = array.shape[-2:]
    out = np.zeros((*array.shape[:-2], -(-h // step), -(-w // step)), dtype=array.dtype)
    chunk = array.chunks[-2:]
    block = (max(chunk[0], step) // step * step, max(chunk[1], step) // step * step)
    keys = list(iter_blocks((h, w), block))
    parts = blocks.map(_strided_block, keys, array, step, lead, label="quicklook")
    for (rows, cols), part in zip(keys, parts):
        out[..., rows.start // step : rows.start // step + part.shape[-2],
            cols.start // step : cols.start // step + part.shape[-1]] = part
    return out


def strided_window(pixels: np.ndarray, start: tuple[int, int], step: int
                   ) -> tuple[np.ndarray, tuple[int, int]]:
    """The pixels of a window that fall on the scene's ``::step`` grid, and where they go.

    ``pixels`` ``(..., h, w)`` start at scene row/col ``start``; returns
    ``(pixels[..., r0::step, c0::step], (row, col))`` with ``(row, col)`` the position
    in the ``::step`` view of the scene. Lets a pass that already holds a window
    (ingest) keep its part of a quicklook instead of reading the scene again.

    Examples
    --------
    >>> window = np.arange(100).reshape(10, 10)
    >>> part, at = strided_window(window, (3, 4), 4)
    >>> part.tolist(), at
    ([[10, 14, 18], [50, 54, 58], [90, 94, 98]], (1, 1))
    >>> np.shares_memory(part, window)  # a copy: the window can be freed
    False
    """
    offsets = [(-s) % step for s in start]
    # a copy: a strided view would keep the whole window alive as long as the part
    part = pixels[..., offsets[0]::step, offsets[1]::step].copy()
    return part, tuple((s + o) // step for s, o in zip(start, offsets))


def assemble(parts: list[tuple[np.ndarray, tuple[int, int]]], shape: tuple[int, ...],
             dtype: np.dtype) -> np.ndarray:
    """Place :func:`strided_window` parts into one ``shape`` array (zeros elsewhere)."""
    out = np.zeros(shape, dtype=dtype)
    for part, (row, col) in parts:
        out[..., row : row + part.shape[-2], col : col + part.shape[-1]] = part
    return out


def rgb_preview(group: zarr.Group, step: int, blocks: BlockMap = serial, *,
                strided: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """``(h, w, 3)`` uint8 contrast-stretched view of the first three bands.

    ``strided``: the image ``(C, h, w)`` and valid mask ``(h, w)`` already decimated
    by ``step`` (kept by ingest); else both are read from ``group``.
    """
    if strided is None:
        strided = (_strided(group[IMAGE], step, (slice(None),), blocks),
                   _strided(group[VALID], step, blocks=blocks))
    image, valid = strided
    valid = valid.astype(bool)
    bands = image[:3] if image.shape[0] >= 3 else np.repeat(image[:1], 3, axis=0)
    rgb = np.zeros((*bands.shape[1:], 3), dtype=np.uint8)
    for i, band in enumerate(bands):
        if band.dtype.kind == "u" and band.dtype.itemsize <= 2:
            rgb[..., i] = _stretch_integers(band, valid)
            continue
        band = band.astype(np.float32)
        values = band[valid & np.isfinite(band)]
        lo, hi = np.percentile(values, (2, 98)) if values.size else (0.0, 1.0)
        rgb[..., i] = _stretched(band, lo, hi)
    rgb[~valid] = 0
    return rgb


def _stretched(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``values`` mapped linearly from ``[lo, hi]`` to ``[0, 255]``, clipped (NaN: 0)."""
    scaled = (values - lo) / max(hi - lo, 1e-12)
    return (np.nan_to_num(np.clip(scaled, 0, 1)) * 255).astype(np.uint8)


def _stretch_integers(band: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """:func:`_stretched` of an 8- or 16-bit band between its 2nd and 98th percentiles
    of valid pixels, from a histogram and a table of every sample value (one pass over
    the band each, instead of sorting float copies of it).

    >>> band = np.array([[0, 10], [20, 250]], np.uint8)
    >>> _stretch_integers(band, np.ones((2, 2), bool)).tolist()
    [[0, 10], [20, 255]]
    """
    counts = np.bincount(band[valid], minlength=np.iinfo(band.dtype).max + 1)
    lo, hi = _percentiles(counts, (2, 98)) if counts.sum() else (0.0, 1.0)
    table = _stretched(np.arange(len(counts), dtype=np.float32), lo, hi)
    return table[band]


def _percentiles(counts: np.ndarray, q: tuple[float, ...]) -> list[float]:
    """Percentiles ``q`` of the sample values counted in ``counts``, interpolated
    linearly between order statistics as :func:`numpy.percentile` does.

    >>> _percentiles(np.bincount([3, 1, 4, 1, 5, 9, 2, 6]), (2, 50, 98))
    [1.0, 3.5, 8.579999999999998]
    """
    n = int(counts.sum())
    ends = np.cumsum(counts)  # order statistic k (from 0) is the value v with ends[v] > k
    out = []
    for p in q:
        at = p / 100 * (n - 1)
        below = int(np.floor(at))
        a, b = np.searchsorted(ends, [below, min(below + 1, n - 1)], side="right")
        t = at - below
        out.append(float(a + (b - a) * t) if t < 0.5 else float(b - (b - a) * (1 - t)))
    return out


def overlay(rgb: np.ndarray, labels: np.ndarray, colors: list[tuple[int, int, int]],
            alpha: float = 0.45) -> np.ndarray:
    """Blend class colours over ``rgb``; label values outside the table stay as they are.

    One lookup per pixel in two small tables (the scene's weight and the colour's share
    per label value) instead of float copies of the labelled pixels selected by a mask.

    Examples
    --------
    >>> rgb = np.full((1, 3, 3), 100, np.uint8)
    >>> overlay(rgb, np.array([[0, 1, 7]]), [(255, 0, 0), (0, 0, 255)])[0].tolist()
    [[169, 55, 55], [55, 55, 169], [100, 100, 100]]
    """
    table = np.asarray(colors, dtype=np.float32).reshape(-1, 3)
    n = len(table)
    keep = np.ones(n + 1, dtype=np.float32)  # the last row: a value outside the table
    keep[:n] = 1 - alpha
    share = np.zeros((n + 1, 3), dtype=np.float32)
    share[:n] = alpha * table
    index = np.where((labels >= 0) & (labels < n), labels, n).astype(np.intp, copy=False)
    out = rgb * keep[index][..., None]  # float32, as (1 - alpha) * rgb
    out += share[index]
    return out.astype(np.uint8)


def _as_image(picture: np.ndarray | Image.Image) -> Image.Image:
    return picture if isinstance(picture, Image.Image) else Image.fromarray(picture)


def _save_png(picture: np.ndarray | Image.Image, path: Path) -> None:
    """An RGB array by :func:`~pipeline.report.png.write_rgb_png`, anything else by Pillow."""
    if isinstance(picture, np.ndarray) and picture.ndim == 3 and picture.shape[2] == 3 \
            and picture.dtype == np.uint8 and picture.size:
        write_rgb_png(path, picture)
    else:
        _as_image(picture).save(path, compress_level=1)


def class_image(labels: np.ndarray, colors: list[tuple[int, int, int]]) -> Image.Image:
    """Class colours alone, nodata and values outside the table black: for up to 255
    classes a palette image whose values are the class ids, 255 for the rest (one byte a
    pixel: about a quarter of the RGB image's encoding time and 2/3 of its bytes at
    1024²), else RGB. Decoded, the pixels equal ``overlay(zeros, labels, colors, alpha=1)``.

    Examples
    --------
    >>> image = class_image(np.array([[0, 1, 7]]), [(255, 0, 0), (0, 0, 255)])
    >>> image.mode, np.asarray(image).tolist(), np.asarray(image.convert("RGB"))[0].tolist()
    ('P', [[0, 1, 255]], [[255, 0, 0], [0, 0, 255], [0, 0, 0]])
    """
    n = len(colors)
    if n > 255:
        return Image.fromarray(overlay(np.zeros((*labels.shape, 3), np.uint8), labels, colors,
                                       alpha=1.0))
    index = np.where((labels >= 0) & (labels < n), labels, 255).astype(np.uint8)
    image = Image.frombytes("P", index.shape[::-1], np.ascontiguousarray(index).tobytes())
    palette = np.zeros((256, 3), np.uint8)
    palette[:n] = np.asarray(colors, np.float32).reshape(-1, 3).astype(np.uint8)
    image.putpalette(palette.ravel().tolist())
    return image


def instance_colours(ids: np.ndarray) -> np.ndarray:
    """``(..., 3)`` uint8 pseudo-random colour per instance id (0 -> black).

    Examples
    --------
    >>> instance_colours(np.array([0, 7]))[0].tolist()
    [0, 0, 0]
    """
    h = ids.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    rgb = np.stack([(h >> np.uint64(s)) & np.uint64(0xFF) for s in (16, 32, 48)], axis=-1)
    rgb = (rgb.astype(np.uint16) // 2 + 96).astype(np.uint8)
    rgb[ids == 0] = 0
    return rgb


def write_quicklooks(group: zarr.Group, semantic: zarr.Array, colors: list[tuple[int, int, int]],
                     out_dir: Path, max_size: int, blocks: BlockMap = serial, *,
                     preview: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, str]:
    """Write ``quicklook.png`` (image), ``quicklook_semantic.png`` (classes over the image)
    and ``quicklook_classes.png`` (class colours alone, nodata black).

    ``preview``: the image and valid mask decimated by :func:`decimation` of the
    scene's shape and ``max_size`` (ingest keeps them), so the image is not read again.
    """
    step = decimation(semantic.shape, max_size)
    rgb = rgb_preview(group, step, blocks, strided=preview)
    labels = _strided(semantic, step, blocks=blocks)
    names = {"image": "quicklook.png", "semantic": "quicklook_semantic.png",
             "classes": "quicklook_classes.png"}
    images = {"image": rgb, "semantic": overlay(rgb, labels, colors),
              "classes": class_image(labels, colors)}
    if INSTANCE in group:
        ids = _strided(group[INSTANCE], step, blocks=blocks)
        inside = ids > 0
        shown = (0.35 * rgb).astype(np.uint8)  # darkened scene, instances in full colour
        shown[inside] = instance_colours(ids[inside])
        names["instances"] = "quicklook_instances.png"
        images["instances"] = shown
    # PNG encoding is most of a quicklook's time: the files encoded at once (zlib and
    # Pillow release the GIL while they compress), RGB ones without adaptive filters
    with ThreadPoolExecutor(len(images)) as pool:
        list(pool.map(lambda key: _save_png(images[key], out_dir / names[key]), images))
    return names
