"""Weak supervision from points (annotator clicks instead of full masks) for ``segpipe train``.

With ``point_supervision`` set, a crop's full label map is not used for the loss:
each connected region of each class in it (every instance, every patch of stuff)
yields ``per_region`` random labelled points, as an annotator would click them, and
the network is trained with the multiple-instance loss of
:func:`segcore.losses.mil.point_mil_loss` (each point's disc of ``radius`` pixels is a
bag that holds at least one pixel of the point's class; the log-sum surrogate or the
noisy-OR likelihood) plus ``smoothness_weight`` times the total variation of the class
probabilities (:func:`segcore.losses.mil.smoothness_loss`). Held-out figures are still
measured against the full labels.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from scipy import ndimage

from segcore.losses.mil import point_mil_loss, smoothness_loss

IGNORE = 255


class PointSupervision(BaseModel):
    """The ``point_supervision`` block of a training config."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    radius: float = Field(default=4.0, ge=0)
    per_region: int = Field(default=1, ge=1)
    min_region: int = Field(default=4, ge=1)  # regions smaller than this get no point
    surrogate: bool = True  # log-sum surrogate (True) or noisy-OR likelihood (False)
    smoothness_weight: float = Field(default=0.1, ge=0)


def sample_points(labels: np.ndarray, rng: np.random.Generator, *, per_region: int = 1,
                  min_region: int = 4) -> list[tuple[int, int, tuple[int, ...]]]:
    """Random clicks: ``per_region`` points in every connected region of every class.

    Parameters
    ----------
    labels : (N, *S) ndarray of int
        Class ids, ``255`` unlabelled (never clicked).

    Returns
    -------
    list of (batch, class, centre)

    Examples
    --------
    >>> lab = np.zeros((1, 4, 4), int); lab[0, :2, :2] = 1
    >>> sorted((b, c) for b, c, _ in sample_points(lab, np.random.default_rng(0)))
    [(0, 0), (0, 1)]
    """
    points = []
    for b, lab in enumerate(labels):
        for cls in np.unique(lab):
            if cls == IGNORE:
                continue
            regions, n = ndimage.label(lab == cls)
            for region in range(1, n + 1):
                where = np.argwhere(regions == region)
                if len(where) < min_region:
                    continue
                for i in rng.choice(len(where), size=min(per_region, len(where)), replace=False):
                    points.append((b, int(cls), tuple(int(v) for v in where[i])))
    return points


def point_loss(logits: torch.Tensor, labels: np.ndarray, rng: np.random.Generator,
               cfg: PointSupervision) -> torch.Tensor:
    """MIL loss of sampled clicks plus the smoothness regulariser.

    Parameters
    ----------
    logits : (N, K, *S) Tensor of float
    labels : (N, *S) ndarray of int
        Full labels the clicks are sampled from (``255`` never clicked).
    rng : numpy.random.Generator
        The run's generator (the clicks differ every step).
    cfg : PointSupervision

    Returns
    -------
    () Tensor
    """
    probs = torch.softmax(logits, dim=1)
    points = sample_points(labels, rng, per_region=cfg.per_region, min_region=cfg.min_region)
    loss = point_mil_loss(probs, points, cfg.radius, surrogate=cfg.surrogate)
    if cfg.smoothness_weight:
        loss = loss + cfg.smoothness_weight * smoothness_loss(probs)
    return loss
