"""Differentiable segmentation losses and their closed-form gradients."""

from segcore.losses.combined import SegmentationLoss
from segcore.losses.instance import InstanceLoss
from segcore.losses.overlap import dice_loss, dice_loss_grad, soft_iou, soft_iou_grad

__all__ = [
    "SegmentationLoss",
    "dice_loss",
    "dice_loss_grad",
    "soft_iou",
    "soft_iou_grad",
    "InstanceLoss",
]
