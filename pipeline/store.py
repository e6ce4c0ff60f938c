"""The per-scene Zarr v3 store (``scene.zarr``) and its arrays.

Layout (``docs/outputs.md``): ``image`` ``(C, H, W)`` in the input's dtype, ``valid``
``(H, W)`` bool (False = input nodata), ``semantic`` ``(H, W)`` class ids with
255 (65535 for uint16) as nodata, ``instance`` (scene-unique ids, 0 = none) and
``panoptic`` (uint32 segment ids, 0 = void); ``instance_raw`` holds the tiles'
instance ids before cross-tile stitching. Label arrays are chunked exactly like the tile
grid's cores, so each worker owns whole chunks and no two writers ever share one
(Zarr writers in different processes that share a chunk or shard lose data). No sharding.
Group attrs hold the georeferencing, class table and model provenance.

A store lives in a local directory or under an ``s3://`` prefix (zarr's obstore
backend, :mod:`pipeline.storage.zarr_stores`); :func:`open_store` and
:func:`create_store` take either, as a string, a path or an
:class:`~pipeline.storage.S3Uri`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from pipeline.storage.location import Location
from pipeline.storage.zarr_stores import zarr_store

IMAGE = "image"
VALID = "valid"
SEMANTIC = "semantic"
OFFSETS = "instance_offsets"  # (ndim, *S) float32 pixel-to-centre vectors of thing pixels
INSTANCE = "instance"
PANOPTIC = "panoptic"
_COMPRESSORS = (ZstdCodec(level=3),)
# The image is a working copy of the input, written once and read by every tile whose
# window touches a chunk (up to nine times with a halo). zstd's fast level -1 still
# finds repeats (nodata borders, flat areas) but does not entropy-code what is left:
# a 3 x 512² chunk of noise-like imagery encodes in 0.15 against 1.1-1.5 ms at level 1
# and decodes in 0.06 against 0.9-1.1 ms, for 0-35 % more bytes (photographs and the
# bench scenes; 1.51 against 1.00 on a dark sky image, 2.14 against 2.01 with half of
# the chunk nodata).
_IMAGE_COMPRESSORS = (ZstdCodec(level=-1),)


def semantic_dtype(num_classes: int) -> tuple[np.dtype, int]:
    """Semantic dtype and its nodata value for a class count.

    Examples
    --------
    >>> semantic_dtype(5)
    (dtype('uint8'), 255)
    >>> semantic_dtype(300)
    (dtype('uint16'), 65535)
    """
    if num_classes < 255:
        return np.dtype("uint8"), 255
    return np.dtype("uint16"), 65535


def create_store(
    path: str | os.PathLike[str] | Location, *, bands: int, shape: tuple[int, ...],
    dtype: str, image_chunk: int, attrs: dict[str, Any], mode: str = "w",
) -> zarr.Group:
    """Create ``scene.zarr`` (or a subgroup path) with its ``image`` ``(C, *shape)`` and
    ``valid`` ``shape`` arrays; ``shape`` is ``(H, W)`` or ``(Z, Y, X)``."""
    group = zarr.open_group(zarr_store(path), mode=mode, zarr_format=3)
    chunk = tuple(min(image_chunk, n) for n in shape)
    group.create_array(
        IMAGE, shape=(bands, *shape), chunks=(bands, *chunk), dtype=dtype,
        compressors=_IMAGE_COMPRESSORS, fill_value=0,
    )
    # fill True: an all-valid chunk (most of a scene) is not written, and a tile that
    # reads it gets the fill without a file (every ingest writes its whole mask; a store
    # whose ingest did not finish is never used, pipeline.run.resume)
    group.create_array(
        VALID, shape=shape, chunks=chunk, dtype="bool", compressors=_COMPRESSORS,
        fill_value=True,
    )
    group.attrs.update(attrs)
    return group


def create_label_array(
    group: zarr.Group, name: str, *, dtype: np.dtype, fill_value: int,
    chunks: tuple[int, ...],
) -> zarr.Array:
    """Create (or replace) a label array chunked like the tile cores."""
    shape = group[VALID].shape
    return group.create_array(
        name, shape=shape, chunks=chunks, dtype=dtype, fill_value=fill_value,
        compressors=_COMPRESSORS, overwrite=True,
    )


def create_offsets_array(group: zarr.Group, *, chunks: tuple[int, ...],
                         reuse: bool = False) -> zarr.Array:
    """The instance head's offsets ``(ndim, *shape)`` float32, one chunk per tile core
    (every axis's vectors together); a killed run's array when ``reuse``."""
    shape = group[VALID].shape
    if reuse and OFFSETS in group and group[OFFSETS].shape == (len(shape), *shape):
        return group[OFFSETS]
    return group.create_array(
        OFFSETS, shape=(len(shape), *shape), chunks=(len(shape), *chunks), dtype="float32",
        fill_value=0.0, compressors=_COMPRESSORS, overwrite=True,
    )


def open_store(path: str | os.PathLike[str] | Location, mode: str = "r") -> zarr.Group:
    """Open ``scene.zarr`` (or a subgroup path): a local path or an ``s3://`` URI."""
    return zarr.open_group(zarr_store(path, read_only=mode == "r"), mode=mode, zarr_format=3)


def iter_blocks(shape: tuple[int, ...], block: tuple[int, ...]) -> Iterator[tuple[slice, ...]]:
    """Slices of a block decomposition of ``shape`` in C order (bounded-memory passes).

    Examples
    --------
    >>> [tuple((s.start, s.stop) for s in b) for b in iter_blocks((3, 5), (2, 4))]
    [((0, 2), (0, 4)), ((0, 2), (4, 5)), ((2, 3), (0, 4)), ((2, 3), (4, 5))]
    """
    ranges = [range(0, n, b) for n, b in zip(shape, block)]
    for starts in np.ndindex(*[len(r) for r in ranges]):
        yield tuple(
            slice(r[i], min(r[i] + b, n))
            for r, i, b, n in zip(ranges, starts, block, shape)
        )
