"""Scene metrics against ground truth, streamed chunk by chunk.

Truth comes from a label file on the scene's grid (its format opens it, see
:class:`pipeline.formats.base.Truth`): class ids and, optionally, instance ids.
Unlabelled pixels carry 255 in 8-bit files and 65535 in wider ones; they and the
input's nodata pixels are left out of every metric. The confusion matrices of all
chunks add up to the scene's.
"""

from __future__ import annotations

import numpy as np

from pipeline.blockmap import BlockMap, serial
from pipeline.storage.chunk_io import read_block
from pipeline.store import iter_blocks
from pipeline.streaming.panoptic import fusion_stats, segment_categories
from segcore.classes import ClassRow
from segcore.errors import ConfigError, InputError
from segcore.metrics.confusion import SemanticScores, confusion_matrix
from segcore.panoptic.fusion import PanopticPlan, apply_plan, decide
from segcore.panoptic.quality import PanopticAccumulator, panoptic_quality


def unlabelled_value(dtype: str) -> int:
    """The class id that marks unlabelled pixels in a label file of ``dtype``.

    Examples
    --------
    >>> unlabelled_value("uint8"), unlabelled_value("uint16")
    (255, 65535)
    """
    return 255 if np.dtype(dtype).itemsize == 1 else 65535


def semantic_metrics(cm: np.ndarray, class_names: list[str]) -> dict:
    """``{"miou", "dice", "per_class": {name: {"iou", "dice"}}}`` from a confusion matrix."""
    return SemanticScores.from_confusion(cm, class_names).to_dict()


def seam_band(key: tuple[slice, ...], *, shape: tuple[int, ...], tile: tuple[int, ...],
              width: int) -> np.ndarray:
    """``(*block)`` bool: pixels/voxels within ``width`` of an internal tile-core border.

    Examples
    --------
    >>> seam_band((slice(0, 1), slice(0, 8)), shape=(1, 8), tile=(1, 4), width=1).astype(int)
    array([[0, 0, 0, 1, 1, 0, 0, 0]])
    """
    def near(coords: np.ndarray, size: int, t: int) -> np.ndarray:
        pos = coords % t
        lower = np.where(coords >= t, pos, np.iinfo(np.int64).max)  # border at the tile's start
        upper_border = coords - pos + t
        upper = np.where(upper_border < size, t - 1 - pos, np.iinfo(np.int64).max)
        return np.minimum(lower, upper) < width

    band = np.zeros(tuple(s.stop - s.start for s in key), dtype=bool)
    for axis, (s, n, t) in enumerate(zip(key, shape, tile)):
        hit = near(np.arange(s.start, s.stop), n, t)
        band |= hit.reshape([-1 if a == axis else 1 for a in range(len(key))])
    return band


def _block_metrics(key: tuple[slice, ...], semantic, panoptic, valid, truth, truth_inst, *args
                   ) -> tuple[dict[str, np.ndarray], PanopticAccumulator]:
    ignore, k, true_plan, pred_plan, shape, seam_tile, seam_width, source = args
    t_sem = read_block(truth, key)
    t_inst = read_block(truth_inst, key) if truth_inst is not None else np.zeros_like(t_sem)
    ok = read_block(valid, key).astype(bool, copy=False)
    band = seam_band(key, shape=shape, tile=seam_tile, width=seam_width)
    pred = read_block(semantic, key)
    cms = {}
    try:
        for name, mask in (("all", ok), ("inside_tiles", ok & ~band), ("near_seams", ok & band)):
            cms[name] = confusion_matrix(pred, t_sem, k, ignore_index=ignore, valid=mask)
    except ConfigError as exc:
        raise InputError(source, f"labels do not match the model's class table: {exc}") from exc
    if panoptic is not None:
        pred_pan = read_block(panoptic, key)
    else:  # no instance head: the prediction's segments are its stuff classes
        pred_pan = apply_plan(pred_plan, pred, np.zeros(pred.shape, np.uint32), ok)
    acc = PanopticAccumulator()
    acc.add(pred_pan, apply_plan(true_plan, t_sem, t_inst, ok))
    return cms, acc


def label_metrics(semantic, panoptic, valid, truth, truth_inst, *, ignore: int,
                  classes: list[ClassRow], pred_plan: PanopticPlan,
                  seam_tile: tuple[int, ...], seam_width: int, source: str,
                  blocks: BlockMap = serial) -> dict:
    """Semantic metrics (whole scene, inside tiles, near seams) and panoptic quality.

    ``semantic``, ``valid``, ``truth`` and ``truth_inst`` are sliceable 2-D or 3-D
    arrays of one shape (zarr arrays or window readers that pickle), read block by
    block in two block passes. ``panoptic`` is the predicted segment array, or None for
    a model without instances (its segments then come from ``pred_plan`` on the fly).
    Truth panoptic segments are fused from the labels with the same rules as the
    prediction (``min_stuff_area`` 0); ``ignore`` (unlabelled) voxels are void in the truth.
    """
    k = len(classes)
    names = [c.name for c in classes]
    shape = tuple(semantic.shape)
    true_plan = decide(fusion_stats(truth, truth_inst, valid, nodata=ignore,
                                    block=semantic.chunks, blocks=blocks), classes)
    cms = {"all": np.zeros((k, k), np.int64), "inside_tiles": np.zeros((k, k), np.int64),
           "near_seams": np.zeros((k, k), np.int64)}
    acc = PanopticAccumulator()
    parts = blocks.map(_block_metrics, list(iter_blocks(shape, semantic.chunks)), semantic,
                       panoptic, valid, truth, truth_inst, ignore, k, true_plan, pred_plan,
                       shape, tuple(seam_tile), seam_width, source, label="metrics")
    for part_cms, _ in parts:
        for name, cm in part_cms.items():
            cms[name] += cm
    acc.merge_all([part_acc for _, part_acc in parts])
    things = [c.id for c in classes if c.isthing]
    pq = panoptic_quality(acc, segment_categories(pred_plan), segment_categories(true_plan),
                          {c.id: c.name for c in classes}, thing_ids=things).to_dict()
    return {
        "semantic": semantic_metrics(cms["all"], names),
        "panoptic": pq,
        "seams": {"inside_tiles": semantic_metrics(cms["inside_tiles"], names),
                  "near_seams": semantic_metrics(cms["near_seams"], names),
                  "near_seams_pixels": int(cms["near_seams"].sum())},
    }
