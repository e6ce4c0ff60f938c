"""Open-vocabulary bundles: zero-shot held-out IoU, re-prompted pipeline runs, --prompts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine
from typer.testing import CliRunner

from pipeline.bundle import load_bundle
from pipeline.options import RunOptions
from pipeline.prompts import bundle_with_prompts
from pipeline.training.openvocab import HELD_OUT
from pipeline.run import Workspace, run_scene
from pipeline.formats import Scene
from segcore.errors import ConfigError
from segcore.openvocab import attribute_scene


@pytest.fixture(scope="module")
def openvocab_bundle():
    """The bundled demo-openvocab model (``make model-openvocab``): 'blue striped' never seen.

    Training itself runs in tests/pipeline/test_train_data_kinds.py (a few steps, the
    CLI and the direct call giving the same weights)."""
    return load_bundle("demo-openvocab")


def test_heldout_class_is_segmented_zero_shot_above_chance(openvocab_bundle):
    """The held-out figures the bundle records, measured again on the held-out scenes of
    its training config."""
    from pipeline.training.openvocab import openvocab_config
    from pipeline.training.scenes import Normalisation

    spec = openvocab_bundle.spec
    training = spec.training
    assert HELD_OUT not in training["train_prompts"]
    assert HELD_OUT in spec.class_names and training["held_out"] == HELD_OUT
    data = openvocab_config(seed=training["seed"], steps=training["steps"]).data
    scenes = data.load(heldout=True, instances=False)
    norm = Normalisation(mean=spec.input.mean, std=spec.input.std,
                         scale=spec.input.value_scale[str(scenes.images[0].dtype)])
    net = openvocab_bundle.build()
    fig = data.heldout_figures(net, scenes, norm, classes=spec.classes, grouping=None)
    chance = max(fig["chance_constant"], fig["chance_random"])
    assert fig["heldout_iou"] > 1.5 * chance, fig
    recorded = training["heldout"]
    assert fig["heldout_share"] == recorded["heldout_share"]  # the same scenes
    assert abs(fig["heldout_iou"] - recorded["heldout_iou"]) < 1e-3, (fig, recorded)
    assert net.prompts == spec.prompts


def _write_scene(path, image):
    profile = {"driver": "GTiff", "width": image.shape[2], "height": image.shape[1],
               "count": 3, "dtype": "uint8", "crs": "EPSG:32633", "tiled": True,
               "blockxsize": 128, "blockysize": 128,
               "transform": Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5200000.0)}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(image)


def test_run_with_prompts_reports_the_prompts_as_classes(openvocab_bundle, ray_session, tmp_path):
    from pipeline.inference.pool import PoolConfig, WorkerPool

    prompts = ["green dotted", HELD_OUT, "red smooth"]  # another order, one unseen prompt
    image, truth = attribute_scene(11, 300, prompts, cells=10)
    path = tmp_path / "attrs.tif"
    _write_scene(path, image)
    bundle = bundle_with_prompts(openvocab_bundle, prompts, tmp_path / ".prompts")
    assert bundle.spec.class_names == prompts and bundle.spec.prompts == prompts
    assert bundle_with_prompts(openvocab_bundle, prompts, tmp_path / ".prompts").path == bundle.path
    pool = WorkerPool(str(bundle.path), PoolConfig(workers=1, batch_size=4))
    try:
        ws = Workspace(Scene(path, "attrs", "geotiff"), tmp_path / "out", None)
        report = run_scene(ws, bundle, RunOptions(tile=128, prompts=prompts), pool).report.to_json()
    finally:
        pool.shutdown()
    assert list(report["summary"]["classes"]) == prompts
    assert json.loads((ws.final / "report.json").read_text())["summary"] == report["summary"]
    with rasterio.open(ws.final / "semantic.tif") as src:
        pred = src.read(1)
    assert (pred == truth).mean() > 0.7  # the unseen order and prompt are segmented


def test_prompts_on_a_closed_vocabulary_bundle_are_refused(tiny_bundle, tmp_path):
    with pytest.raises(ConfigError, match="not an open-vocabulary model"):
        bundle_with_prompts(tiny_bundle, ["water", "road"], tmp_path)
    from flows.cli import app

    image = tmp_path / "x.tif"
    _write_scene(image, np.zeros((3, 32, 32), np.uint8))
    result = CliRunner().invoke(app, ["run", str(image), "--model", str(tiny_bundle.path),
                                      "--out", str(tmp_path / "o"), "--prompts", "water,road"])
    assert result.exit_code == 2, result.output
    assert "not an open-vocabulary model" in result.output
    bad = CliRunner().invoke(app, ["run", str(image), "--model", str(tiny_bundle.path),
                                   "--out", str(tmp_path / "o"), "--prompts", "water,,road"])
    assert bad.exit_code == 2 and "--prompts" in bad.output


def test_cli_run_with_prompts(openvocab_bundle, ray_session, prefect_harness, tmp_path):
    from flows.cli import app

    prompts = ["red striped", "blue smooth"]
    image, _ = attribute_scene(5, 160, prompts, cells=6)
    path = tmp_path / "cli.tif"
    _write_scene(path, image)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(path), "--model", str(openvocab_bundle.path),
                                      "--out", str(out), "--prompts", " red striped, blue smooth",
                                      "--workers", "1", "--tile", "128"])
    assert result.exit_code == 0, result.output
    report = json.loads(next(out.glob("*/report.json")).read_text())
    assert list(report["summary"]["classes"]) == prompts
    (copy,) = (out / ".prompts").iterdir()  # the run-specific bundle the actors loaded
    assert load_bundle(copy).spec.prompts == prompts
