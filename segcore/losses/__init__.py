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
from segcore.losses.boundary import boundary_weighted_ce, edge_loss, edge_map  # noqa: E402
from segcore.losses.focal import focal_loss  # noqa: E402
from segcore.losses.mil import (  # noqa: E402
    log_sum_surrogate,
    noisy_or_log_likelihood,
    point_mil_loss,
    smoothness_loss,
)

__all__ += [
    "boundary_weighted_ce",
    "edge_loss",
    "edge_map",
    "focal_loss",
    "log_sum_surrogate",
    "noisy_or_log_likelihood",
    "point_mil_loss",
    "smoothness_loss",
]
