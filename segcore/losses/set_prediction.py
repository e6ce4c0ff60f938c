"""Set-prediction loss with Hungarian matching (DETR / MaskFormer).

Each image's ``Q`` predictions (class logits over ``K + 1`` labels, the last
"no object", and mask logits) are matched one-to-one to its ``M <= Q``
ground-truth segments by :func:`segcore.matching.hungarian_match` on the cost
of :func:`segcore.matching.set_prediction_cost`::

    c(i, j) = w_class * (-log p_i(c_j)) + w_dice * Dice(i, j) + w_focal * Focal(i, j)
              [+ w_l1 * |b_i - b_j|_1 + w_iou * (1 - IoU(b_i, b_j))]

(the optional box terms use boxes derived from the masks, normalised to
``[0, 1]``; predicted boxes from ``sigmoid(mask) > 0.5``). The loss is

- cross-entropy over all queries: matched ones against their target class,
  unmatched ones against "no object", whose weight is ``no_object_weight``;
- sigmoid focal loss and Dice loss between matched masks and their targets,
  averaged over the targets of the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segcore.errors import ConfigError

__all__ = ["SetPredictionLoss", "masks_to_boxes", "semantic_targets"]


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Normalised xyxy boxes ``(M, 4)`` of binary masks ``(M, H, W)``; empty -> zeros.

    Examples
    --------
    >>> m = torch.zeros(1, 4, 8, dtype=torch.bool); m[0, 1:3, 2:6] = True
    >>> masks_to_boxes(m).tolist()
    [[0.25, 0.25, 0.75, 0.75]]
    """
    m, h, w = masks.shape
    boxes = torch.zeros(m, 4, dtype=torch.float32, device=masks.device)
    for i in range(m):
        ys, xs = torch.nonzero(masks[i] > 0, as_tuple=True)
        if len(ys):
            boxes[i] = torch.stack([xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h])
    return boxes


def semantic_targets(labels: torch.Tensor, num_classes: int, *,
                     ignore_index: int | None = None) -> list[dict[str, torch.Tensor]]:
    """One target segment per class present in each label map (MaskFormer semantic).

    Parameters
    ----------
    labels : (N, H, W) tensor of int
        Class ids in ``[0, num_classes)`` (``ignore_index`` pixels belong to no segment).

    Returns
    -------
    list of dict
        Per image ``{"labels": (M,) int64, "masks": (M, H, W) float32}``.

    Examples
    --------
    >>> t = semantic_targets(torch.tensor([[[0, 2], [2, 2]]]), 3)
    >>> t[0]["labels"].tolist(), t[0]["masks"].sum(dim=(1, 2)).tolist()
    ([0, 2], [1.0, 3.0])
    """
    out = []
    for lab in labels:
        classes = [int(c) for c in torch.unique(lab) if int(c) != ignore_index]
        if any(c < 0 or c >= num_classes for c in classes):
            raise ConfigError(f"labels: expected class ids in [0, {num_classes}), received {classes}")
        masks = torch.stack([(lab == c).float() for c in classes]) if classes else \
            lab.new_zeros((0,) + tuple(lab.shape), dtype=torch.float32)
        out.append({"labels": torch.tensor(classes, dtype=torch.int64, device=lab.device),
                    "masks": masks})
    return out


def _sigmoid_focal(logits: torch.Tensor, target: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """Mean over pixels of the sigmoid focal loss, per row: ``(M, P) -> (M,)``."""
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    a_t = alpha * target + (1 - alpha) * (1 - target)
    return (a_t * (1 - p_t) ** gamma * ce).mean(dim=1)


def _dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Dice loss per row, same smoothing as the matching cost: ``(M, P) -> (M,)``."""
    p = logits.sigmoid()
    return 1 - (2 * (p * target).sum(1) + 1) / (p.sum(1) + target.sum(1) + 1)


class SetPredictionLoss(nn.Module):
    """Hungarian-matched class + mask loss for :class:`~segcore.models.set_prediction.QueryMaskModel`.

    Parameters
    ----------
    num_classes : int
        Real classes ``K``; index ``K`` of ``pred_logits`` is "no object".
    w_class, w_dice, w_focal : float
        Weights of the terms, in the matching cost and in the loss alike.
    w_l1, w_iou : float, default 0
        Optional box terms of the matching cost (boxes from masks).
    no_object_weight : float, default 0.1
        Cross-entropy weight of the "no object" class (unmatched queries).
    focal_alpha, focal_gamma : float
        Focal-loss parameters.

    Examples
    --------
    >>> from segcore.models.set_prediction import QueryMaskModel
    >>> _ = torch.manual_seed(0)
    >>> net = QueryMaskModel(3, 2, queries=4, dim=8)
    >>> out = net(torch.randn(1, 3, 16, 16))
    >>> loss = SetPredictionLoss(num_classes=2)
    >>> value = loss(out, semantic_targets(torch.randint(0, 2, (1, 16, 16)), 2))
    >>> value.ndim, bool(value > 0)
    (0, True)
    """

    def __init__(self, num_classes: int, *, w_class: float = 2.0, w_dice: float = 5.0,
                 w_focal: float = 5.0, w_l1: float = 0.0, w_iou: float = 0.0,
                 no_object_weight: float = 0.1, focal_alpha: float = 0.25,
                 focal_gamma: float = 2.0) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ConfigError(f"num_classes: expected an integer >= 1, received {num_classes!r}")
        if not 0 < no_object_weight <= 1:
            raise ConfigError(f"no_object_weight: expected a value in (0, 1], received {no_object_weight}")
        self.num_classes = num_classes
        self.w_class, self.w_dice, self.w_focal = w_class, w_dice, w_focal
        self.w_l1, self.w_iou = w_l1, w_iou
        self.no_object_weight = no_object_weight
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        weights = torch.ones(num_classes + 1)
        weights[-1] = no_object_weight
        self.register_buffer("class_weights", weights)

    def pairwise_cost(self, pred_logits: torch.Tensor, pred_masks: torch.Tensor,
                      target: dict[str, torch.Tensor]) -> torch.Tensor:
        """Matching cost ``(Q, M)`` of one image: ``(Q, K+1)``, ``(Q, H, W)`` vs a target."""
        from segcore.matching import set_prediction_cost

        labels, masks = target["labels"], target["masks"].to(pred_masks.dtype)
        use_boxes = bool(self.w_l1 or self.w_iou)
        q, m = pred_logits.shape[0], labels.shape[0]
        boxes_pred = masks_to_boxes(pred_masks > 0) if use_boxes else pred_masks.new_zeros(q, 4)
        boxes_gt = masks_to_boxes(masks) if use_boxes else pred_masks.new_zeros(m, 4)
        return set_prediction_cost(
            pred_logits.log_softmax(dim=-1), boxes_pred.to(pred_masks.dtype), pred_masks, labels,
            boxes_gt.to(pred_masks.dtype), masks, w_cls=self.w_class, w_l1=self.w_l1,
            w_iou=self.w_iou, w_dice=self.w_dice, w_focal=self.w_focal,
            focal_alpha=self.focal_alpha, focal_gamma=self.focal_gamma)

    @torch.no_grad()
    def match(self, outputs: dict[str, torch.Tensor],
              targets: list[dict[str, torch.Tensor]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per image ``(query_idx, target_idx)`` of the minimum-cost assignment."""
        from segcore.matching import hungarian_match

        if len(targets) != outputs["pred_logits"].shape[0]:
            raise ConfigError(f"targets: expected {outputs['pred_logits'].shape[0]} entries, "
                              f"received {len(targets)}")
        out = []
        for n, target in enumerate(targets):
            if target["labels"].shape[0] > outputs["pred_logits"].shape[1]:
                raise ConfigError(f"targets[{n}]: {target['labels'].shape[0]} segments exceed "
                                  f"the {outputs['pred_logits'].shape[1]} queries")
            cost = self.pairwise_cost(outputs["pred_logits"][n], outputs["pred_masks"][n], target)
            rows, cols = hungarian_match(cost.float().cpu())
            device = outputs["pred_logits"].device
            out.append((torch.as_tensor(rows, dtype=torch.int64, device=device),
                        torch.as_tensor(cols, dtype=torch.int64, device=device)))
        return out

    def forward(self, outputs: dict[str, torch.Tensor],
                targets: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        """Scalar loss: class CE (all queries) + w_dice * Dice + w_focal * focal (matched)."""
        logits, masks = outputs["pred_logits"], outputs["pred_masks"]
        matches = self.match(outputs, targets)
        target_classes = torch.full(logits.shape[:2], self.num_classes, dtype=torch.int64,
                                    device=logits.device)
        matched_pred, matched_gt = [], []
        for n, ((rows, cols), target) in enumerate(zip(matches, targets)):
            target_classes[n, rows] = target["labels"][cols]
            matched_pred.append(masks[n, rows].flatten(1))
            matched_gt.append(target["masks"][cols].flatten(1).to(masks.dtype))
        loss = self.w_class * F.cross_entropy(logits.transpose(1, 2), target_classes,
                                              weight=self.class_weights.to(logits.dtype))
        pred, gt = torch.cat(matched_pred), torch.cat(matched_gt)
        if len(pred):
            loss = loss + self.w_dice * _dice(pred, gt).mean() \
                + self.w_focal * _sigmoid_focal(pred, gt, self.focal_alpha, self.focal_gamma).mean()
        return loss
