"""``segpipe train``: train a built-in architecture and write a model bundle.

Data come from the seeded synthetic generators (``segcore.synthetic``) or from
user GeoTIFF image + label pairs (label files as in CONTRACT.md). Training
samples random crops with flips and 90-degree rotations, optimises
cross-entropy + soft Dice (``segcore.losses.SegmentationLoss``) with AdamW and
a cosine schedule, then measures mIoU/Dice on held-out scenes with the same
streaming confusion matrices the pipeline reports, and stores those figures in
the bundle's ``model.yaml`` (``training.heldout``).

With ``params: {instance_head: true}`` the data also carry instance maps
(synthetic: the rendered building ids; GeoTIFF: band 2 of the label file).
Each crop's instance map gets the same rot90/flip as its image *before* the
centre/offset targets are computed (``segcore.instances.instance_targets``),
so the offsets always point at the centres of the augmented crop; the loss
adds ``segcore.losses.InstanceLoss``. The held-out evaluation then also
computes panoptic quality (predicted panoptic map: semantic argmax +
``group_instances`` on thing pixels, fused like the truth with
``segcore.panoptic``) and records it with the grouping settings used
(``training.heldout.pq`` / ``pq_things`` / ``per_class_pq``,
``training.grouping``).

3-D: ``data: {kind: synthetic-phantom}`` trains a 3-D network (``architecture:
unet3d``) on seeded phantom volumes (``segcore.synthetic.phantom``: an organ
as stuff, lesions as things, intensities in raw physical units) with random
cubic crops and flips along every axis (a fraction of them centred on a
lesion). The bundle then records ``ndim: 3``, the training ``spacing``
(``[z, y, x]`` mm) and ``input.value_scale`` 1.0 for every dtype (mean/std in
raw units); held-out figures come from whole volumes and add ``organ_dice``
and ``lesion_pq``.

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
from torch import nn
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.bundle import (
    ClassSpec, InputSpec, ModelBundle, ModelFormat, ModelSpec, save_bundle, write_spec,
)
from pipeline.training.attention import attention_report
from pipeline.training.data import ImagePair, NiftiData, ZarrData, nifti_arrays, zarr_arrays
from pipeline.training.losses import ExtraLosses
from pipeline.training.points import PointSupervision, point_loss
from pipeline.training.checkpoints import (
    checkpoint_path, config_digest, export_network, load_checkpoint, save_checkpoint,
)
from segcore.errors import ConfigError, InputError
from segcore.geometry.padding import pad_to_multiple
from segcore.geometry.window import Window
from segcore.instances.grouping import group_instances
from segcore.instances.targets import instance_targets
from segcore.losses import SegmentationLoss
from segcore.losses.instance import InstanceLoss
from segcore.losses.set_prediction import SetPredictionLoss, semantic_targets
from segcore.metrics.confusion import SemanticScores, confusion_matrix
from segcore.models.factory import build_model
from segcore.panoptic import FusionStats, PanopticAccumulator, apply_plan, decide, panoptic_quality
from segcore.receptive_field import measure
from segcore.synthetic.phantom import LESION, PHANTOM_CLASSES, PhantomSpec, render_phantom
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


class PhantomData(BaseModel):
    """Seeded synthetic 3-D phantoms (``segcore.synthetic.phantom``), rendered in memory.

    ``shape`` is ``(Z, Y, X)`` voxels and ``spacing`` ``(z, y, x)`` mm (the
    bundle records it); the anatomy is in mm. ``lesion_crops`` is the
    fraction of training crops centred on a random lesion voxel.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["synthetic-phantom"] = "synthetic-phantom"
    volumes: int = Field(default=8, ge=1)
    shape: tuple[int, int, int] = (96, 96, 96)
    spacing: tuple[float, float, float] = (2.0, 2.0, 2.0)
    seed: int = 0
    lesions: tuple[int, int] = (3, 7)
    lesion_radius_mm: tuple[float, float] = (4.0, 10.0)
    noise: float = Field(default=40.0, ge=0)
    bias: float = Field(default=0.15, ge=0, lt=1)
    lesion_crops: float = Field(default=0.5, ge=0, le=1)
    heldout_volumes: int = Field(default=2, ge=1)
    heldout_shape: tuple[int, int, int] | None = None  # None: as `shape`
    heldout_seed: int = 100_000

    def phantom_spec(self, seed: int, *, heldout: bool = False) -> PhantomSpec:
        """The :class:`PhantomSpec` of one training (or held-out) volume."""
        shape = (self.heldout_shape or self.shape) if heldout else self.shape
        return PhantomSpec(shape=shape, spacing=self.spacing, seed=seed, lesions=self.lesions,
                           lesion_radius_mm=self.lesion_radius_mm, noise=self.noise, bias=self.bias)


GeoTiffPair = ImagePair  # image + labels, read window by window


class GeoTiffData(BaseModel):
    """User scenes: GeoTIFF image + label pairs, read window by window."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["geotiff"] = "geotiff"
    train: list[GeoTiffPair]
    heldout: list[GeoTiffPair]
    bands: list[int] | None = None
    classes: list[ClassSpec]


class GroupingConfig(BaseModel):
    """Held-out instance grouping (``segcore.instances.group_instances``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    threshold: float = Field(default=0.1, ge=0)
    nms_kernel: int = Field(default=7, ge=1)
    top_k: int | None = Field(default=None, ge=1)


class TrainConfig(BaseModel):
    """A training run (YAML, see ``configs/demo-satellite.yaml``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    architecture: str = "unet2d"
    params: dict[str, Any] = Field(default_factory=dict)
    data: SyntheticData | GeoTiffData | PhantomData | NiftiData | ZarrData = Field(
        discriminator="kind")
    steps: int = Field(default=1500, ge=1)
    batch_size: int = Field(default=8, ge=1)
    crop: int = Field(default=128, ge=16)
    lr: float = Field(default=3e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    ce_weight: float = Field(default=1.0, ge=0)
    dice_weight: float = Field(default=1.0, ge=0)
    # optional terms (pipeline.training.losses): focal, boundary-weighted CE, auxiliary edge head
    focal_weight: float = Field(default=0.0, ge=0)
    focal_gamma: float = Field(default=2.0, ge=0)
    boundary_weight: float = Field(default=0.0, ge=0)
    edge_map_weight: float = Field(default=5.0, ge=0)
    edge_weight: float = Field(default=0.0, ge=0)
    # weak supervision: train from sampled clicks instead of full masks (pipeline.training.points)
    point_supervision: PointSupervision | None = None
    # instance head (only used with params.instance_head: true)
    center_sigma: float = Field(default=4.0, gt=0)  # Gaussian of the centre targets, pixels
    center_weight: float = Field(default=200.0, ge=0)  # Panoptic-DeepLab
    offset_weight: float = Field(default=0.1, ge=0)  # 10x Panoptic-DeepLab: small buildings
    grouping: GroupingConfig = Field(default_factory=GroupingConfig)
    seed: int = 0
    threads: int = Field(default=2, ge=1)
    tile: int = Field(default=512, ge=16)
    checkpoint_every: int = Field(default=100, ge=0)  # steps; 0 = no checkpoints
    export: Literal["state_dict", "torchscript", "export"] = "state_dict"


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
    """In-memory training scenes: images ``(C, H, W)`` uint8/float, labels ``(H, W)``,
    optionally instance maps ``(H, W)`` (0 = no instance)."""

    def __init__(self, images: list[np.ndarray], labels: list[np.ndarray], ignore: int,
                 instances: list[np.ndarray] | None = None) -> None:
        self.images, self.labels, self.ignore = images, labels, ignore
        self.instances = instances
        self.spacing: tuple = ()  # voxel size (mm) of user volumes, recorded in the bundle

    def crops(self, rng: np.random.Generator, n: int, crop: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` random augmented crops: images ``(n, C, crop, crop)``, labels ``(n, crop, crop)``."""
        xs, ys, _ = self._crops(rng, n, crop, with_instances=False)
        return xs, ys

    def instance_crops(self, rng: np.random.Generator, n: int,
                       crop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """As :meth:`crops` plus the instance crops ``(n, crop, crop)``, augmented identically."""
        if self.instances is None:
            raise ConfigError("instance_head: the training data carry no instance maps")
        xs, ys, inst = self._crops(rng, n, crop, with_instances=True)
        assert inst is not None
        return xs, ys, inst

    def _crops(self, rng: np.random.Generator, n: int, crop: int,
               *, with_instances: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        # The random draws are the same with and without instances.
        xs, ys, zs = [], [], []
        for _ in range(n):
            i = int(rng.integers(len(self.images)))
            img, lab = self.images[i], self.labels[i]
            r = int(rng.integers(0, lab.shape[0] - crop + 1))
            c = int(rng.integers(0, lab.shape[1] - crop + 1))
            x, y = img[:, r : r + crop, c : c + crop], lab[r : r + crop, c : c + crop]
            z = self.instances[i][r : r + crop, c : c + crop] if with_instances else None
            k = int(rng.integers(4))
            x, y = np.rot90(x, k, axes=(1, 2)), np.rot90(y, k)
            z = None if z is None else np.rot90(z, k)
            if rng.random() < 0.5:
                x, y = x[:, :, ::-1], y[:, ::-1]
                z = None if z is None else z[:, ::-1]
            xs.append(x.copy())
            ys.append(y.copy())
            if z is not None:
                zs.append(z.copy())
        return np.stack(xs), np.stack(ys), (np.stack(zs) if with_instances else None)


class Volumes(Scenes):
    """In-memory training volumes: images ``(C, Z, Y, X)``, labels ``(Z, Y, X)``,
    optionally instance maps ``(Z, Y, X)``.

    Crops are cubes of side ``crop`` with a random flip along every axis; a
    fraction ``focus`` of them is centred (up to a random shift) on a random
    voxel of class ``focus_class`` when the volume has one.
    """

    def __init__(self, images: list[np.ndarray], labels: list[np.ndarray], ignore: int,
                 instances: list[np.ndarray] | None = None, *, focus: float = 0.0,
                 focus_class: int = 0) -> None:
        super().__init__(images, labels, ignore, instances)
        self.focus = focus
        self.points = [np.argwhere(lab == focus_class) for lab in labels]

    def _corner(self, rng: np.random.Generator, i: int, crop: int) -> list[int]:
        shape = self.labels[i].shape
        if min(shape) < crop:
            raise ConfigError(f"crop: expected at most the smallest volume side {min(shape)}, "
                              f"received {crop}")
        points = self.points[i]
        if rng.random() < self.focus and len(points):
            p = points[int(rng.integers(len(points)))]
            return [int(np.clip(c - rng.integers(crop), 0, n - crop)) for c, n in zip(p, shape)]
        return [int(rng.integers(0, n - crop + 1)) for n in shape]

    def _crops(self, rng: np.random.Generator, n: int, crop: int,
               *, with_instances: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        xs, ys, zs = [], [], []
        for _ in range(n):
            i = int(rng.integers(len(self.images)))
            box = tuple(slice(c, c + crop) for c in self._corner(rng, i, crop))
            x, y = self.images[i][(slice(None), *box)], self.labels[i][box]
            z = self.instances[i][box] if with_instances and self.instances is not None else None
            for axis in range(3):
                if rng.random() < 0.5:
                    x, y = np.flip(x, axis + 1), np.flip(y, axis)
                    z = None if z is None else np.flip(z, axis)
            xs.append(x.copy())
            ys.append(y.copy())
            if z is not None:
                zs.append(z.copy())
        return np.stack(xs), np.stack(ys), (np.stack(zs) if with_instances else None)


def phantom_volumes(data: PhantomData, *, heldout: bool, instances: bool = False) -> Volumes:
    """Render the training (or held-out) phantoms of ``data`` as :class:`Volumes`."""
    n, seed = (data.heldout_volumes, data.heldout_seed) if heldout else (data.volumes, data.seed)
    images, labels, inst = [], [], []
    for i in range(n):
        ph = render_phantom(data.phantom_spec(seed + i, heldout=heldout))
        images.append(ph.image[None])
        labels.append(ph.semantic.astype(np.int64))
        inst.append(ph.instance.astype(np.int64))
    return Volumes(images, labels, ignore=255, instances=inst if instances else None,
                   focus=0.0 if heldout else data.lesion_crops, focus_class=LESION)


def crop_targets(instances: np.ndarray, sigma: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batched ``instance_targets`` of (already augmented) instance crops ``(N, *S)``.

    Returns centre heatmaps ``(N, 1, *S)``, offsets ``(N, ndim, *S)`` and
    offset weights ``(N, *S)``, float32 tensors (2-D or 3-D crops).
    """
    heats, offsets, weights = zip(*(instance_targets(z, sigma=sigma) for z in instances))
    return (torch.from_numpy(np.stack(heats)), torch.from_numpy(np.stack(offsets)),
            torch.from_numpy(np.stack(weights)))


def synthetic_scenes(data: SyntheticData, *, heldout: bool, instances: bool = False) -> Scenes:
    n, size, seed = (
        (data.heldout_scenes, data.heldout_size, data.heldout_seed) if heldout
        else (data.scenes, data.size, data.seed)
    )
    images, labels, inst = [], [], []
    for i in range(n):
        spec = SatelliteSceneSpec(seed=seed + i, height=size, width=size, bands=data.bands)
        out = render(spec, Window((0, 0), (size, size)))
        images.append(out.image)
        labels.append(out.semantic.astype(np.int64))
        inst.append(out.instance.astype(np.int64))
    return Scenes(images, labels, ignore=255, instances=inst if instances else None)


def geotiff_scenes(data: GeoTiffData, *, heldout: bool, instances: bool = False) -> Scenes:
    from pipeline.io.geotiff import GeoTiffReader, open_raster
    from pipeline.streaming.metrics import unlabelled_value

    pairs = data.heldout if heldout else data.train
    images, labels, inst = [], [], []
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
        if instances:
            if linfo.count < 2:
                raise InputError(str(pair.labels), "instance_head: true needs instance ids in band 2 "
                                 "of the label file (0 = no instance); this file has one band")
            with GeoTiffReader(pair.labels, bands=[2]) as r:
                ids = r.read(window)[0].astype(np.int64)
            ids[(lab == 255) | (ids < 0)] = 0
            inst.append(ids)
    return Scenes(images, labels, ignore=255, instances=inst if instances else None)


def user_volumes(data: NiftiData | ZarrData, *, heldout: bool, instances: bool) -> Scenes:
    """NIfTI pairs or Zarr stores as :class:`Volumes` (3-D) or :class:`Scenes` (2-D)."""
    spacing: tuple = ()
    if isinstance(data, NiftiData):
        images, labels, inst, spacing = nifti_arrays(data, heldout=heldout, instances=instances)
    else:
        images, labels, inst = zarr_arrays(data, heldout=heldout, instances=instances)
    kind = Volumes if labels and labels[0].ndim == 3 else Scenes
    scenes = kind(images, labels, ignore=255, instances=inst if instances else None)
    scenes.spacing = spacing
    return scenes


def load_scenes(data: SyntheticData | GeoTiffData | PhantomData | NiftiData | ZarrData, *,
                heldout: bool, instances: bool = False) -> Scenes:
    if isinstance(data, (NiftiData, ZarrData)):
        return user_volumes(data, heldout=heldout, instances=instances)
    if isinstance(data, PhantomData):
        return phantom_volumes(data, heldout=heldout, instances=instances)
    if isinstance(data, SyntheticData):
        return synthetic_scenes(data, heldout=heldout, instances=instances)
    return geotiff_scenes(data, heldout=heldout, instances=instances)


def class_table(data: SyntheticData | GeoTiffData | PhantomData | NiftiData | ZarrData
                ) -> list[ClassSpec]:
    if isinstance(data, (GeoTiffData, NiftiData, ZarrData)):
        return list(data.classes)
    table = PHANTOM_CLASSES if isinstance(data, PhantomData) else SATELLITE_CLASSES
    return [ClassSpec(id=c.id, name=c.name, isthing=c.isthing, color=c.color) for c in table]


def normalisation(scenes: Scenes, *, raw: bool = False) -> tuple[list[float], list[float], float]:
    """Per-band mean/std after the dtype's value scale (uint8 -> /255).

    ``raw=True`` (physical units, e.g. MR/CT intensities): scale 1.0 for every
    dtype, mean/std in raw units.
    """
    scale = 1.0 if raw else 1.0 / 255.0 if scenes.images[0].dtype == np.uint8 else (
        1.0 / 65535.0 if scenes.images[0].dtype == np.uint16 else 1.0)
    stacked = np.concatenate([im.reshape(im.shape[0], -1) for im in scenes.images], axis=1)
    values = stacked.astype(np.float64) * scale
    return values.mean(axis=1).tolist(), np.maximum(values.std(axis=1), 1e-6).tolist(), scale


# --------------------------------------------------------------------------- loop
def _fuse(semantic: np.ndarray, instance: np.ndarray, classes: list[ClassSpec],
          nodata: int) -> tuple[np.ndarray, dict[int, int]]:
    """Panoptic ids ``(*S)`` of one scene or volume and their categories (``segcore.panoptic``)."""
    table = [(c.id, c.name, c.isthing) for c in classes]
    stats = FusionStats(ndim=semantic.ndim, nodata=nodata)
    stats.add(semantic, instance)
    plan = decide(stats, table, min_stuff_area=0)
    return apply_plan(plan, semantic, instance), {g.id: g.category_id for g in plan.segments}


class _PanopticEval:
    """Held-out panoptic quality over several scenes (segment ids made unique per scene)."""

    def __init__(self, classes: list[ClassSpec], nodata: int) -> None:
        self.classes, self.nodata = classes, nodata
        self.acc = PanopticAccumulator()
        self.pred_cat: dict[int, int] = {}
        self.true_cat: dict[int, int] = {}
        self.next_id = 1

    def _relabel(self, pan: np.ndarray, cats: dict[int, int], into: dict[int, int]) -> np.ndarray:
        """Map this scene's segment ids to fresh global ones (void stays 0)."""
        ids = np.array(sorted(cats), dtype=np.int64)
        if ids.size == 0:
            return np.zeros(pan.shape, np.uint32)
        new = np.arange(self.next_id, self.next_id + ids.size, dtype=np.int64)
        self.next_id += ids.size
        into.update({int(n): cats[int(i)] for i, n in zip(ids, new)})
        pos = np.searchsorted(ids, pan.astype(np.int64)).clip(0, ids.size - 1)
        return np.where(pan > 0, new[pos], 0).astype(np.uint32)

    def add(self, pred_sem: np.ndarray, pred_inst: np.ndarray, true_sem: np.ndarray,
            true_inst: np.ndarray) -> None:
        pred, pcat = _fuse(pred_sem, pred_inst, self.classes, self.nodata)
        true, tcat = _fuse(true_sem, true_inst, self.classes, self.nodata)
        self.acc.add(self._relabel(pred, pcat, self.pred_cat), self._relabel(true, tcat, self.true_cat))

    def scores(self) -> dict[str, Any]:
        q = panoptic_quality(self.acc, self.pred_cat, self.true_cat,
                             {c.id: c.name for c in self.classes},
                             thing_ids=[c.id for c in self.classes if c.isthing])
        return {"pq": q.pq, "pq_things": q.things["pq"], "pq_stuff": q.stuff["pq"],
                "per_class_pq": {name: cq.pq for name, cq in q.per_class.items()}}


def evaluate(net: torch.nn.Module, scenes: Scenes, mean: list[float], std: list[float],
             scale: float, names: list[str], *, classes: list[ClassSpec] | None = None,
             grouping: GroupingConfig | None = None) -> dict[str, Any]:
    """Whole-scene inference on held-out scenes; streaming confusion -> mIoU, Dice.

    Scenes are 2-D ``(C, H, W)`` or 3-D ``(C, Z, Y, X)`` (``net.ndim``); each
    is padded to the stride, predicted whole and cropped back.

    For a network with an instance head (dict output) and scenes with instance
    maps, also panoptic quality: ``pq``, ``pq_things``, ``pq_stuff``,
    ``per_class_pq`` ({name: pq}, None for classes absent from both maps).
    """
    net.eval()
    k = len(names)
    cm = np.zeros((k, k), dtype=np.int64)
    ndim = int(getattr(net, "ndim", 2))
    m = torch.tensor(mean, dtype=torch.float32).reshape(-1, *[1] * ndim)
    s = torch.tensor(std, dtype=torch.float32).reshape(-1, *[1] * ndim)
    stride = int(getattr(net, "stride", 1))
    grouping = grouping or GroupingConfig()
    panoptic: _PanopticEval | None = None
    if classes is not None and scenes.instances is not None:
        panoptic = _PanopticEval(classes, scenes.ignore)
        isthing = np.zeros(max(c.id for c in classes) + 1, bool)
        for c in classes:
            isthing[c.id] = c.isthing
    with torch.inference_mode():
        for i, (img, lab) in enumerate(zip(scenes.images, scenes.labels)):
            x = (torch.from_numpy(img.astype(np.float32)) * scale - m) / s
            x, size = pad_to_multiple(x[None], stride, spatial_dims=ndim)
            out = net(x)
            logits = out["semantic"] if isinstance(out, dict) else out
            crop = (0, slice(None), *(slice(0, n) for n in size))
            pred = logits[crop].argmax(0).numpy()
            cm += confusion_matrix(pred, lab, k, ignore_index=scenes.ignore)
            if panoptic is not None and isinstance(out, dict):
                center = out["center"][crop]
                offset = out["offset"][crop]
                inst = group_instances(center, offset, torch.from_numpy(isthing[pred]),
                                       threshold=grouping.threshold, nms_kernel=grouping.nms_kernel,
                                       top_k=grouping.top_k).numpy()
                panoptic.add(pred, inst, lab, scenes.instances[i])
    scores = SemanticScores.from_confusion(cm, names).to_dict()
    result = {"miou": scores["miou"], "dice": scores["dice"], "per_class": scores["per_class"],
              "scenes": len(scenes.images)}
    if panoptic is not None:
        result.update(panoptic.scores())
    return result


def _schedule(opt: torch.optim.Optimizer, lr: float, steps: int):
    """One-cycle learning rate, warm-up 10 % of the steps (at least 2.5: OneCycleLR divides
    by the warm-up length); a constant rate for runs under 10 steps (smoke tests)."""
    if steps < 10:
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps,
                                               pct_start=max(0.1, 2.5 / steps))


def train_bundle(cfg: TrainConfig, out: Path, *, on_step: StepCallback | None = None,
                 resume: bool = False, stop_after: int | None = None) -> ModelBundle | None:
    """Train per ``cfg``; write and return the bundle at ``out``.

    Every ``cfg.checkpoint_every`` steps the state goes to
    :func:`pipeline.training.checkpoints.checkpoint_path` (``out``); ``resume`` continues from it.
    ``stop_after`` ends after that many steps with a checkpoint and no bundle (returns
    None): the same as an interrupted run, for tests.
    """
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(cfg.seed)
    classes = class_table(cfg.data)
    names = [c.name for c in classes]
    with_instances = bool(cfg.params.get("instance_head", False))
    train_set = load_scenes(cfg.data, heldout=False, instances=with_instances)
    channels = train_set.images[0].shape[0]
    params = {"in_channels": channels, "num_classes": len(classes), **cfg.params}
    net = build_model(cfg.architecture, **params)
    physical = isinstance(cfg.data, (PhantomData, NiftiData))  # intensities in physical units
    mean, std, scale = normalisation(train_set, raw=physical)
    ndim = int(getattr(net, "ndim", 2))
    data_ndim = train_set.labels[0].ndim
    if ndim != data_ndim:
        raise ConfigError(f"data.kind {cfg.data.kind}: expected a {data_ndim}-D architecture "
                          f"(unet{data_ndim}d), received '{cfg.architecture}' with ndim {ndim}")
    m = torch.tensor(mean, dtype=torch.float32).reshape(1, -1, *[1] * ndim)
    s = torch.tensor(std, dtype=torch.float32).reshape(1, -1, *[1] * ndim)
    loss_fn = SegmentationLoss(ce_weight=cfg.ce_weight, dice_weight=cfg.dice_weight)
    inst_loss = InstanceLoss(center_weight=cfg.center_weight, offset_weight=cfg.offset_weight)
    set_loss = SetPredictionLoss(len(classes))  # Hungarian-matched, for query models
    extra_loss = ExtraLosses(num_classes=len(classes), ndim=ndim, focal_weight=cfg.focal_weight,
                             focal_gamma=cfg.focal_gamma, boundary_weight=cfg.boundary_weight,
                             edge_map_weight=cfg.edge_map_weight, edge_weight=cfg.edge_weight)
    trainables = nn.ModuleList([net, *([extra_loss.head] if extra_loss.head else [])])
    opt = torch.optim.AdamW(trainables.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = _schedule(opt, cfg.lr, cfg.steps)
    ckpt, digest = checkpoint_path(out), config_digest(cfg.model_dump(mode="json"))
    first, loss_value = 1, float("nan")
    if resume and ckpt.is_file():
        done, loss_value = load_checkpoint(ckpt, digest=digest, net=trainables, opt=opt, sched=sched,
                                           rng=rng)
        first = done + 1
    start = time.perf_counter()
    net.train()
    for step in range(first, cfg.steps + 1):
        if with_instances:
            xb, yb, zb = train_set.instance_crops(rng, cfg.batch_size, cfg.crop)
            x = (torch.from_numpy(xb.astype(np.float32)) * scale - m) / s
            heat, off, w = crop_targets(zb, cfg.center_sigma)
            pred = net(x)
            target = torch.from_numpy(yb)
            loss = loss_fn(pred["semantic"], target) + inst_loss(
                pred["center"], pred["offset"], heat, off, w)
            if extra_loss.active:
                loss = loss + extra_loss(pred["semantic"], target)
        else:
            xb, yb = train_set.crops(rng, cfg.batch_size, cfg.crop)
            x = (torch.from_numpy(xb.astype(np.float32)) * scale - m) / s
            target, outputs = torch.from_numpy(yb), net(x)
            logits = outputs["semantic"] if isinstance(outputs, dict) else outputs
            if isinstance(outputs, dict) and "pred_masks" in outputs:  # set prediction (queries)
                loss = set_loss(outputs, semantic_targets(target, len(classes), ignore_index=255))
            elif cfg.point_supervision is not None:
                loss = point_loss(logits, yb, rng, cfg.point_supervision)
            else:
                loss = loss_fn(logits, target)
            if extra_loss.active:
                loss = loss + extra_loss(logits, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        loss_value = float(loss.detach())
        if on_step is not None:
            on_step(step, loss_value)
        final = stop_after is not None and step >= stop_after
        if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or final:
            save_checkpoint(ckpt, step=step, digest=digest, net=trainables, opt=opt, sched=sched,
                            rng=rng, loss=loss_value)
        if final:
            return None
    train_seconds = time.perf_counter() - start
    heldout_set = load_scenes(cfg.data, heldout=True, instances=with_instances)
    heldout = evaluate(net, heldout_set, mean, std, scale, names, classes=classes,
                       grouping=cfg.grouping)
    if hasattr(net, "attention_maps") and ndim == 2:  # ViT: attention vs per-patch error
        net.eval()
        heldout["attention"] = attention_report(net, heldout_set.images, heldout_set.labels,
                                                mean=mean, std=std, scale=scale)
    stride = int(getattr(net, "stride", 1))
    declared = getattr(net, "receptive_field", None)  # 0: global (attention) models
    rf = measure(net, channels, ndim=ndim) if declared is None else int(declared)
    extra: dict[str, Any] = {}
    input_extra: dict[str, Any] = {}
    if ndim == 3:
        extra["ndim"] = 3
    if physical:
        spacing = cfg.data.spacing if isinstance(cfg.data, PhantomData) else train_set.spacing
        extra["spacing"] = [float(v) for v in spacing]
        dtypes = InputSpec.model_fields["value_scale"].get_default(call_default_factory=True)
        input_extra["value_scale"] = {dtype: 1.0 for dtype in dtypes}
    if isinstance(cfg.data, PhantomData):
        heldout["organ_dice"] = heldout["per_class"]["organ"]["dice"]
        if "per_class_pq" in heldout:
            heldout["lesion_pq"] = heldout["per_class_pq"]["lesion"]
    if with_instances:
        extra["heads"] = ["semantic", "instance"]
        if "instances" in ModelSpec.model_fields:  # grouping for inference, where ModelSpec has it
            extra["instances"] = cfg.grouping.model_dump()
    spec = ModelSpec(
        **extra,
        name=cfg.name, architecture=cfg.architecture, params=params, weights="model.safetensors",
        input=InputSpec(**input_extra, channels=channels, mean=mean, std=std,
                        bands=getattr(cfg.data, "bands", None) if isinstance(cfg.data, GeoTiffData) else None),
        classes=classes, tile=cfg.tile, receptive_field=rf or None, stride=stride,
        training={"config": cfg.model_dump(mode="json"), "final_loss": loss_value,
                  "train_seconds": round(train_seconds, 1), "heldout": heldout,
                  "torch": torch.__version__,
                  # The grouping (and target sigma) the held-out PQ was measured with.
                  **({"grouping": {**cfg.grouping.model_dump(mode="json"),
                                   "center_sigma": cfg.center_sigma}} if with_instances else {})},
    )
    net.eval()
    if cfg.export != "state_dict":
        weights = export_network(net, out, fmt=cfg.export, in_channels=channels, ndim=ndim,
                                 stride=stride)
        # structure unknown to the pipeline: the receptive field as measured
        spec = spec.model_copy(update={"format": ModelFormat(cfg.export), "weights": weights,
                                       "receptive_field": measure(net, channels, ndim=ndim)
                                       if rf else None})
        bundle = write_spec(out, spec)
    else:
        bundle = save_bundle(out, spec, net.state_dict())
    ckpt.unlink(missing_ok=True)
    return bundle
