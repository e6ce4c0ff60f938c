"""``segpipe train``: train a network per a :class:`~pipeline.training.config.TrainConfig`
and write its model bundle.

:func:`train_bundle` is a short sequence of named steps:

1. seed torch and the run's generator (every random choice derives from ``seed``; with
   the same ``threads`` the same config gives the same weights);
2. load the training scenes from the data kind and build the network with the input
   normalisation measured on them (:class:`~pipeline.training.networks.Trainee`);
3. losses, optimiser and schedule, and the step function of the run's supervision
   (:mod:`pipeline.training.steps`);
4. the step loop, with a checkpoint every ``checkpoint_every`` steps
   (:mod:`pipeline.training.checkpoints`; ``resume`` continues from it);
5. held-out figures from the data kind (plus the attention report of a ViT);
6. the bundle spec and its weights or exported program (:mod:`pipeline.training.spec`).

With ``params: {instance_head: true}`` the crops' instance maps get the same rot90/flip
as their images *before* the centre/offset targets are computed, so the offsets point
at the centres of the augmented crop; held-out figures then add panoptic quality with
the grouping settings used (``training.heldout.pq``, ``training.grouping``). 3-D data
(phantoms, NIfTI, Zarr volumes) need a 3-D architecture (``unet3d``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.bundle import ModelBundle
from pipeline.training.attention import attention_report
from pipeline.training.checkpoints import Checkpoints
from pipeline.training.config import TrainConfig
from pipeline.training.networks import Trainee, build_network, check_dimensions
from pipeline.training.optimiser import Optimisation
from pipeline.training.scenes import Scenes
from pipeline.training.spec import bundle_spec, write_bundle
from pipeline.training.steps import Losses, Step, StepContext, supervision

StepCallback = Callable[[int, float], None]


def _seeded(cfg: TrainConfig) -> np.random.Generator:
    """Seed torch, set its threads; the run's generator for crops and clicks."""
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    return np.random.default_rng(cfg.seed)


def _trainee(cfg: TrainConfig, train_set: Scenes) -> Trainee:
    """The network for ``train_set`` and its input normalisation."""
    classes = cfg.data.class_table()
    net, params = build_network(cfg.architecture, channels=train_set.channels,
                                num_classes=len(classes), params=cfg.params)
    norm = train_set.normalisation(raw=cfg.data.physical_units)
    trainee = Trainee(net, params, classes, norm, train_set.channels)
    check_dimensions(trainee.ndim, train_set.ndim, kind=cfg.data.kind,
                     architecture=cfg.architecture)
    return trainee


def _run_steps(ctx: StepContext, step_fn: Step, optim: Optimisation, checkpoints: Checkpoints,
               rng: np.random.Generator, *, first: int, loss: float,
               on_step: StepCallback | None, stop_after: int | None) -> float | None:
    """Steps ``first`` .. ``cfg.steps``; the last loss, or None when stopped at ``stop_after``."""
    ctx.net.train()
    for step in range(first, ctx.cfg.steps + 1):
        value = step_fn(ctx, rng)
        optim.update(value)
        loss = float(value.detach())
        if on_step is not None:
            on_step(step, loss)
        stop = stop_after is not None and step >= stop_after
        if checkpoints.due(step) or stop:
            checkpoints.save(step, net=optim.trainables, opt=optim.opt, sched=optim.sched,
                             rng=rng, loss=loss)
        if stop:
            return None
    return loss


def _heldout(cfg: TrainConfig, trainee: Trainee) -> dict[str, Any]:
    """The data kind's held-out figures, plus the attention report of a 2-D attention model."""
    scenes = cfg.data.load(heldout=True, instances=cfg.instance_head)
    figures = cfg.data.heldout_figures(trainee.net, scenes, trainee.norm, classes=trainee.classes,
                                       grouping=cfg.grouping)
    if hasattr(trainee.net, "attention_maps") and trainee.ndim == 2:
        trainee.net.eval()
        figures["attention"] = attention_report(
            trainee.net, scenes.images, scenes.labels, mean=trainee.norm.mean,
            std=trainee.norm.std, scale=trainee.norm.scale)
    return figures


def train_bundle(cfg: TrainConfig, out: Path, *, on_step: StepCallback | None = None,
                 resume: bool = False, stop_after: int | None = None) -> ModelBundle | None:
    """Train per ``cfg``; write and return the bundle at ``out``.

    Parameters
    ----------
    cfg : TrainConfig
    out : Path
        Bundle directory; the checkpoint lies beside it (``<out>.checkpoint.pt``).
    on_step : callable, optional
        ``on_step(step, loss)`` after every step.
    resume : bool
        Continue from the checkpoint of an interrupted run of the same config.
    stop_after : int, optional
        End after that many steps with a checkpoint and no bundle (returns None): the
        same as an interrupted run, for tests.
    """
    rng = _seeded(cfg)
    train_set = cfg.data.load(heldout=False, instances=cfg.instance_head)
    trainee = _trainee(cfg, train_set)
    losses = Losses.of(cfg, num_classes=len(trainee.classes), ndim=trainee.ndim)
    optim = Optimisation.of(cfg, trainee.net, losses.extra.head)
    checkpoints = Checkpoints.of(out, cfg.model_dump(mode="json"), cfg.checkpoint_every)
    first, loss = 1, float("nan")
    if resume:
        first, loss = checkpoints.restore(net=optim.trainables, opt=optim.opt, sched=optim.sched,
                                          rng=rng)
    ctx = StepContext(cfg, trainee.net, train_set, trainee.norm, losses)
    start = time.perf_counter()
    final = _run_steps(ctx, supervision(cfg, trainee.net, train_set), optim, checkpoints, rng,
                       first=first, loss=loss, on_step=on_step, stop_after=stop_after)
    if final is None:
        return None
    seconds = time.perf_counter() - start
    spec = bundle_spec(cfg, trainee, spacing=train_set.spacing, heldout=_heldout(cfg, trainee),
                       final_loss=final, seconds=seconds)
    bundle = write_bundle(out, spec, trainee, export=cfg.export)
    checkpoints.remove()
    return bundle
