"""Training data kinds load themselves; configs fail with one line naming the field;
open-vocabulary training through a training config (``segpipe train``)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
import zarr

from pipeline.bundle import InstanceSpec, load_bundle
from pipeline.training import TrainConfig, load_train_config, train_bundle
from pipeline.training.checkpoints import checkpoint_path
from pipeline.training.data import DATA_KINDS, AttributeData, DataKind
from pipeline.training.openvocab import openvocab_config, train_openvocab
from pipeline.training.scenes import Scenes, Volumes
from pipeline.training.steps import (
    instance_step,
    point_step,
    prompt_step,
    semantic_step,
    set_step,
    supervision,
)
from segcore.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
MED = [{"id": 0, "name": "background"}, {"id": 1, "name": "organ"},
       {"id": 2, "name": "lesion", "isthing": True}]


def _geotiff(root: Path) -> dict:
    from pipeline.synthdata.satellite import write_scene
    from segcore.synthetic.satellite import SatelliteSceneSpec

    pairs = []
    for i in range(2):
        image, labels = root / f"g{i}.tif", root / f"g{i}_labels.tif"
        write_scene(image, spec=SatelliteSceneSpec(seed=i, height=64, width=80, bands=4),
                    label_path=labels)
        pairs.append({"image": str(image), "labels": str(labels)})
    return {"kind": "geotiff", "train": pairs[:1], "heldout": pairs[1:], "bands": [3, 2, 1],
            "classes": [{"id": i, "name": f"c{i}"} for i in range(5)]}


def _nifti(root: Path) -> dict:
    from pipeline.synthdata.phantoms import write_phantom

    image, labels = root / "v.nii.gz", root / "v_labels.nii.gz"
    write_phantom(image, shape=(16, 20, 24), spacing=(3.0, 2.0, 1.5), labels=labels)
    pair = {"image": str(image), "labels": str(labels)}
    return {"kind": "nifti", "train": [pair], "heldout": [pair], "classes": MED}


def _zarr(root: Path) -> dict:
    path = root / "s.zarr"
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    labels = np.zeros((32, 48), np.uint8)
    labels[8:20, 8:30] = 1
    labels[0] = 255  # unlabelled
    group.create_array("image", data=np.stack([labels * 100, labels * 50]).astype(np.uint16))
    group.create_array("labels", data=labels)
    group.create_array("instances", data=(labels == 1).astype(np.uint16) * 7)
    return {"kind": "zarr", "train": [str(path)], "heldout": [str(path)],
            "classes": [{"id": 0, "name": "ground"}, {"id": 1, "name": "square", "isthing": True}]}


# kind -> (data config, image shape, class names, spacing, physical units, bands, instances)
KINDS = {
    "synthetic-satellite": (lambda root: {"kind": "synthetic-satellite", "scenes": 1, "size": 64,
                                          "heldout_scenes": 1, "heldout_size": 64},
                            (3, 64, 64), ["background", "vegetation", "water", "road", "building"],
                            (), False, None, True),
    "synthetic-phantom": (lambda root: {"kind": "synthetic-phantom", "volumes": 1,
                                        "shape": [16, 16, 16], "spacing": [4.0, 3.0, 3.0]},
                          (1, 16, 16, 16), ["background", "organ", "lesion"], (4.0, 3.0, 3.0),
                          True, None, True),
    "geotiff": (_geotiff, (3, 64, 80), [f"c{i}" for i in range(5)], (), False, [3, 2, 1], True),
    "nifti": (_nifti, (1, 16, 20, 24), ["background", "organ", "lesion"], (3.0, 2.0, 1.5), True,
              None, True),
    "zarr": (_zarr, (2, 32, 48), ["ground", "square"], (), False, None, True),
    "synthetic-attributes": (lambda root: {"kind": "synthetic-attributes", "heldout_scenes": 2,
                                           "heldout_size": 32},
                             (3, 32, 32), None, (), False, None, False),
}


def test_every_data_kind_is_covered():
    assert sorted(KINDS) == sorted(k.model_fields["kind"].default for k in DATA_KINDS)
    assert all(issubclass(k, DataKind) for k in DATA_KINDS)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_data_kind_loads_itself(kind, tmp_path):
    make, shape, names, spacing, physical, bands, has_instances = KINDS[kind]
    cfg = TrainConfig.model_validate({
        "name": kind, "data": make(tmp_path),
        "architecture": "openvocab2d" if kind == "synthetic-attributes" else "unet2d"})
    data = cfg.data
    assert data.kind == kind and isinstance(data, DataKind)
    held = data.load(heldout=True, instances=has_instances)
    assert isinstance(held, Volumes) == (len(shape) == 4)
    assert held.images[0].shape == shape and held.labels[0].shape == shape[1:]
    assert held.labels[0].dtype == np.int64 and held.channels == shape[0]
    assert held.spacing == spacing
    assert data.physical_units is physical and data.input_bands == bands
    table = data.class_table()
    assert [c.id for c in table] == list(range(len(table)))
    if names is not None:
        assert [c.name for c in table] == names and data.vocabulary is None
        assert set(np.unique(np.concatenate([lab.ravel() for lab in held.labels]))) <= {
            *range(len(names)), 255}
    if has_instances:
        assert held.instances[0].shape == shape[1:]
        assert (held.instances[0][held.labels[0] == 255] == 0).all()
    else:
        with pytest.raises(ConfigError, match="instance"):
            data.load(heldout=False, instances=True)


def test_zarr_labels_map_unlabelled_to_ignore(tmp_path):
    data = TrainConfig.model_validate({"name": "z", "data": _zarr(tmp_path)}).data
    scenes = data.load(heldout=False, instances=True)
    assert (scenes.labels[0][0] == 255).all() and scenes.labels[0][10, 10] == 1
    assert scenes.normalisation().scale == pytest.approx(1 / 65535)


def test_attribute_data_stream_renders_fresh_training_scenes():
    data = AttributeData(prompts=["red smooth", "green dotted", "blue striped"],
                         held_out="green dotted")
    stream = data.load(heldout=False)
    assert stream.vocabulary == ["red smooth", "blue striped"] == data.train_prompts
    assert data.vocabulary == [c.name for c in data.class_table()]
    xs, ys = stream.crops(np.random.default_rng(0), 3, 24)
    assert xs.shape == (3, 3, 24, 24) and xs.dtype == np.float32 and 0 <= xs.min() <= xs.max() <= 1
    assert set(np.unique(ys)) <= {0, 1}  # labels index the training prompts
    again, _ = stream.crops(np.random.default_rng(0), 3, 24)
    assert np.array_equal(xs, again) and not np.array_equal(xs[0], xs[1])
    norm = stream.normalisation()
    assert (norm.mean, norm.std, norm.scale) == ([0.5] * 3, [0.25] * 3, 1.0)


@pytest.mark.parametrize(("change", "step"), [
    ({}, semantic_step),
    ({"params": {"base_channels": 4, "depth": 2, "instance_head": True}}, instance_step),
    ({"architecture": "queries", "params": {"queries": 4, "dim": 8}}, set_step),
    ({"point_supervision": {"radius": 2}}, point_step),
    ({"architecture": "openvocab2d", "params": {"dim": 8, "width": 8},
      "data": {"kind": "synthetic-attributes"}}, prompt_step),
])
def test_one_step_function_per_supervision_kind(change, step):
    from pipeline.training.networks import build_network

    raw = {"name": "s", "params": {"base_channels": 4, "depth": 2},
           "data": {"kind": "synthetic-satellite", "size": 64}, **change}
    cfg = TrainConfig.model_validate(raw)
    net, _ = build_network(cfg.architecture, channels=3, num_classes=5, params=cfg.params)
    source = cfg.data.load(heldout=False) if cfg.data.vocabulary else Scenes(
        [np.zeros((3, 8, 8), np.uint8)], [np.zeros((8, 8), np.int64)], 255)
    assert supervision(cfg, net, source) is step


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "train.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("text", "field"), [
    ("data: {kind: synthetic-satelite}",
     r"data\.kind: expected one of .*did you mean 'synthetic-satellite'"),
    ("data: {scenes: 2}", r"data\.kind: missing"),
    ("data: {kind: synthetic-satellite, scenes: 0}", r"data\.scenes: "),
    ("data: {kind: geotiff, train: [], heldout: []}", r"data\.classes: "),
    ("data: {kind: synthetic-satellite}\ngrouping: {threshold: -1}", r"grouping\.threshold: "),
    ("data: {kind: synthetic-satellite}\ngrouping: {nms: 3}",
     r"grouping\.nms: unknown setting; expected some of \[.threshold., .nms_kernel., .top_k.\]"),
    ("data: {kind: synthetic-satellite, scene: 3}", r"data\.scene: .*did you mean .scenes."),
    ("data: {kind: synthetic-attributes, held_out: pink dotted}\narchitecture: openvocab2d",
     r"data\.held_out: expected one of the prompts"),
    ("data: {kind: synthetic-attributes, prompts: [red smooth, red fuzzy]}\narchitecture: openvocab2d",
     r"data\.prompts: expected '<colour> <texture>'"),
    ("data: {kind: synthetic-attributes}", r"architecture: data\.kind 'synthetic-attributes'"),
    ("data: {kind: synthetic-satellite}\narchitecture: openvocab2d", r"data\.kind: architecture"),
    ("data: {kind: synthetic-attributes}\narchitecture: openvocab2d\nfocal_weight: 1",
     r"focal_weight: open-vocabulary training"),
    ("data: {kind: synthetic-satellite}\nwarmup: 1.5", r"warmup: "),
])
def test_bad_configs_give_one_line_naming_the_field(text, field, tmp_path):
    path = _write(tmp_path, f"name: x\n{text}\n")
    with pytest.raises(ConfigError, match=rf"^--config {re.escape(str(path))}: ({field})") as info:
        load_train_config(path)
    assert "\n" not in str(info.value)


def test_grouping_is_the_bundle_instance_spec_and_old_dumps_are_unchanged(tmp_path):
    cfg = load_train_config(_write(tmp_path, "name: x\ndata: {kind: synthetic-satellite}\n"
                                             "grouping: {threshold: 0.3}\n"))
    assert isinstance(cfg.grouping, InstanceSpec)
    assert cfg.grouping == InstanceSpec(threshold=0.3) and cfg.grouping.nms_kernel == 7
    dump = cfg.model_dump(mode="json")  # what bundles record and checkpoints digest
    assert "warmup" not in dump and dump["grouping"] == {"threshold": 0.3, "nms_kernel": 7,
                                                         "top_k": None}
    assert list(dump)[:5] == ["name", "architecture", "params", "data", "steps"]
    assert TrainConfig.model_validate(dump) == cfg
    warm = cfg.model_copy(update={"warmup": 0.2})
    assert TrainConfig.model_validate(warm.model_dump(mode="json")).warmup == 0.2


def test_stopped_run_leaves_only_its_checkpoint_written_atomically(tmp_path):
    cfg = TrainConfig.model_validate({
        "name": "c", "params": {"base_channels": 4, "depth": 1}, "steps": 3, "batch_size": 1,
        "crop": 32, "threads": 1, "data": {"kind": "synthetic-satellite", "scenes": 1, "size": 64}})
    out = tmp_path / "models" / "b"  # its directory made by the first checkpoint
    assert train_bundle(cfg, out, stop_after=1) is None
    assert [p.name for p in out.parent.iterdir()] == [checkpoint_path(out).name]


def test_demo_openvocab_config_is_the_make_target_run():
    cfg = load_train_config(REPO / "configs" / "demo-openvocab.yaml")
    assert cfg == openvocab_config(seed=0, steps=500, threads=2).model_copy(
        update={"checkpoint_every": 100})


def test_openvocab_through_segpipe_train_gives_the_weights_of_train_openvocab(tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    tiny = {"seed": 5, "steps": 4, "size": 32, "batch": 2, "width": 8, "dim": 8}
    direct = train_openvocab(tmp_path / "direct", **tiny)
    config = openvocab_config(**tiny).model_dump(mode="json")
    config_path = _write(tmp_path, yaml.safe_dump({**config, "threads": torch.get_num_threads()}))
    result = CliRunner().invoke(app, ["train", "--config", str(config_path),
                                      "--out", str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    assert "heldout_iou" in result.output
    cli = load_bundle(tmp_path / "cli")
    assert cli.weights_path.read_bytes() == direct.weights_path.read_bytes()
    a, b = direct.spec.model_dump(), cli.spec.model_dump()
    for spec in (a, b):
        spec["training"].pop("seconds")
    assert a == b
    assert b["prompts"] == [c["name"] for c in b["classes"]] and b["architecture"] == "openvocab2d"
    assert set(b["training"]["heldout"]) == {"heldout_iou", "chance_constant", "chance_random",
                                             "pixel_accuracy", "heldout_share"}
    assert b["training"]["held_out"] not in b["training"]["train_prompts"]
