"""Scene metrics against ground truth, streamed chunk by chunk.

Label files (CONTRACT.md): same grid as the scene; band 1 holds class ids,
an optional band 2 instance ids. Unlabelled pixels carry 255 in uint8 files and
65535 in wider ones; they and the input's nodata pixels are left out of every
metric. The confusion matrices of all chunks add up to the scene's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

from pipeline.io.geotiff import GeoTiffReader, RasterInfo, open_raster
from pipeline.store import VALID, iter_blocks
from segcore.errors import ConfigError, InputError
from segcore.metrics.confusion import SemanticScores, confusion_matrix


def unlabelled_value(dtype: str) -> int:
    """The class id that marks unlabelled pixels in a label file of ``dtype``.

    Examples
    --------
    >>> unlabelled_value("uint8"), unlabelled_value("uint16")
    (255, 65535)
    """
    return 255 if np.dtype(dtype).itemsize == 1 else 65535


def open_labels(path: Path, scene: RasterInfo) -> RasterInfo:
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


def semantic_confusion(
    semantic: zarr.Array, group: zarr.Group, labels: RasterInfo, num_classes: int
) -> np.ndarray:
    """Confusion matrix ``(K, K)`` (rows truth, cols prediction) over the scene."""
    ignore = unlabelled_value(labels.dtype)
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    valid = group[VALID]
    with GeoTiffReader(Path(labels.path), bands=[1]) as reader:
        for rows, cols in iter_blocks(semantic.shape, semantic.chunks):
            truth = reader.read((rows, cols))[0]
            try:
                cm += confusion_matrix(
                    semantic[rows, cols], truth, num_classes, ignore_index=ignore,
                    valid=np.asarray(valid[rows, cols], dtype=bool),
                )
            except ConfigError as exc:
                raise InputError(
                    labels.path, f"labels do not match the model's class table: {exc}"
                ) from exc
    return cm


def semantic_metrics(cm: np.ndarray, class_names: list[str]) -> dict:
    """``{"miou", "dice", "per_class": {name: {"iou", "dice"}}}`` from a confusion matrix."""
    return SemanticScores.from_confusion(cm, class_names).to_dict()
