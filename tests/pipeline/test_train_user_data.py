"""`segpipe train` on user data: NIfTI image + label volumes and Zarr stores."""

from __future__ import annotations

import numpy as np
import zarr

from pipeline.synthdata.phantoms import write_phantom
from pipeline.training import TrainConfig, train_bundle

CLASSES = [{"id": 0, "name": "background"}, {"id": 1, "name": "organ"},
           {"id": 2, "name": "lesion", "isthing": True}]


def test_trains_a_3d_bundle_from_nifti_pairs(tmp_path):
    pairs = []
    for i, axcodes in enumerate(("LPS", "RAS")):
        image, labels = tmp_path / f"im{i}.nii.gz", tmp_path / f"lab{i}.nii.gz"
        write_phantom(image, shape=(32, 32, 32), spacing=(3.0, 3.0, 3.0), seed=i,
                      axcodes=axcodes, labels=labels)
        pairs.append({"image": str(image), "labels": str(labels)})
    losses = []
    cfg = TrainConfig.model_validate({
        "name": "nifti-tiny", "architecture": "unet3d",
        "params": {"base_channels": 4, "depth": 2},
        "data": {"kind": "nifti", "train": pairs[:1], "heldout": pairs[1:], "classes": CLASSES},
        "steps": 6, "batch_size": 2, "crop": 16, "threads": 1, "tile": 32, "lr": 0.01,
    })
    bundle = train_bundle(cfg, tmp_path / "bundle", on_step=lambda s, v: losses.append(v))
    spec = bundle.spec
    assert spec.ndim == 3 and spec.spacing == [3.0, 3.0, 3.0]
    assert set(spec.input.value_scale.values()) == {1.0}  # physical intensities
    assert np.mean(losses[-2:]) < np.mean(losses[:2])
    assert "miou" in spec.training["heldout"]


def test_trains_a_2d_bundle_from_zarr_stores(tmp_path):
    rng = np.random.default_rng(0)
    stores = []
    for i in range(2):
        group = zarr.open_group(str(tmp_path / f"s{i}.zarr"), mode="w", zarr_format=3)
        labels = np.zeros((64, 64), np.uint8)
        labels[16:48, 16:48] = 1
        image = np.where(labels[None] == 1, 200, 40).astype(np.uint8)
        image = np.repeat(image, 3, axis=0) + rng.integers(0, 20, (3, 64, 64), dtype=np.uint8)
        group.create_array("image", data=image)
        group.create_array("labels", data=labels)
        stores.append(str(tmp_path / f"s{i}.zarr"))
    cfg = TrainConfig.model_validate({
        "name": "zarr-tiny", "params": {"base_channels": 4, "depth": 2},
        "data": {"kind": "zarr", "train": stores[:1], "heldout": stores[1:],
                 "classes": [{"id": 0, "name": "ground"}, {"id": 1, "name": "square"}]},
        "steps": 10, "batch_size": 2, "crop": 32, "threads": 1, "tile": 64, "lr": 0.01,
    })
    bundle = train_bundle(cfg, tmp_path / "bundle")
    assert bundle.spec.ndim == 2 and bundle.spec.input.channels == 3
    assert bundle.spec.class_names == ["ground", "square"]
