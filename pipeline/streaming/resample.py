"""Resample a stored array onto another voxel grid, one destination chunk at a time.

For each chunk of ``dst`` the per-axis source coordinates of its voxels are
computed (``segcore.geometry.resample``), only the source bounding box they
need is read, interpolated and written. The result equals resampling the
whole array at once, exactly. Memory per step: one ``dst`` chunk plus its
source box, about ``chunk * n_in / n_out`` voxels per axis (+1 for linear),
so a strong downsampling reads a proportionally larger box.

Leading axes (e.g. the channel axis of a ``(C, Z, Y, X)`` image) pass
through unchanged: ``spatial_dims`` says how many trailing axes are
resampled, and the leading sizes of ``src`` and ``dst`` must agree.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from pipeline.blockmap import BlockMap, serial
from pipeline.store import VALID, iter_blocks
from segcore.errors import ConfigError
from segcore.geometry.resample import (
    linear_block,
    nearest_block,
    nearest_indices,
    source_coordinates,
    source_window,
)
from segcore.hints import parse_choice

__all__ = ["MODEL_GROUP", "ResampleMode", "resample_array", "resample_back"]

MODEL_GROUP = "model"
"""Subgroup of ``scene.zarr`` holding a scene on the model's grid (when that differs)."""
_COMPRESSORS = (ZstdCodec(level=3),)


class ResampleMode(str, Enum):
    """``linear`` for images (float output), ``nearest`` for labels and masks."""

    LINEAR = "linear"
    NEAREST = "nearest"


def _check_arrays(src: Any, dst: Any, spatial_dims: int, mode: ResampleMode) -> int:
    if not 1 <= spatial_dims <= len(src.shape) or len(src.shape) != len(dst.shape):
        raise ConfigError(
            f"spatial_dims: expected 1..{len(src.shape)} trailing axes of src {src.shape} "
            f"and dst {dst.shape} (same number of axes), received {spatial_dims}"
        )
    lead = len(src.shape) - spatial_dims
    if tuple(src.shape[:lead]) != tuple(dst.shape[:lead]):
        raise ConfigError(
            f"dst: expected the leading (non-spatial) sizes of src {tuple(src.shape[:lead])}, "
            f"received {tuple(dst.shape[:lead])}"
        )
    if mode is ResampleMode.LINEAR and not np.issubdtype(dst.dtype, np.floating):
        raise ConfigError(
            f"mode: 'linear' writes interpolated values, expected a floating dst dtype, "
            f"received {dst.dtype}; use mode='nearest' for labels and masks"
        )
    return lead


def _resample_chunk(src: Any, chunk: tuple[slice, ...], lead: int, mode: ResampleMode,
                    dst_shape: tuple[int, ...]) -> np.ndarray:
    """The values of ``dst[chunk]``, read from the source box they need."""
    linear = mode is ResampleMode.LINEAR
    read: list[slice] = list(chunk[:lead])
    axes, origin = [], []
    for k in range(lead, len(dst_shape)):
        n_in, n_out = src.shape[k], dst_shape[k]
        if linear:
            axis = source_coordinates(n_out, n_in, clamp=True)[chunk[k]]
        else:
            axis = nearest_indices(n_out, n_in)[chunk[k]]
        start, stop = source_window(axis, n_in, linear=linear)
        read.append(slice(start, stop))
        axes.append(axis)
        origin.append(start)
    box = np.asarray(src[tuple(read)])
    if linear:
        return linear_block(box, origin, axes)
    return nearest_block(box, origin, axes)


def _resample_block(chunk: tuple[slice, ...], src: Any, dst: Any, lead: int,
                    mode: ResampleMode) -> None:
    values = _resample_chunk(src, chunk, lead, mode, tuple(dst.shape))
    dst[chunk] = values.astype(dst.dtype, copy=False)


def resample_array(
    src: Any, dst: Any, *, mode: ResampleMode | str, spatial_dims: int = 3,
    blocks: BlockMap = serial,
) -> None:
    """Fill ``dst`` with ``src`` resampled onto ``dst``'s grid, chunk by chunk.

    Parameters
    ----------
    src : (*lead, *spatial_in) zarr.Array
        Anything with ``shape`` that slices with a tuple of slices into numpy.
    dst : (*lead, *spatial_out) zarr.Array
        Created by the caller (e.g. with ``resampled_shape``); written in
        ``dst.chunks`` blocks, so concurrent writers never share a chunk.
    mode : {"linear", "nearest"}
        ``linear`` (PyTorch ``trilinear``/``bilinear``, ``align_corners=False``)
        needs a floating ``dst``; ``nearest`` (``nearest-exact``) keeps values,
        for labels and bool masks.
    spatial_dims : int, default 3
        Number of trailing axes to resample; leading axes pass through.
    blocks : BlockMap, default serial
        Where the chunks are computed (a Ray cluster: :mod:`pipeline.distributed`);
        ``src`` and ``dst`` must then pickle (zarr arrays do).

    Raises
    ------
    ConfigError
        On an unknown mode, mismatched leading axes, or linear into a
        non-floating ``dst``.
    """
    mode = parse_choice(ResampleMode, mode, name="mode")
    lead = _check_arrays(src, dst, spatial_dims, mode)
    dst_shape = tuple(dst.shape)
    chunks = list(iter_blocks(dst_shape, tuple(getattr(dst, "chunks", dst_shape))))
    blocks.map(_resample_block, chunks, src, dst, lead, mode, label="resample")


def resample_back(group: zarr.Group, name: str, *, model_group: str,
                  chunks: tuple[int, ...], blocks: BlockMap = serial) -> zarr.Array:
    """``<model_group>/<name>`` -> ``<name>`` on the stored grid, nearest neighbour."""
    src = group[f"{model_group}/{name}"]
    dst = group.create_array(name, shape=group[VALID].shape, chunks=chunks, dtype=src.dtype,
                             fill_value=src.fill_value, compressors=_COMPRESSORS, overwrite=True)
    resample_array(src, dst, mode="nearest", spatial_dims=len(dst.shape), blocks=blocks)
    return dst
