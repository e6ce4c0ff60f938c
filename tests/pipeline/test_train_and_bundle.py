"""segpipe train (synthetic and GeoTIFF data) and model bundles (state dict, TorchScript)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from pipeline.bundle import ModelFormat, load_bundle, save_bundle
from pipeline.inference.predictor import TilePredictor
from pipeline.training import TrainConfig, load_train_config, train_bundle
from segcore.errors import ConfigError, ModelError

TINY = {"base_channels": 4, "depth": 2}


def test_training_on_synthetic_scenes_writes_a_runnable_bundle(tmp_path):
    cfg = TrainConfig(
        name="t", params=TINY, steps=4, batch_size=2, crop=64, threads=1,
        data={"kind": "synthetic-satellite", "scenes": 2, "size": 128, "heldout_scenes": 1,
              "heldout_size": 128},
    )
    losses = []
    train_bundle(cfg, tmp_path / "b", on_step=lambda s, loss: losses.append(loss))
    assert len(losses) == 4 and all(np.isfinite(losses))
    loaded = load_bundle(tmp_path / "b")
    assert loaded.spec.receptive_field == loaded.build().receptive_field
    assert 0.0 <= loaded.spec.training["heldout"]["miou"] <= 1.0
    assert loaded.spec.class_names == ["background", "vegetation", "water", "road", "building"]
    labels = TilePredictor(loaded).predict([np.zeros((3, 40, 40), np.uint8)],
                                           [np.ones((40, 40), bool)], nodata=255)
    assert labels[0].semantic.shape == (40, 40) and labels[0].semantic.max() < 5
    assert labels[0].offsets is None and labels[0].centres is None


def test_training_on_geotiff_pairs(scene_factory, tmp_path):
    pairs = [dict(zip(("image", "labels"), map(str, scene_factory(f"tr{i}", size=(128, 128), seed=i))))
             for i in range(2)]
    classes = [{"id": i, "name": n} for i, n in enumerate(["bg", "veg", "water", "road", "bldg"])]
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({
        "name": "user", "params": TINY, "steps": 3, "batch_size": 2, "crop": 64, "threads": 1,
        "data": {"kind": "geotiff", "train": pairs[:1], "heldout": pairs[1:], "classes": classes},
    }))
    bundle = train_bundle(load_train_config(config), tmp_path / "b")
    assert bundle.spec.class_names == ["bg", "veg", "water", "road", "bldg"]
    assert bundle.spec.training["heldout"]["scenes"] == 1


def test_train_config_errors_name_the_field(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("name: x\nsteps: -1\ndata: {kind: synthetic-satellite}\n")
    with pytest.raises(ConfigError, match="steps"):
        load_train_config(config)


def test_bundle_errors_are_one_clear_line(tmp_path, tiny_bundle):
    with pytest.raises(ModelError, match="did you mean 'demo-satellite'"):
        load_bundle("demo-satelite")
    bad = tmp_path / "bad"
    bad.mkdir()
    raw = yaml.safe_load((tiny_bundle.path / "model.yaml").read_text())
    (bad / "model.yaml").write_text(yaml.safe_dump({**raw, "classes": []}))
    with pytest.raises(ModelError, match="classes"):
        load_bundle(bad)
    (bad / "model.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ModelError, match="weights file"):
        load_bundle(bad)
    (bad / raw["weights"]).write_bytes(b"not safetensors")
    with pytest.raises(ModelError, match="cannot load"):
        load_bundle(bad).build()


def test_torchscript_bundle_matches_state_dict_bundle(tmp_path, tiny_bundle):
    net = tiny_bundle.build()
    scripted = torch.jit.script(net)
    ts_dir = tmp_path / "ts"
    spec = tiny_bundle.spec.model_copy(update={"format": ModelFormat.TORCHSCRIPT,
                                               "weights": "model.ts", "architecture": None})
    save_bundle(ts_dir, spec.model_copy(update={"weights": "unused.safetensors"}), {})
    torch.jit.save(scripted, str(ts_dir / "model.ts"))
    raw = yaml.safe_load((ts_dir / "model.yaml").read_text())
    (ts_dir / "model.yaml").write_text(yaml.safe_dump({**raw, "weights": "model.ts"}))
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (3, 64, 48), dtype=np.uint8)
    valid = np.ones((64, 48), bool)
    valid[:5] = False
    a = TilePredictor(tiny_bundle).predict([image], [valid], nodata=255)[0].semantic
    b = TilePredictor(load_bundle(ts_dir)).predict([image], [valid], nodata=255)[0].semantic
    np.testing.assert_array_equal(a, b)
    assert (a[:5] == 255).all()
