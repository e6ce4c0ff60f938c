"""One training step per supervision kind: draw a batch, return its loss.

=====================  =====================================================================
supervision            when
=====================  =====================================================================
:func:`prompt_step`    open-vocabulary data: cross-entropy over the training prompts'
                       cosine logits (the text encoder trains with the pixel encoder)
:func:`instance_step`  ``params.instance_head``: semantic loss + centre/offset loss on
                       targets of the augmented instance crops
:func:`set_step`       a query model (``num_queries``): Hungarian-matched set prediction
:func:`point_step`     ``point_supervision``: clicks sampled per region, MIL loss
:func:`semantic_step`  otherwise: cross-entropy + soft Dice
=====================  =====================================================================

The optional focal / boundary / edge-head terms (:mod:`pipeline.training.losses`) are
added to every closed-vocabulary step. Steps draw from the run's generator in a fixed
order, so the same config and seed give the same batches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.training.config import TrainConfig
from pipeline.training.losses import ExtraLosses
from pipeline.training.points import point_loss
from pipeline.training.scenes import IGNORE, Normalisation, Scenes
from segcore.instances.targets import instance_targets
from segcore.losses import SegmentationLoss
from segcore.losses.instance import InstanceLoss
from segcore.losses.set_prediction import SetPredictionLoss, semantic_targets


@dataclass(frozen=True)
class Losses:
    """The loss terms of a run (built once; only those of its supervision are used)."""

    segmentation: SegmentationLoss
    instance: InstanceLoss
    set_prediction: SetPredictionLoss
    extra: ExtraLosses

    @classmethod
    def of(cls, cfg: TrainConfig, *, num_classes: int, ndim: int) -> Losses:
        """The terms ``cfg`` configures (the edge head, if any, is initialised here)."""
        return cls(
            segmentation=SegmentationLoss(ce_weight=cfg.ce_weight, dice_weight=cfg.dice_weight),
            instance=InstanceLoss(center_weight=cfg.center_weight, offset_weight=cfg.offset_weight),
            set_prediction=SetPredictionLoss(num_classes),
            extra=ExtraLosses(num_classes=num_classes, ndim=ndim, focal_weight=cfg.focal_weight,
                              focal_gamma=cfg.focal_gamma, boundary_weight=cfg.boundary_weight,
                              edge_map_weight=cfg.edge_map_weight, edge_weight=cfg.edge_weight),
        )


@dataclass(frozen=True)
class StepContext:
    """What a step needs: the config, the network, the crop source, normalisation, losses."""

    cfg: TrainConfig
    net: nn.Module
    source: Scenes
    norm: Normalisation
    losses: Losses


Step = Callable[[StepContext, np.random.Generator], torch.Tensor]


def crop_targets(instances: np.ndarray, sigma: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batched ``instance_targets`` of (already augmented) instance crops.

    Parameters
    ----------
    instances : (N, *S) ndarray of int
        Instance ids, 2-D or 3-D crops.
    sigma : float
        Gaussian of the centre heatmaps, pixels.

    Returns
    -------
    heatmaps : (N, 1, *S) Tensor of float32
    offsets : (N, ndim, *S) Tensor of float32
    weights : (N, *S) Tensor of float32
    """
    heats, offsets, weights = zip(*(instance_targets(z, sigma=sigma) for z in instances))
    return (torch.from_numpy(np.stack(heats)), torch.from_numpy(np.stack(offsets)),
            torch.from_numpy(np.stack(weights)))


def _semantic(outputs: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
    return outputs["semantic"] if isinstance(outputs, dict) else outputs


def _with_extras(ctx: StepContext, loss: torch.Tensor, logits: torch.Tensor,
                 target: torch.Tensor) -> torch.Tensor:
    return loss + ctx.losses.extra(logits, target) if ctx.losses.extra.active else loss


def semantic_step(ctx: StepContext, rng: np.random.Generator) -> torch.Tensor:
    """Cross-entropy + soft Dice on a batch of augmented crops."""
    xb, yb = ctx.source.crops(rng, ctx.cfg.batch_size, ctx.cfg.crop)
    target, logits = torch.from_numpy(yb), _semantic(ctx.net(ctx.norm.apply(xb)))
    return _with_extras(ctx, ctx.losses.segmentation(logits, target), logits, target)


def point_step(ctx: StepContext, rng: np.random.Generator) -> torch.Tensor:
    """Clicks sampled from the crops' regions instead of their full label maps."""
    xb, yb = ctx.source.crops(rng, ctx.cfg.batch_size, ctx.cfg.crop)
    target, logits = torch.from_numpy(yb), _semantic(ctx.net(ctx.norm.apply(xb)))
    assert ctx.cfg.point_supervision is not None
    loss = point_loss(logits, yb, rng, ctx.cfg.point_supervision)
    return _with_extras(ctx, loss, logits, target)


def set_step(ctx: StepContext, rng: np.random.Generator) -> torch.Tensor:
    """Hungarian-matched set prediction of a query model against per-class masks."""
    xb, yb = ctx.source.crops(rng, ctx.cfg.batch_size, ctx.cfg.crop)
    target, outputs = torch.from_numpy(yb), ctx.net(ctx.norm.apply(xb))
    num_classes = ctx.losses.set_prediction.num_classes
    loss = ctx.losses.set_prediction(outputs, semantic_targets(target, num_classes,
                                                                ignore_index=IGNORE))
    return _with_extras(ctx, loss, outputs["semantic"], target)


def instance_step(ctx: StepContext, rng: np.random.Generator) -> torch.Tensor:
    """Semantic loss + centre/offset loss; targets from the augmented instance crops."""
    xb, yb, zb = ctx.source.instance_crops(rng, ctx.cfg.batch_size, ctx.cfg.crop)
    x = ctx.norm.apply(xb)
    heat, off, w = crop_targets(zb, ctx.cfg.center_sigma)
    pred, target = ctx.net(x), torch.from_numpy(yb)
    loss = ctx.losses.segmentation(pred["semantic"], target) + ctx.losses.instance(
        pred["center"], pred["offset"], heat, off, w)
    return _with_extras(ctx, loss, pred["semantic"], target)


def prompt_step(ctx: StepContext, rng: np.random.Generator) -> torch.Tensor:
    """Cross-entropy over the cosine logits of the prompts the labels index."""
    xb, yb = ctx.source.crops(rng, ctx.cfg.batch_size, ctx.cfg.crop)
    x, target = ctx.norm.apply(xb), torch.from_numpy(yb)
    prompts = list(ctx.source.vocabulary or [])
    return F.cross_entropy(ctx.net.logits(x, ctx.net.text_encoder.encode(prompts)), target)


def supervision(cfg: TrainConfig, net: nn.Module, source: Scenes) -> Step:
    """The step function of this run (see the module docstring for the order)."""
    if source.vocabulary is not None:
        return prompt_step
    if cfg.instance_head:
        return instance_step
    if hasattr(net, "num_queries"):
        return set_step
    if cfg.point_supervision is not None:
        return point_step
    return semantic_step
