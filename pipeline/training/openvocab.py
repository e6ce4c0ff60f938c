"""Open-vocabulary training from Python: :func:`train_openvocab`.

The same run as ``segpipe train --config configs/demo-openvocab.yaml`` (data kind
``synthetic-attributes``, architecture ``openvocab2d``; see
:mod:`pipeline.training.data.attributes`): it builds that training config and calls
:func:`pipeline.training.loop.train_bundle`. Re-prompting a trained bundle for one run
is :func:`pipeline.prompts.bundle_with_prompts` (``segpipe run --prompts``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from pipeline.bundle import OPENVOCAB_ARCHITECTURE, ModelBundle
from pipeline.training.config import TrainConfig, validate_train_config
from pipeline.training.data.attributes import HELD_OUT
from pipeline.training.loop import train_bundle

__all__ = ["HELD_OUT", "openvocab_config", "train_openvocab"]


def openvocab_config(*, seed: int = 0, steps: int = 400, held_out: str = HELD_OUT,
                     prompts: list[str] | None = None, width: int = 32, dim: int = 32,
                     size: int = 64, batch: int = 8, name: str = "openvocab-attributes",
                     threads: int | None = None) -> TrainConfig:
    """The training config of an open-vocabulary run.

    Adam (AdamW without weight decay) at 3e-3 with a one-cycle rate (15 % warm-up),
    ``batch`` freshly rendered ``size`` x ``size`` scenes per step, held-out figures on
    six 128 x 128 scenes seeded ``seed + 1000``, no checkpoints; ``threads`` default:
    torch's current setting.

    Raises
    ------
    ConfigError
        One line naming the field, e.g. a ``held_out`` that is not one of ``prompts``.

    Examples
    --------
    >>> cfg = openvocab_config(seed=2, steps=10)
    >>> cfg.architecture, cfg.data.kind, cfg.data.heldout_seed, cfg.warmup
    ('openvocab2d', 'synthetic-attributes', 1002, 0.15)
    """
    data = {"kind": "synthetic-attributes", "held_out": held_out, "heldout_seed": seed + 1000}
    if prompts is not None:
        data["prompts"] = list(prompts)
    raw = {"name": name, "architecture": OPENVOCAB_ARCHITECTURE,
           "params": {"dim": dim, "width": width}, "data": data, "steps": steps,
           "batch_size": batch, "crop": size, "lr": 3e-3, "weight_decay": 0.0, "warmup": 0.15,
           "seed": seed, "threads": threads or torch.get_num_threads(), "tile": 256,
           "checkpoint_every": 0}
    return validate_train_config(raw, source="train_openvocab")


def train_openvocab(out_dir: Path, *, seed: int = 0, steps: int = 400, held_out: str = HELD_OUT,
                    prompts: list[str] | None = None, width: int = 32, dim: int = 32,
                    size: int = 64, batch: int = 8, name: str = "openvocab-attributes",
                    on_step: Callable[[int, float], None] | None = None) -> ModelBundle:
    """Train with ``held_out`` left out, measure it zero-shot, write the bundle.

    Returns
    -------
    ModelBundle
        Classes = ``prompts`` (all of them, held-out included) in order;
        ``spec.training["heldout"]`` has the zero-shot figures
        (:func:`pipeline.training.evaluate.zero_shot_figures`).
    """
    cfg = openvocab_config(seed=seed, steps=steps, held_out=held_out, prompts=prompts,
                           width=width, dim=dim, size=size, batch=batch, name=name)
    bundle = train_bundle(cfg, Path(out_dir), on_step=on_step)
    assert bundle is not None  # no stop_after: always a bundle
    return bundle
