"""Optional loss terms of ``segpipe train`` beyond cross-entropy + soft Dice.

``focal_weight``: focal loss (``segcore.losses.focal``, ``focal_gamma``);
``boundary_weight``: cross-entropy weighted ``1 + edge_map_weight`` on pixels of the true
edge map (``segcore.losses.boundary``); ``edge_weight``: an auxiliary edge head
(``segcore.models.edge_head.EdgeHead`` on the class logits, trained with a class-balanced
edge BCE). The head only shapes training and is not part of the bundle. All default to 0,
which leaves the loss (and the trained weights) exactly as without them.
"""

from __future__ import annotations

import torch
from torch import nn

from segcore.losses.boundary import boundary_weighted_ce, edge_loss, edge_map
from segcore.losses.focal import focal_loss
from segcore.models.edge_head import EdgeHead

IGNORE = 255


class ExtraLosses(nn.Module):
    """The configured extra terms for logits ``(N, K, *S)`` and targets ``(N, *S)``.

    ``forward(logits, target)`` returns their weighted sum, a ``()`` tensor (zero when
    none is configured; :attr:`active` says whether any is). ``head`` is the auxiliary
    edge head (trained with the network, not part of the bundle) or None.
    """

    def __init__(self, *, num_classes: int, ndim: int, focal_weight: float = 0.0,
                 focal_gamma: float = 2.0, boundary_weight: float = 0.0,
                 edge_map_weight: float = 5.0, edge_weight: float = 0.0) -> None:
        super().__init__()
        self.focal_weight, self.focal_gamma = focal_weight, focal_gamma
        self.boundary_weight, self.edge_map_weight = boundary_weight, edge_map_weight
        self.edge_weight = edge_weight
        self.head = EdgeHead(num_classes, ndim=ndim) if edge_weight > 0 else None

    @property
    def active(self) -> bool:
        return bool(self.focal_weight or self.boundary_weight or self.edge_weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = logits.new_zeros(())
        if self.focal_weight:
            total = total + self.focal_weight * focal_loss(
                logits, target, gamma=self.focal_gamma, ignore_index=IGNORE)
        if self.boundary_weight or self.head is not None:
            edges = edge_map(target)
            if self.boundary_weight:
                total = total + self.boundary_weight * boundary_weighted_ce(
                    logits, target, edges, edge_weight=self.edge_map_weight,
                    ignore_index=IGNORE)
            if self.head is not None:
                total = total + self.edge_weight * edge_loss(self.head(logits), edges)
        return total
