"""segpipe train with the instance head: augmented targets and held-out panoptic quality."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.bundle import load_bundle
from pipeline.training import TrainConfig, train_bundle
from pipeline.training.scenes import Scenes
from pipeline.training.steps import crop_targets
from segcore.instances.grouping import group_instances


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to a relabelling of the non-zero ids (0 must stay 0)."""
    if not np.array_equal(a == 0, b == 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    return len(set(pairs[0])) == len(set(pairs[1])) == pairs.shape[1]


def _toy_scene() -> Scenes:
    inst = np.zeros((40, 40), np.int64)
    inst[2:7, 3:14] = 11  # asymmetric layout: a wrong rotation would show
    inst[20:35, 5:9] = 3
    inst[9:16, 25:38] = 250
    inst[30:37, 28:31] = 7
    image = np.stack([inst.astype(np.uint8), np.zeros_like(inst, np.uint8),
                      np.arange(40 * 40, dtype=np.int64).reshape(40, 40).astype(np.uint8)])
    return Scenes([image], [(inst > 0).astype(np.int64)], ignore=255, instances=[inst])


def test_augmented_instance_crops_keep_offsets_consistent():
    scenes = _toy_scene()
    rng = np.random.default_rng(3)
    xs, ys, zs = scenes.instance_crops(rng, 16, 40)  # whole scene: only rot90/flip vary
    # image, labels and instances are augmented identically ...
    assert np.array_equal(xs[:, 0].astype(np.int64), zs)
    assert np.array_equal(ys, (zs > 0).astype(np.int64))
    assert len({z.tobytes() for z in zs}) > 4  # several of the 8 rot/flip variants
    # ... and the targets of the augmented crop point at its own centres
    heat, off, w = crop_targets(zs, sigma=2.0)
    assert heat.shape == (16, 1, 40, 40) and off.shape == (16, 2, 40, 40) and w.shape == (16, 40, 40)
    for z, h, o in zip(zs, heat, off):
        grouped = group_instances(h, o, torch.from_numpy(z > 0), threshold=0.5, nms_kernel=3).numpy()
        assert _same_partition(grouped, z)


def test_instance_crops_draw_like_semantic_crops():
    scenes = _toy_scene()
    xa, ya = scenes.crops(np.random.default_rng(7), 5, 24)
    xb, yb, _ = scenes.instance_crops(np.random.default_rng(7), 5, 24)
    assert np.array_equal(xa, xb) and np.array_equal(ya, yb)


def test_training_with_the_instance_head_records_panoptic_quality(tmp_path):
    cfg = TrainConfig(
        name="inst", params={"base_channels": 4, "depth": 2, "instance_head": True},
        steps=3, batch_size=2, crop=64, threads=1, grouping={"threshold": 0.2, "nms_kernel": 5},
        data={"kind": "synthetic-satellite", "scenes": 2, "size": 128, "heldout_scenes": 1,
              "heldout_size": 128},
    )
    losses = []
    train_bundle(cfg, tmp_path / "b", on_step=lambda s, loss: losses.append(loss))
    assert len(losses) == 3 and all(np.isfinite(losses))
    spec = load_bundle(tmp_path / "b").spec
    assert spec.params["instance_head"] is True and "instance" in spec.heads
    heldout = spec.training["heldout"]
    assert 0.0 <= heldout["miou"] <= 1.0
    assert heldout["pq"] is None or 0.0 <= heldout["pq"] <= 1.0
    assert set(heldout["per_class_pq"]) == set(spec.class_names)
    assert "pq_things" in heldout
    assert spec.training["grouping"]["threshold"] == pytest.approx(0.2)
    assert spec.training["grouping"]["nms_kernel"] == 5
    if hasattr(spec, "instances"):  # the grouping inference will use
        assert spec.instances.threshold == pytest.approx(0.2) and spec.instances.nms_kernel == 5
