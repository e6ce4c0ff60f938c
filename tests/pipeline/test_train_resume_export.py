"""`segpipe train`: checkpoints and resume give bit-identical weights; TorchScript and
torch.export bundles run in the pipeline and agree with the state-dict bundle."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch

from pipeline.bundle import ModelFormat, load_bundle
from pipeline.options import RunOptions
from pipeline.run import Workspace, run_scene
from pipeline.formats import Scene
from pipeline.training import TrainConfig, train_bundle
from pipeline.training.checkpoints import checkpoint_path

BASE = {
    "name": "tiny-train", "architecture": "unet2d",
    "params": {"base_channels": 4, "depth": 2},
    "data": {"kind": "synthetic-satellite", "scenes": 1, "size": 128, "heldout_scenes": 1,
             "heldout_size": 128},
    "steps": 8, "batch_size": 2, "crop": 64, "threads": 1, "tile": 128, "checkpoint_every": 3,
}


def _weights(bundle) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(bundle.weights_path))


def test_interrupted_training_resumes_to_identical_weights(tmp_path):
    cfg = TrainConfig.model_validate(BASE)
    straight = train_bundle(cfg, tmp_path / "straight")
    out = tmp_path / "resumed"
    assert train_bundle(cfg, out, stop_after=5) is None  # "killed" after step 5
    assert checkpoint_path(out).is_file() and not out.exists()
    resumed = train_bundle(cfg, out, resume=True)
    assert not checkpoint_path(out).exists()
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_resume_refuses_a_checkpoint_of_another_config(tmp_path):
    from segcore.errors import ConfigError

    out = tmp_path / "b"
    train_bundle(TrainConfig.model_validate(BASE), out, stop_after=2)
    other = TrainConfig.model_validate({**BASE, "lr": 0.01})
    with pytest.raises(ConfigError, match="different training config"):
        train_bundle(other, out, resume=True)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    bundles = {}
    for fmt in ("state_dict", "torchscript", "export"):
        cfg = TrainConfig.model_validate({**BASE, "steps": 2, "export": fmt})
        bundles[fmt] = train_bundle(cfg, root / fmt)
    return bundles


def test_export_bundles_load_and_record_the_measured_receptive_field(exported):
    for fmt, bundle in exported.items():
        loaded = load_bundle(bundle.path)
        assert loaded.spec.format is ModelFormat(fmt)
        assert loaded.spec.receptive_field == exported["state_dict"].spec.receptive_field
    x = torch.randn(1, 3, 96, 64)
    ref = load_bundle(exported["state_dict"].path).build()(x)
    for fmt in ("torchscript", "export"):
        out = load_bundle(exported[fmt].path).build()(x)
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fmt", ["torchscript", "export"])
def test_exported_bundle_runs_in_the_pipeline_like_the_state_dict(fmt, exported, scene_factory,
                                                                  ray_session, tmp_path):
    from pipeline.inference.pool import PoolConfig, WorkerPool

    image, _ = scene_factory("export-run", size=(256, 192))
    results = {}
    for name in ("state_dict", fmt):
        pool = WorkerPool(str(exported[name].path), PoolConfig(workers=1, batch_size=2))
        try:
            ws = Workspace(Scene(image, "export-run", "geotiff"), tmp_path / name)
            run_scene(ws, exported[name], RunOptions(tile=128), pool).report.to_json()
        finally:
            pool.shutdown()
        with rasterio.open(ws.final / "semantic.tif") as src:
            results[name] = src.read(1)
    agree = float(np.mean(results["state_dict"] == results[fmt]))
    assert agree >= 0.9999, agree


def test_torchscript_bundle_without_a_declared_receptive_field_gets_the_measured_halo(
        exported, tmp_path):
    import shutil

    from pipeline.bundle import write_spec
    from pipeline.run.plan import plan_tiles, receptive_field_of

    src = exported["torchscript"]
    copy = tmp_path / "ts-no-rf"
    shutil.copytree(src.path, copy)
    bundle = write_spec(copy, src.spec.model_copy(update={"receptive_field": None}))
    assert receptive_field_of(bundle) == exported["state_dict"].spec.receptive_field
    plan = plan_tiles((512, 512), bundle, RunOptions(tile=128))
    reference = plan_tiles((512, 512), exported["state_dict"], RunOptions(tile=128))
    assert plan.halo == reference.halo > 0


def test_focal_boundary_and_edge_head_terms_train(tmp_path):
    losses = []
    cfg = TrainConfig.model_validate({**BASE, "steps": 12, "focal_weight": 1.0,
                                      "boundary_weight": 1.0, "edge_weight": 0.5,
                                      "checkpoint_every": 0})
    bundle = train_bundle(cfg, tmp_path / "extra", on_step=lambda s, v: losses.append(v))
    assert all(np.isfinite(losses)) and np.mean(losses[-3:]) < np.mean(losses[:3])
    # the auxiliary edge head shapes training only: the bundle holds the plain network
    assert not any(k.startswith("1.") for k in _weights(bundle))
    plain = train_bundle(TrainConfig.model_validate({**BASE, "steps": 12,
                                                     "checkpoint_every": 0}), tmp_path / "p")
    assert _weights(plain).keys() == _weights(bundle).keys()


def test_point_supervision_trains_from_clicks(tmp_path):
    from pipeline.training.points import sample_points

    labels = np.zeros((1, 8, 8), np.int64)
    labels[0, :4, :4] = 1
    labels[0, 6:, 6:] = 255  # unlabelled: never clicked
    points = sample_points(labels, np.random.default_rng(0), per_region=2)
    assert sorted({(c) for _, c, _ in points}) == [0, 1] and len(points) == 4
    assert all(labels[0][p] == c for _, c, p in points)
    losses = []
    cfg = TrainConfig.model_validate({
        **BASE, "steps": 20, "lr": 0.01, "checkpoint_every": 0,
        "point_supervision": {"radius": 3, "per_region": 2, "smoothness_weight": 0.1}})
    bundle = train_bundle(cfg, tmp_path / "points", on_step=lambda s, v: losses.append(v))
    assert np.mean(losses[-4:]) < np.mean(losses[:4])
    assert bundle.spec.training["config"]["point_supervision"]["radius"] == 3


def test_vit_training_reports_attention_error_correlation(tmp_path):
    cfg = TrainConfig.model_validate({
        **BASE, "name": "vit-tiny", "architecture": "vit",
        "params": {"patch": 8, "dim": 16, "depth": 1, "heads": 2},
        "steps": 10, "checkpoint_every": 0})
    bundle = train_bundle(cfg, tmp_path / "vit")
    report = bundle.spec.training["heldout"]["attention"]
    assert report["windows"] >= 1
    assert -1.0 <= report["correlation_mean"] <= 1.0
    assert bundle.spec.receptive_field is None  # global: the pipeline uses its default halo


@pytest.mark.parametrize(("architecture", "params"), [
    ("deeplab", {"base_channels": 4, "stride": 8, "dilations": [2, 4, 6]}),
    ("deeplab", {"base_channels": 4, "stride": 8, "dilations": [2, 4], "aspp_mode": "cascade"}),
    ("vit", {"patch": 8, "dim": 16, "depth": 1, "heads": 2}),
    ("queries", {"queries": 8, "dim": 16}),
])
def test_segpipe_train_trains_every_architecture(architecture, params, tmp_path):
    losses = []
    cfg = TrainConfig.model_validate({**BASE, "name": architecture, "architecture": architecture,
                                      "params": params, "steps": 16, "lr": 0.005,
                                      "checkpoint_every": 0})
    bundle = train_bundle(cfg, tmp_path / architecture, on_step=lambda s, v: losses.append(v))
    assert np.mean(losses[-4:]) < np.mean(losses[:4]), losses
    net = load_bundle(bundle.path).build()
    out = net(torch.zeros(1, 3, 64, 64))
    logits = out["semantic"] if isinstance(out, dict) else out
    assert logits.shape == (1, 5, 64, 64)
