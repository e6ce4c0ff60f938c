"""Optimiser and learning-rate schedule of a training run.

AdamW (``lr``, ``weight_decay``; with ``weight_decay: 0`` it is exactly Adam) over the
network and the auxiliary edge head if any, and a one-cycle learning rate stepped once
per training step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pipeline.training.config import TrainConfig

Scheduler = torch.optim.lr_scheduler.LRScheduler


def schedule(opt: torch.optim.Optimizer, *, lr: float, steps: int,
             warmup: float | None = None) -> Scheduler:
    """One-cycle learning rate peaking at ``lr``.

    The warm-up is ``warmup`` of the steps when given; else 10 % of the steps (at least
    2.5: OneCycleLR divides by the warm-up length), and a constant rate for runs under
    10 steps (smoke tests).
    """
    if warmup is not None:
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps,
                                                   pct_start=warmup)
    if steps < 10:
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps,
                                               pct_start=max(0.1, 2.5 / steps))


@dataclass(frozen=True)
class Optimisation:
    """The trained modules (network first, then the edge head if any), their optimiser
    and its schedule: the state a checkpoint saves."""

    trainables: nn.ModuleList
    opt: torch.optim.Optimizer
    sched: Scheduler

    @classmethod
    def of(cls, cfg: TrainConfig, net: nn.Module, head: nn.Module | None = None) -> Optimisation:
        """AdamW over ``net`` (and ``head``) with the schedule of ``cfg``."""
        trainables = nn.ModuleList([net, *([head] if head is not None else [])])
        opt = torch.optim.AdamW(trainables.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        return cls(trainables, opt, schedule(opt, lr=cfg.lr, steps=cfg.steps, warmup=cfg.warmup))

    def update(self, loss: torch.Tensor) -> None:
        """Back-propagate ``loss``, step the optimiser and the schedule."""
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()
