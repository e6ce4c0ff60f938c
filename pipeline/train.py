"""``segpipe train``: train a built-in architecture and write a model bundle.

Data come from the seeded synthetic generators (``segcore.synthetic``) or from
user GeoTIFF image + label pairs (label files as in CONTRACT.md). Training
samples random crops with flips and 90-degree rotations, optimises
cross-entropy + soft Dice (``segcore.losses.SegmentationLoss``) with AdamW and
a cosine schedule, then measures mIoU/Dice on held-out scenes with the same
streaming confusion matrices the pipeline reports, and stores those figures in
the bundle's ``model.yaml`` (``training.heldout``).

Reproducible: every random choice derives from ``seed``; with the same
``threads`` the same config gives the same weights.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.bundle import ClassSpec, InputSpec, ModelBundle, ModelSpec, save_bundle
from segcore.errors import ConfigError, InputError
from segcore.geometry.padding import pad_to_multiple
from segcore.geometry.window import Window
from segcore.losses import SegmentationLoss
from segcore.metrics.confusion import SemanticScores, confusion_matrix
from segcore.models.factory import build_model
from segcore.receptive_field import measure
from segcore.synthetic.satellite import SATELLITE_CLASSES, SatelliteSceneSpec, render

StepCallback = Callable[[int, float], None]


class SyntheticData(BaseModel):
    """Seeded synthetic satellite scenes, rendered in memory."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["synthetic-satellite"] = "synthetic-satellite"
    bands: int = Field(default=3, ge=3, le=4)
    scenes: int = Field(default=8, ge=1)
    size: int = Field(default=512, ge=64)
    seed: int = 0
    heldout_scenes: int = Field(default=4, ge=1)
    heldout_size: int = Field(default=512, ge=64)
    heldout_seed: int = 100_000


class GeoTiffPair(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    image: Path
    labels: Path


class GeoTiffData(BaseModel):
    """User scenes: GeoTIFF image + label pairs, read window by window."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["geotiff"] = "geotiff"
    train: list[GeoTiffPair]
    heldout: list[GeoTiffPair]
    bands: list[int] | None = None
    classes: list[ClassSpec]


class TrainConfig(BaseModel):
    """A training run (YAML, see ``configs/demo-satellite.yaml``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    architecture: str = "unet2d"
    params: dict[str, Any] = Field(default_factory=dict)
    data: SyntheticData | GeoTiffData = Field(discriminator="kind")
    steps: int = Field(default=1500, ge=1)
    batch_size: int = Field(default=8, ge=1)
    crop: int = Field(default=128, ge=16)
    lr: float = Field(default=3e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    ce_weight: float = Field(default=1.0, ge=0)
    dice_weight: float = Field(default=1.0, ge=0)
    seed: int = 0
    threads: int = Field(default=2, ge=1)
    tile: int = Field(default=512, ge=16)


def load_train_config(path: Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read and validate a training YAML; ``overrides`` (not None values) win."""
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"--config {path}: cannot read: {exc}") from exc
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"--config {path}: {where}: {first['msg']}") from None


# --------------------------------------------------------------------------- data
class Scenes:
    """In-memory training scenes: images ``(C, H, W)`` uint8/float, labels ``(H, W)``."""

    def __init__(self, images: list[np.ndarray], labels: list[np.ndarray], ignore: int) -> None:
        self.images, self.labels, self.ignore = images, labels, ignore

    def crops(self, rng: np.random.Generator, n: int, crop: int) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for _ in range(n):
            i = int(rng.integers(len(self.images)))
            img, lab = self.images[i], self.labels[i]
            r = int(rng.integers(0, lab.shape[0] - crop + 1))
            c = int(rng.integers(0, lab.shape[1] - crop + 1))
            x, y = img[:, r : r + crop, c : c + crop], lab[r : r + crop, c : c + crop]
            k = int(rng.integers(4))
            x, y = np.rot90(x, k, axes=(1, 2)), np.rot90(y, k)
            if rng.random() < 0.5:
                x, y = x[:, :, ::-1], y[:, ::-1]
            xs.append(x.copy())
            ys.append(y.copy())
        return np.stack(xs), np.stack(ys)


def synthetic_scenes(data: SyntheticData, *, heldout: bool) -> Scenes:
    n, size, seed = (
        (data.heldout_scenes, data.heldout_size, data.heldout_seed) if heldout
        else (data.scenes, data.size, data.seed)
    )
    images, labels = [], []
    for i in range(n):
        spec = SatelliteSceneSpec(seed=seed + i, height=size, width=size, bands=data.bands)
        out = render(spec, Window((0, 0), (size, size)))
        images.append(out.image)
        labels.append(out.semantic.astype(np.int64))
    return Scenes(images, labels, ignore=255)


def geotiff_scenes(data: GeoTiffData, *, heldout: bool) -> Scenes:
    from pipeline.io.geotiff import GeoTiffReader, open_raster
    from pipeline.metrics import unlabelled_value

    pairs = data.heldout if heldout else data.train
    images, labels = [], []
    for pair in pairs:
        info = open_raster(pair.image, require_crs=False)
        linfo = open_raster(pair.labels, require_crs=False)
        if linfo.shape != info.shape:
            raise InputError(str(pair.labels), f"labels {linfo.shape} do not match image {info.shape}")
        bands = data.bands or list(range(1, info.count + 1))
        window = (slice(0, info.height), slice(0, info.width))
        with GeoTiffReader(pair.image, bands=bands) as r:
            images.append(r.read(window))
        with GeoTiffReader(pair.labels, bands=[1]) as r:
            lab = r.read(window)[0].astype(np.int64)
        lab[lab == unlabelled_value(linfo.dtype)] = 255
        labels.append(lab)
    return Scenes(images, labels, ignore=255)


def load_scenes(data: SyntheticData | GeoTiffData, *, heldout: bool) -> Scenes:
    if isinstance(data, SyntheticData):
        return synthetic_scenes(data, heldout=heldout)
    return geotiff_scenes(data, heldout=heldout)


def class_table(data: SyntheticData | GeoTiffData) -> list[ClassSpec]:
    if isinstance(data, GeoTiffData):
        return list(data.classes)
    return [ClassSpec(id=c.id, name=c.name, isthing=c.isthing, color=c.color)
            for c in SATELLITE_CLASSES]


def normalisation(scenes: Scenes) -> tuple[list[float], list[float], float]:
    """Per-band mean/std after the dtype's value scale (uint8 -> /255)."""
    scale = 1.0 / 255.0 if scenes.images[0].dtype == np.uint8 else (
        1.0 / 65535.0 if scenes.images[0].dtype == np.uint16 else 1.0)
    stacked = np.concatenate([im.reshape(im.shape[0], -1) for im in scenes.images], axis=1)
    values = stacked.astype(np.float64) * scale
    return values.mean(axis=1).tolist(), np.maximum(values.std(axis=1), 1e-6).tolist(), scale


# --------------------------------------------------------------------------- loop
def evaluate(net: torch.nn.Module, scenes: Scenes, mean: list[float], std: list[float],
             scale: float, names: list[str]) -> dict[str, Any]:
    """Whole-scene inference on held-out scenes; streaming confusion -> mIoU, Dice."""
    net.eval()
    k = len(names)
    cm = np.zeros((k, k), dtype=np.int64)
    m = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    s = torch.tensor(std, dtype=torch.float32)[:, None, None]
    stride = int(getattr(net, "stride", 1))
    with torch.inference_mode():
        for img, lab in zip(scenes.images, scenes.labels):
            x = (torch.from_numpy(img.astype(np.float32)) * scale - m) / s
            x, size = pad_to_multiple(x[None], stride, spatial_dims=2)
            pred = net(x)[0, :, : size[0], : size[1]].argmax(0).numpy()
            cm += confusion_matrix(pred, lab, k, ignore_index=scenes.ignore)
    scores = SemanticScores.from_confusion(cm, names).to_dict()
    return {"miou": scores["miou"], "dice": scores["dice"], "per_class": scores["per_class"],
            "scenes": len(scenes.images)}


def train_bundle(cfg: TrainConfig, out: Path, *, on_step: StepCallback | None = None) -> ModelBundle:
    """Train per ``cfg``; write and return the bundle at ``out``."""
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(cfg.seed)
    classes = class_table(cfg.data)
    names = [c.name for c in classes]
    train_set = load_scenes(cfg.data, heldout=False)
    channels = train_set.images[0].shape[0]
    params = {"in_channels": channels, "num_classes": len(classes), **cfg.params}
    net = build_model(cfg.architecture, **params)
    mean, std, scale = normalisation(train_set)
    m = torch.tensor(mean, dtype=torch.float32)[None, :, None, None]
    s = torch.tensor(std, dtype=torch.float32)[None, :, None, None]
    loss_fn = SegmentationLoss(ce_weight=cfg.ce_weight, dice_weight=cfg.dice_weight)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps,
                                                pct_start=0.1)
    start = time.perf_counter()
    net.train()
    loss_value = float("nan")
    for step in range(1, cfg.steps + 1):
        xb, yb = train_set.crops(rng, cfg.batch_size, cfg.crop)
        x = (torch.from_numpy(xb.astype(np.float32)) * scale - m) / s
        loss = loss_fn(net(x), torch.from_numpy(yb))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        loss_value = float(loss.detach())
        if on_step is not None:
            on_step(step, loss_value)
    train_seconds = time.perf_counter() - start
    heldout = evaluate(net, load_scenes(cfg.data, heldout=True), mean, std, scale, names)
    stride = int(getattr(net, "stride", 1))
    rf = int(getattr(net, "receptive_field", 0)) or measure(net, channels, ndim=2)
    spec = ModelSpec(
        name=cfg.name, architecture=cfg.architecture, params=params, weights="model.safetensors",
        input=InputSpec(channels=channels, mean=mean, std=std,
                        bands=getattr(cfg.data, "bands", None) if isinstance(cfg.data, GeoTiffData) else None),
        classes=classes, tile=cfg.tile, receptive_field=rf, stride=stride,
        training={"config": cfg.model_dump(mode="json"), "final_loss": loss_value,
                  "train_seconds": round(train_seconds, 1), "heldout": heldout,
                  "torch": torch.__version__},
    )
    net.eval()
    return save_bundle(out, spec, net.state_dict())
