"""segpipe train on 3-D phantoms (unet3d) and the bundled demo-medical model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.bundle import BUNDLED_DIR, load_bundle
from pipeline.training import TrainConfig, train_bundle
from pipeline.training.data import PhantomData
from pipeline.training.evaluate import evaluate
from pipeline.training.scenes import Volumes
from segcore.synthetic.phantom import LESION

TINY = dict(
    name="med", architecture="unet3d",
    params={"base_channels": 4, "depth": 2, "convs_per_level": 1, "instance_head": True},
    data={"kind": "synthetic-phantom", "volumes": 2, "shape": [32, 32, 32],
          "spacing": [6.0, 5.0, 5.0], "lesion_radius_mm": [8.0, 14.0], "heldout_volumes": 1,
          "heldout_shape": [28, 32, 36]},
    steps=12, batch_size=2, crop=16, lr=0.01, center_sigma=1.0, threads=1, tile=32,
    grouping={"threshold": 0.2, "nms_kernel": 3},
)


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    losses: list[float] = []
    out = tmp_path_factory.mktemp("medical") / "b"
    train_bundle(TrainConfig(**TINY), out, on_step=lambda s, loss: losses.append(loss))
    return load_bundle(out), losses


def test_volume_crops_are_3d_and_augmented_identically():
    data = PhantomData(volumes=1, shape=(32, 32, 32), spacing=(6.0, 6.0, 6.0), lesion_crops=1.0)
    vols = data.load(heldout=False, instances=True)
    assert isinstance(vols, Volumes) and vols.images[0].shape == (1, 32, 32, 32)
    xs, ys, zs = vols.instance_crops(np.random.default_rng(0), 6, 16)
    assert xs.shape == (6, 1, 16, 16, 16) and ys.shape == zs.shape == (6, 16, 16, 16)
    assert np.array_equal(zs > 0, ys == LESION)  # labels and instances flipped together
    assert all((y == LESION).any() for y in ys)  # lesion_crops=1: every crop holds a lesion
    xa, ya = vols.crops(np.random.default_rng(0), 6, 16)
    assert np.array_equal(xa, xs) and np.array_equal(ya, ys)


def test_heldout_shape_defaults_to_the_training_shape():
    data = PhantomData(shape=(32, 40, 48))
    assert data.phantom_spec(1, heldout=True).shape == (32, 40, 48)
    assert PhantomData(heldout_shape=(16, 16, 16)).phantom_spec(1, heldout=True).shape == (16, 16, 16)


def test_phantom_data_needs_a_3d_architecture(tmp_path):
    from segcore.errors import ConfigError

    cfg = TrainConfig(**{**TINY, "architecture": "unet2d", "steps": 1})
    with pytest.raises(ConfigError, match="unet3d"):
        train_bundle(cfg, tmp_path / "b")


def test_training_writes_a_3d_bundle(tiny_bundle):
    bundle, losses = tiny_bundle
    assert len(losses) == 12 and all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < np.mean(losses[:3])  # the loss falls
    spec = bundle.spec
    assert spec.ndim == 3 and spec.architecture == "unet3d"
    assert spec.spacing == [6.0, 5.0, 5.0]
    assert set(spec.input.value_scale.values()) == {1.0}
    assert {"int16", "uint16", "float32", "uint8"} <= set(spec.input.value_scale)
    assert spec.input.channels == 1 and spec.input.mean[0] > 50  # raw units, not scaled
    assert spec.class_names == ["background", "organ", "lesion"]
    assert spec.heads == ["semantic", "instance"] and spec.stride == 4
    assert spec.receptive_field == bundle.build().receptive_field
    assert spec.instances.threshold == pytest.approx(0.2) and spec.instances.nms_kernel == 3
    heldout = spec.training["heldout"]
    for key in ("organ_dice", "lesion_pq", "miou", "pq_things"):
        assert key in heldout
    assert 0.0 <= heldout["organ_dice"] <= 1.0
    assert heldout["organ_dice"] == heldout["per_class"]["organ"]["dice"]
    out = bundle.build()(torch.zeros(1, 1, 8, 8, 8))
    assert out["offset"].shape == (1, 3, 8, 8, 8)


DEMO = BUNDLED_DIR / "demo-medical"


@pytest.mark.skipif(not (DEMO / "model.yaml").is_file(), reason="demo-medical bundle not built")
def test_bundled_demo_medical_meets_its_targets():
    bundle = load_bundle("demo-medical")
    spec = bundle.spec
    assert spec.ndim == 3 and spec.spacing == [2.0, 2.0, 2.0]
    assert set(spec.input.value_scale.values()) == {1.0}
    assert spec.tile % spec.stride == 0
    heldout = spec.training["heldout"]
    assert heldout["organ_dice"] >= 0.85 and heldout["lesion_pq"] >= 0.70
    # re-evaluate on one held-out phantom of the training config
    cfg = TrainConfig.model_validate(spec.training["config"])
    data = cfg.data.model_copy(update={"heldout_volumes": 1})
    vols = data.load(heldout=True, instances=True)
    torch.set_num_threads(2)
    again = evaluate(bundle.build(), vols, spec.input.mean, spec.input.std, 1.0,
                     spec.class_names, classes=spec.classes, grouping=cfg.grouping)
    assert again["per_class"]["organ"]["dice"] >= 0.85
