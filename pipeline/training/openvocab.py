"""Open-vocabulary bundles: train the small joint embedding, write it, re-prompt it.

- :func:`train_openvocab` trains :class:`segcore.openvocab.OpenVocabSegmenter` on
  synthetic colour x texture scenes with one combination held out of training
  ("blue striped" by default), measures the held-out class IoU when every prompt
  is offered at inference (zero-shot) against chance, and writes a bundle whose
  classes are the prompts (ids 0..K-1) and whose ``prompts`` field marks it as
  open-vocabulary.
- :func:`pipeline.prompts.bundle_with_prompts` re-prompts such a bundle for one run
  (``segpipe run --prompts``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.bundle import (
    OPENVOCAB_ARCHITECTURE as ARCHITECTURE,
    InputSpec,
    ModelBundle,
    ModelSpec,
    save_bundle,
)
from pipeline.prompts import prompt_classes
from segcore.errors import ConfigError
from segcore.openvocab import OpenVocabSegmenter, attribute_prompts, attribute_scene

HELD_OUT = "blue striped"
_MEAN, _STD = [0.5] * 3, [0.25] * 3

def _normalise(image: np.ndarray) -> torch.Tensor:
    x = image.astype(np.float32) / 255.0
    mean = np.asarray(_MEAN, np.float32)[:, None, None]
    std = np.asarray(_STD, np.float32)[:, None, None]
    return torch.from_numpy((x - mean) / std)


def _batch(rng: np.random.Generator, prompts: list[str], size: int, n: int):
    scenes = [attribute_scene(int(rng.integers(2**31)), size, prompts) for _ in range(n)]
    x = torch.stack([_normalise(im) for im, _ in scenes])
    y = torch.stack([torch.from_numpy(lab) for _, lab in scenes])
    return x, y


def iou(pred: np.ndarray, truth: np.ndarray, k: int) -> float:
    """IoU of class ``k`` (NaN when absent from both)."""
    inter = np.logical_and(pred == k, truth == k).sum()
    union = np.logical_or(pred == k, truth == k).sum()
    return float(inter / union) if union else float("nan")


def heldout_figures(net: OpenVocabSegmenter, prompts: list[str], held_out: str, *,
                    seed: int, scenes: int = 6, size: int = 128) -> dict[str, float]:
    """Zero-shot IoU of ``held_out`` with every prompt offered, and the chance levels.

    ``chance_constant``: IoU of labelling every pixel ``held_out`` (= its pixel share);
    ``chance_random``: expected IoU of a uniform random prompt per pixel.
    """
    k = prompts.index(held_out)
    rng = np.random.default_rng(seed)
    preds, truths = [], []
    net.eval()
    net.set_prompts(prompts)
    with torch.no_grad():
        for _ in range(scenes):  # scenes where the held-out kind is common
            image, truth = attribute_scene(int(rng.integers(2**31)), size, prompts, cells=16)
            preds.append(net(_normalise(image)[None])[0].argmax(0).numpy())
            truths.append(truth)
    pred, truth = np.stack(preds), np.stack(truths)
    share = float((truth == k).mean())
    K = len(prompts)
    return {
        "heldout_iou": iou(pred, truth, k),
        "chance_constant": share,
        "chance_random": share / (1 + share * K - share) if share else 0.0,
        "pixel_accuracy": float((pred == truth).mean()),
        "heldout_share": share,
    }


def train_network(*, seed: int, steps: int, train_prompts: list[str], size: int = 64,
                  batch: int = 8, lr: float = 3e-3, width: int = 32, dim: int = 32,
                  on_step: Callable[[int, float], None] | None = None) -> OpenVocabSegmenter:
    """Contrastive per-pixel training: cross-entropy over the training prompts' cosine logits."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = OpenVocabSegmenter(in_channels=3, dim=dim, width=width)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    net.train()
    for step in range(1, steps + 1):
        x, y = _batch(rng, train_prompts, size, batch)
        loss = F.cross_entropy(net.logits(x, net.text_encoder.encode(train_prompts)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if on_step is not None:
            on_step(step, float(loss.detach()))
    return net.eval()


def train_openvocab(out_dir: Path, *, seed: int = 0, steps: int = 400, held_out: str = HELD_OUT,
                    prompts: list[str] | None = None, width: int = 32, dim: int = 32,
                    size: int = 64, batch: int = 8, name: str = "openvocab-attributes",
                    on_step: Callable[[int, float], None] | None = None) -> ModelBundle:
    """Train with ``held_out`` left out, measure it zero-shot, write the bundle.

    Returns
    -------
    ModelBundle
        Classes = ``prompts`` (all of them, held-out included) in order;
        ``spec.training["heldout"]`` has the figures of :func:`heldout_figures`.
    """
    prompts = list(prompts or attribute_prompts())
    if held_out not in prompts:
        raise ConfigError(f"held_out {held_out!r} is not one of the prompts {prompts}")
    train_prompts = [p for p in prompts if p != held_out]
    start = time.perf_counter()
    net = train_network(seed=seed, steps=steps, train_prompts=train_prompts, size=size,
                        batch=batch, width=width, dim=dim, on_step=on_step)
    seconds = time.perf_counter() - start
    figures = heldout_figures(net, prompts, held_out, seed=seed + 1000)
    params = {"in_channels": 3, "dim": dim, "width": width,
              "buckets": net.text_encoder.buckets, "scale": net.scale}
    spec = ModelSpec(
        name=name, architecture=ARCHITECTURE, params=params, weights="model.safetensors",
        input=InputSpec(channels=3, mean=_MEAN, std=_STD), classes=prompt_classes(prompts),
        prompts=prompts, tile=256, receptive_field=OpenVocabSegmenter.receptive_field, stride=1,
        training={"seed": seed, "steps": steps, "held_out": held_out,
                  "train_prompts": train_prompts, "seconds": round(seconds, 1),
                  "heldout": figures},
    )
    return save_bundle(Path(out_dir), spec, net.state_dict())


def main(argv: list[str] | None = None) -> None:
    """``python -m pipeline.training.openvocab OUT_DIR [--steps N] [--seed S]``: train and report."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    bundle = train_openvocab(args.out_dir, seed=args.seed, steps=args.steps)
    training = bundle.spec.training or {}
    fig = training["heldout"]
    print(f"wrote {bundle.path}: held-out '{training['held_out']}' IoU "
          f"{fig['heldout_iou']:.3f} (chance: constant {fig['chance_constant']:.3f}, "
          f"random {fig['chance_random']:.3f}); pixel accuracy {fig['pixel_accuracy']:.3f}")


if __name__ == "__main__":
    main()
