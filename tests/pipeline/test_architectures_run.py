"""Bundles of the DeepLab-ASPP, ViT and query-mask architectures run through ``run_scene``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch

from pipeline.bundle import ClassSpec, InputSpec, ModelSpec, load_bundle, save_bundle
from pipeline.options import RunOptions
from pipeline.run import Workspace, run_scene
from pipeline.formats import Scene
from segcore.models.factory import build_model
from segcore.synthetic.satellite import SATELLITE_CLASSES

N_CLASSES = len(SATELLITE_CLASSES)

PARAMS = {
    "deeplab": {"in_channels": 3, "num_classes": N_CLASSES, "base_channels": 4, "stride": 8,
                "dilations": [2, 4, 6], "aspp_mode": "parallel"},
    "vit": {"in_channels": 3, "num_classes": N_CLASSES, "patch": 8, "dim": 32, "depth": 2,
            "heads": 4},
    "queries": {"in_channels": 3, "num_classes": N_CLASSES, "queries": 8, "dim": 16},
}


def _save(directory, architecture: str):
    torch.manual_seed(0)
    net = build_model(architecture, **PARAMS[architecture]).eval()
    # ViT and query models are global (receptive_field == 0): leave it unset so the
    # pipeline uses its default halo; DeepLab's analytic value sizes the halo.
    rf = int(net.receptive_field) or None
    spec = ModelSpec(
        name=f"tiny-{architecture}", architecture=architecture, params=PARAMS[architecture],
        weights="model.safetensors",
        input=InputSpec(channels=3, mean=[0.5] * 3, std=[0.25] * 3),
        classes=[ClassSpec(id=c.id, name=c.name, isthing=c.isthing, color=c.color)
                 for c in SATELLITE_CLASSES],
        tile=128, receptive_field=rf, stride=int(net.stride),
    )
    return save_bundle(directory, spec, net.state_dict())


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    return {name: _save(tmp_path_factory.mktemp(f"bundle-{name}"), name) for name in PARAMS}


@pytest.mark.parametrize("architecture", list(PARAMS))
def test_architecture_runs_through_pipeline(architecture, bundles, ray_session, scene_factory,
                                            tmp_path):
    from pipeline.inference.pool import PoolConfig, WorkerPool

    bundle = load_bundle(str(bundles[architecture].path))
    assert bundle.spec.architecture == architecture
    image, _ = scene_factory("architectures", size=(256, 256))
    scene = Scene(image, image.name.removesuffix(".tif"), "geotiff")
    ws = Workspace(scene, tmp_path, None)
    pool = WorkerPool(str(bundle.path), PoolConfig(workers=1, batch_size=4))
    try:
        report = run_scene(ws, bundle, RunOptions(tile=128), pool).report.to_json()
    finally:
        pool.shutdown()
    assert json.loads((ws.final / "report.json").read_text()) == report
    assert report["tiles"]["total"] == 4
    # DeepLab: halo_for(155, 8) = 80 from its receptive field; global models: tile // 4
    assert report["tiles"]["halo"] == {"deeplab": 80}.get(architecture, 32)
    with rasterio.open(ws.final / "semantic.tif") as dst:
        semantic = dst.read(1)
        nodata = dst.nodata
    assert semantic.shape == (256, 256)
    valid = semantic != nodata
    assert valid.all()
    assert np.isin(semantic[valid], np.arange(N_CLASSES)).all()
