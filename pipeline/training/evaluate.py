"""Held-out evaluation: whole-scene inference scored like the pipeline scores runs.

- :func:`evaluate`: semantic mIoU/Dice from streaming confusion matrices and, for a
  network with an instance head, panoptic quality (semantic argmax + grouped
  instances on thing pixels, fused like the truth with ``segcore.panoptic``).
- :func:`zero_shot_figures`: an open-vocabulary network's IoU of a prompt it never
  saw in training when every prompt is offered, against chance.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pipeline.bundle import ClassSpec, InstanceSpec
from pipeline.training.scenes import Normalisation, Scenes
from segcore.geometry.padding import pad_to_multiple
from segcore.instances.grouping import group_instances
from segcore.metrics.confusion import SemanticScores, confusion_matrix
from segcore.panoptic import (
    FusionStats,
    PanopticAccumulator,
    apply_plan,
    decide,
    panoptic_quality,
)


def _fuse(semantic: np.ndarray, instance: np.ndarray, classes: list[ClassSpec],
          nodata: int) -> tuple[np.ndarray, dict[int, int]]:
    """Panoptic ids ``(*S)`` of one scene or volume and their categories (``segcore.panoptic``)."""
    table = [(c.id, c.name, c.isthing) for c in classes]
    stats = FusionStats(ndim=semantic.ndim, nodata=nodata)
    stats.add(semantic, instance)
    plan = decide(stats, table, min_stuff_area=0)
    return apply_plan(plan, semantic, instance), {g.id: g.category_id for g in plan.segments}


class _PanopticEval:
    """Held-out panoptic quality over several scenes (segment ids made unique per scene)."""

    def __init__(self, classes: list[ClassSpec], nodata: int) -> None:
        self.classes, self.nodata = classes, nodata
        self.acc = PanopticAccumulator()
        self.pred_cat: dict[int, int] = {}
        self.true_cat: dict[int, int] = {}
        self.next_id = 1
        self.isthing = np.zeros(max(c.id for c in classes) + 1, bool)
        for c in classes:
            self.isthing[c.id] = c.isthing

    def _relabel(self, pan: np.ndarray, cats: dict[int, int], into: dict[int, int]) -> np.ndarray:
        """Map this scene's segment ids to fresh global ones (void stays 0)."""
        ids = np.array(sorted(cats), dtype=np.int64)
        if ids.size == 0:
            return np.zeros(pan.shape, np.uint32)
        new = np.arange(self.next_id, self.next_id + ids.size, dtype=np.int64)
        self.next_id += ids.size
        into.update({int(n): cats[int(i)] for i, n in zip(ids, new)})
        pos = np.searchsorted(ids, pan.astype(np.int64)).clip(0, ids.size - 1)
        return np.where(pan > 0, new[pos], 0).astype(np.uint32)

    def add(self, pred_sem: np.ndarray, pred_inst: np.ndarray, true_sem: np.ndarray,
            true_inst: np.ndarray) -> None:
        pred, pcat = _fuse(pred_sem, pred_inst, self.classes, self.nodata)
        true, tcat = _fuse(true_sem, true_inst, self.classes, self.nodata)
        self.acc.add(self._relabel(pred, pcat, self.pred_cat), self._relabel(true, tcat, self.true_cat))

    def scores(self) -> dict[str, Any]:
        q = panoptic_quality(self.acc, self.pred_cat, self.true_cat,
                             {c.id: c.name for c in self.classes},
                             thing_ids=[c.id for c in self.classes if c.isthing])
        return {"pq": q.pq, "pq_things": q.things["pq"], "pq_stuff": q.stuff["pq"],
                "per_class_pq": {name: cq.pq for name, cq in q.per_class.items()}}


def evaluate(net: torch.nn.Module, scenes: Scenes, mean: list[float], std: list[float],
             scale: float, names: list[str], *, classes: list[ClassSpec] | None = None,
             grouping: InstanceSpec | None = None) -> dict[str, Any]:
    """Whole-scene inference on held-out scenes; streaming confusion -> mIoU, Dice.

    Parameters
    ----------
    net : nn.Module
        2-D or 3-D (``net.ndim``); plain logits ``(1, K, *S)`` or a dict with
        ``"semantic"`` (and ``"center"``, ``"offset"`` with an instance head).
    scenes : Scenes
        Images ``(C, H, W)`` or ``(C, Z, Y, X)``; each is padded to the stride,
        predicted whole and cropped back.
    mean, std : list of float
        Per channel, after ``scale``.
    scale : float
        Value scale of the images' sample type.
    names : list of str
        Class names, index = class id.
    classes : list of ClassSpec, optional
        With instance maps in ``scenes`` and an instance head: panoptic quality too.
    grouping : InstanceSpec, optional
        Grouping of centres and offsets into instances (default settings if None).

    Returns
    -------
    dict
        ``miou``, ``dice``, ``per_class``, ``scenes``; with panoptic quality also
        ``pq``, ``pq_things``, ``pq_stuff``, ``per_class_pq`` ({name: pq}, None for
        classes absent from both maps).
    """
    net.eval()
    k = len(names)
    cm = np.zeros((k, k), dtype=np.int64)
    ndim = int(getattr(net, "ndim", 2))
    m = torch.tensor(mean, dtype=torch.float32).reshape(-1, *[1] * ndim)
    s = torch.tensor(std, dtype=torch.float32).reshape(-1, *[1] * ndim)
    grouping = grouping or InstanceSpec()
    panoptic: _PanopticEval | None = None
    if classes is not None and scenes.instances is not None:
        panoptic = _PanopticEval(classes, scenes.ignore)
    with torch.inference_mode():
        for i, (img, lab) in enumerate(zip(scenes.images, scenes.labels)):
            x = (torch.from_numpy(img.astype(np.float32)) * scale - m) / s
            out, crop = _whole_scene(net, x, ndim=ndim)
            logits = out["semantic"] if isinstance(out, dict) else out
            pred = logits[crop].argmax(0).numpy()
            cm += confusion_matrix(pred, lab, k, ignore_index=scenes.ignore)
            if panoptic is not None and isinstance(out, dict):
                inst = group_instances(out["center"][crop], out["offset"][crop],
                                       torch.from_numpy(panoptic.isthing[pred]),
                                       threshold=grouping.threshold, nms_kernel=grouping.nms_kernel,
                                       top_k=grouping.top_k).numpy()
                panoptic.add(pred, inst, lab, scenes.instances[i])
    scores = SemanticScores.from_confusion(cm, names).to_dict()
    result = {"miou": scores["miou"], "dice": scores["dice"], "per_class": scores["per_class"],
              "scenes": len(scenes.images)}
    if panoptic is not None:
        result.update(panoptic.scores())
    return result


def _whole_scene(net: torch.nn.Module, x: torch.Tensor, *, ndim: int
                 ) -> tuple[torch.Tensor | dict[str, torch.Tensor], tuple]:
    """Run ``net`` on one normalised scene ``(C, *S)`` padded to its stride; the output
    and the index that crops an output map back to ``(K, *S)``."""
    x, size = pad_to_multiple(x[None], int(getattr(net, "stride", 1)), spatial_dims=ndim)
    return net(x), (0, slice(None), *(slice(0, n) for n in size))


def iou(pred: np.ndarray, truth: np.ndarray, k: int) -> float:
    """IoU of class ``k`` (NaN when absent from both).

    Examples
    --------
    >>> iou(np.array([0, 1, 1]), np.array([1, 1, 0]), 1), iou(np.zeros(2), np.zeros(2), 1)
    (0.3333333333333333, nan)
    """
    inter = np.logical_and(pred == k, truth == k).sum()
    union = np.logical_or(pred == k, truth == k).sum()
    return float(inter / union) if union else float("nan")


def zero_shot_figures(net: torch.nn.Module, scenes: Scenes, norm: Normalisation,
                      held_out: str) -> dict[str, float]:
    """Zero-shot IoU of the ``held_out`` prompt with every prompt offered, and chance.

    Parameters
    ----------
    net : OpenVocabSegmenter
        Prompted here with ``scenes.vocabulary``.
    scenes : Scenes
        Held-out scenes whose labels index ``scenes.vocabulary``.
    norm : Normalisation
    held_out : str
        One of ``scenes.vocabulary``.

    Returns
    -------
    dict
        ``heldout_iou``; ``chance_constant``: IoU of labelling every pixel
        ``held_out`` (= its pixel share); ``chance_random``: expected IoU of a
        uniform random prompt per pixel; ``pixel_accuracy``; ``heldout_share``.
    """
    prompts = list(scenes.vocabulary or [])
    k = prompts.index(held_out)
    net.eval()
    net.set_prompts(prompts)
    with torch.no_grad():
        preds = [net(norm.apply(image[None]))[0].argmax(0).numpy() for image in scenes.images]
    pred, truth = np.stack(preds), np.stack(scenes.labels)
    share = float((truth == k).mean())
    n = len(prompts)
    return {
        "heldout_iou": iou(pred, truth, k),
        "chance_constant": share,
        "chance_random": share / (1 + share * n - share) if share else 0.0,
        "pixel_accuracy": float((pred == truth).mean()),
        "heldout_share": share,
    }
