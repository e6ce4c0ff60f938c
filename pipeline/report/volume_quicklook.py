"""Quicklooks of a volume: one slice in each of the three planes, classes overlaid.

Each slice is read from the Zarr store on its own (memory: one plane), shown in
neurological convention (patient right on the right of the image, anterior and
superior up) and stretched to the physical aspect ratio of its voxels, so an
anisotropic volume does not look squashed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr
from PIL import Image

from pipeline.report.quicklook import instance_colours, overlay
from pipeline.store import IMAGE, INSTANCE, VALID

# plane name -> the canonical axis it cuts; canonical axes are (Z=S, Y=A, X=R)
PLANES = {"axial": 0, "coronal": 1, "sagittal": 2}


def plane_slice(shape: tuple[int, int, int], axis: int, index: int) -> tuple:
    """Index expression for one plane of a ``(Z, Y, X)`` array.

    Examples
    --------
    >>> plane_slice((4, 5, 6), 1, 2)
    (slice(None, None, None), 2, slice(None, None, None))
    """
    key: list = [slice(None)] * len(shape)
    key[axis] = index
    return tuple(key)


def orient_plane(plane: np.ndarray) -> np.ndarray:
    """Rows of a canonical plane run posterior->anterior or inferior->superior: flip them
    so anterior/superior is up."""
    return plane[::-1]


def _grey(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    finite = values[valid & np.isfinite(values)]
    lo, hi = np.percentile(finite, (1, 99)) if finite.size else (0.0, 1.0)
    scaled = np.nan_to_num(np.clip((values - lo) / max(hi - lo, 1e-12), 0, 1))
    grey = (scaled * 255).astype(np.uint8)
    grey[~valid] = 0
    return np.repeat(grey[..., None], 3, axis=-1)


def _physical_size(shape: tuple[int, int], spacing: tuple[float, float], max_size: int) -> tuple[int, int]:
    """PIL ``(width, height)`` that shows the plane at its physical aspect ratio."""
    h_mm, w_mm = shape[0] * spacing[0], shape[1] * spacing[1]
    scale = max_size / max(h_mm, w_mm)
    return max(1, round(w_mm * scale)), max(1, round(h_mm * scale))


def write_volume_quicklooks(group: zarr.Group, semantic: zarr.Array,
                            colors: list[tuple[int, int, int]], out_dir: Path, *,
                            spacing: tuple[float, float, float], max_size: int = 512) -> dict[str, str]:
    """Write ``quicklook_<plane>.png`` (image with classes) and ``quicklook_<plane>_instances.png``
    for the central slice of each plane; returns label -> file name."""
    shape = tuple(semantic.shape)
    names: dict[str, str] = {}
    for plane, axis in PLANES.items():
        key = plane_slice(shape, axis, shape[axis] // 2)
        image = np.asarray(group[IMAGE][(0, *key)], dtype=np.float32)
        valid = np.asarray(group[VALID][key], dtype=bool)
        rgb = orient_plane(_grey(image, valid))
        labels = orient_plane(np.asarray(semantic[key]))
        in_plane = tuple(s for a, s in enumerate(spacing) if a != axis)
        size = _physical_size(labels.shape, in_plane, max_size)
        shown = overlay(rgb, labels, colors)
        names[plane] = f"quicklook_{plane}.png"
        Image.fromarray(shown).resize(size, Image.NEAREST).save(out_dir / names[plane])
        if INSTANCE in group:
            ids = orient_plane(np.asarray(group[INSTANCE][key]))
            inst = (0.35 * rgb).astype(np.uint8)
            inst[ids > 0] = instance_colours(ids[ids > 0])
            names[f"{plane} instances"] = f"quicklook_{plane}_instances.png"
            Image.fromarray(inst).resize(size, Image.NEAREST).save(
                out_dir / names[f"{plane} instances"])
    return names
