"""STAC Items with the Machine Learning Model (MLM) extension as ``--model``.

A tiny TorchScript model with known weights (a 3x3 convolution from nir, red, green to
three classes) is described by an MLM Item built with pystac's MLM extension: band
names, z-score scaling, a fixed 64 px input, the class table. ``segpipe run`` runs it
on a STAC input Item (one 4-band GeoTIFF: blue, green, red, nir) whose bands it picks
by name, and the labels are compared with numpy's evaluation of the same convolution
over the whole scene. Malformed Items are refused in one line with exit 2.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pystac
import pytest
import torch
from pystac.extensions.classification import Classification
from pystac.extensions.mlm import (
    AcceleratorType,
    AssetGeneralMLMExtension,
    InputStructure,
    MLMExtension,
    ModelInput,
    ModelOutput,
    ResultStructure,
    TaskType,
    ValueScaling,
    ValueScalingType,
)
from pystac.extensions.raster import DataType
from rasterio.transform import Affine
from typer.testing import CliRunner

from tests.pipeline.formats.cases import write_band

TEN_M = Affine(10.0, 0.0, 600_000.0, 0.0, -10.0, 5_800_000.0)
SHAPE = (150, 170)  # not a multiple of the 64 px tile: edge tiles are partial
SCENE_BANDS = [("B02", "blue"), ("B03", "green"), ("B04", "red"), ("B08", "nir")]
MODEL_BANDS = ["B08", "B04", "B03"]  # nir, red, green through the model asset's eo:bands
MEAN = np.array([2100.0, 1500.0, 1700.0])
STD = np.array([600.0, 450.0, 500.0])
CLASSES = [(0, "water", "1e64c8"), (1, "field", "e6c619"), (2, "forest", "2e8b57")]
_RNG = np.random.default_rng(5)
WEIGHT = _RNG.normal(size=(3, 3, 3, 3)).astype(np.float32)  # (class, channel, dy, dx)
BIAS = _RNG.normal(size=3).astype(np.float32)


class KnownConv(torch.nn.Module):
    """``(B, 3, H, W) -> (B, 3, H, W)`` class scores: one 3x3 convolution, zero padded."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.from_numpy(WEIGHT))
            self.conv.bias.copy_(torch.from_numpy(BIAS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def reference_labels(data: np.ndarray) -> np.ndarray:
    """``(4, H, W)`` blue, green, red, nir samples -> ``(H, W)`` class ids (numpy, float64)."""
    x = (data[[3, 2, 1]].astype(np.float64) - MEAN[:, None, None]) / STD[:, None, None]
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    height, width = x.shape[1:]
    scores = np.broadcast_to(BIAS[:, None, None].astype(np.float64), (3, height, width)).copy()
    for dy in range(3):
        for dx in range(3):
            scores += np.einsum("kc,chw->khw", WEIGHT[:, :, dy, dx].astype(np.float64),
                                padded[:, dy:dy + height, dx:dx + width])
    return scores.argmax(0)


def _item(item_id: str, properties: dict) -> pystac.Item:
    w, s, e, n = 14.9, 55.0, 15.0, 55.1
    geometry = {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}
    return pystac.Item(item_id, geometry, [w, s, e, n],
                       dt.datetime(2026, 6, 1, 10, 30, tzinfo=dt.UTC), properties=properties)


def _write(item: pystac.Item, path: Path, edit: Callable[[dict], None] | None = None) -> Path:
    item.set_self_href(str(path))
    item.make_asset_hrefs_relative()
    doc = item.to_dict(include_self_link=False, transform_hrefs=False)
    if edit is not None:
        edit(doc)
    path.write_text(json.dumps(doc))
    return path


def write_torchscript(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.script(KnownConv()).save(str(path))
    return path


def write_onnx(path: Path, *, side: int | None = None, metadata: dict | None = None) -> Path:
    """:class:`KnownConv` as an ONNX graph (one Conv), ``side``: a fixed input size."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    dims = ["N", 3, side or "H", side or "W"]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[3, 3],
                          pads=[1, 1, 1, 1])], "known-conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)],
        initializer=[numpy_helper.from_array(WEIGHT, "w"), numpy_helper.from_array(BIAS, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {k: json.dumps(v) for k, v in (metadata or {}).items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def write_mlm_item(folder: Path, *, weights: str = "model.pt",
                   artifact: str = "torch.jit.script",
                   edit: Callable[[dict], None] | None = None) -> Path:
    """``folder/model.json``: an MLM Item describing :class:`KnownConv` (its TorchScript
    file written to ``folder/weights`` unless present); ``edit`` changes the JSON."""
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / weights).exists():
        (write_onnx if artifact == "onnx" else write_torchscript)(folder / weights)
    item = _item("known-conv", {"gsd": 10.0})
    bands = [{"name": name, "common_name": common} for name, common in SCENE_BANDS]
    item.add_asset("model", pystac.Asset(
        f"./{weights}", media_type="application/octet-stream; framework=pytorch",
        roles=["mlm:model", "mlm:weights"], extra_fields={"eo:bands": bands}))
    dims = ["batch", "channel", "height", "width"]
    model_input = ModelInput.create(
        name="nir-red-green", bands=MODEL_BANDS, resize_type=None,
        input=InputStructure.create(shape=[-1, 3, 64, 64], dim_order=dims,
                                    data_type=DataType.FLOAT32))
    # MLM 1.4: one scaling object per band (pystac's setter takes a single object only)
    model_input.properties["value_scaling"] = [
        ValueScaling.create(type=ValueScalingType.Z_SCORE, mean=m, stddev=s).to_dict()
        for m, s in zip(MEAN.tolist(), STD.tolist(), strict=True)]
    MLMExtension.ext(item, add_if_missing=True).apply(
        name="known-conv", architecture="conv3x3",
        tasks=[TaskType.SEMANTIC_SEGMENTATION], framework="PyTorch",
        accelerator=AcceleratorType.AMD64, total_parameters=int(WEIGHT.size + BIAS.size),
        input=[model_input],
        output=[ModelOutput.create(
            name="scores", tasks=[TaskType.SEMANTIC_SEGMENTATION],
            result=ResultStructure.create(shape=[-1, 3, 64, 64], dim_order=dims,
                                          data_type=DataType.FLOAT32),
            classes=[Classification.create(value=v, description=n, name=n, color_hint=c)
                     for v, n, c in CLASSES])])
    AssetGeneralMLMExtension.ext(item.assets["model"], add_if_missing=True).apply(
        artifact_type=artifact)
    return _write(item, folder / "model.json", edit)


def write_scene(folder: Path, seed: int = 11) -> tuple[Path, np.ndarray]:
    """A STAC input Item over one 4-band uint16 GeoTIFF (blue, green, red, nir)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(seed).integers(1, 4000, (4, *SHAPE)).astype(np.uint16)
    write_band(folder / "scene.tif", data, transform=TEN_M, crs="EPSG:32632")
    item = _item("scene-4band", {})
    item.add_asset("image", pystac.Asset("./scene.tif", media_type=pystac.MediaType.COG,
                                         roles=["data"], extra_fields={"eo:bands": [
                                             {"name": n, "common_name": c}
                                             for n, c in SCENE_BANDS]}))
    return _write(item, folder / "scene.json"), data


def _invoke(args: list) -> tuple[int, str]:
    from flows.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


# --------------------------------------------------------------------------- tests

@pytest.mark.parametrize(("artifact", "weights"), [("torch.jit.script", "model.pt"),
                                                  ("onnx", "model.onnx")])
def test_an_mlm_item_runs_and_its_labels_agree_with_numpy(tmp_path, artifact, weights):
    import rasterio

    model = write_mlm_item(tmp_path / "model", artifact=artifact, weights=weights)
    scene, data = write_scene(tmp_path / "scene")
    out = tmp_path / "out"
    code, output = _invoke(["run", scene, "--model", model, "--executor", "local",
                            "--out", out])
    assert code == 0, output
    with rasterio.open(out / "scene-4band" / "semantic.tif") as src:
        labels = src.read(1)
    expected = reference_labels(data)
    agreement = float((labels == expected).mean())
    print(f"MLM item ({artifact}) vs numpy: agreement {agreement:.6f} over {labels.size} px")
    assert agreement >= 0.9999
    report = json.loads((out / "scene-4band" / "report.json").read_text())
    assert list(report["summary"]["classes"]) == [name for _, name, _ in CLASSES]
    assert report["model"] == "known-conv"
    assert report["bands"] == ["nir", "red", "green"]  # B08, B04, B03 by common name
    assert report["tiles"]["tile"] == 64 and report["tiles"]["halo"] == 1  # 3x3: 1 px


def test_the_mlm_fields_fill_the_bundle(tmp_path):
    from pipeline.bundle import ModelFormat, load_bundle

    path = write_mlm_item(tmp_path / "m")
    bundle = load_bundle(path)
    spec = bundle.spec
    assert (bundle.kind, bundle.path, bundle.root) == ("mlm", path, path.parent)
    assert bundle.descriptor_files == (path,) and bundle.weights_path == path.parent / "model.pt"
    assert spec.name == "known-conv" and spec.format is ModelFormat.TORCHSCRIPT
    assert spec.input.channels == 3 and spec.input.bands == ["nir", "red", "green"]
    assert spec.input.mean == MEAN.tolist() and spec.input.std == STD.tolist()
    assert set(spec.input.value_scale.values()) == {1.0}  # MLM scales the stored samples
    assert spec.tile == 64 and spec.resolution == 10.0 and spec.overlap is None
    assert [(c.id, c.name, c.color) for c in spec.classes] == [
        (0, "water", (30, 100, 200)), (1, "field", (230, 198, 25)), (2, "forest", (46, 139, 87))]
    assert spec.training["accelerator"] == "amd64" and spec.training["total_parameters"] == 84
    # the same Item again through load_bundle(str(path)), as a worker reloads it
    assert load_bundle(str(bundle.path)).spec == spec


def _legacy(doc: dict, norm_type: str, **fields) -> None:
    """MLM 1.3 spelling: norm_type + statistics (or norm_clip) instead of value_scaling."""
    doc["stac_extensions"] = [e.replace("v1.4.0", "v1.3.0") for e in doc["stac_extensions"]]
    inp = doc["properties"]["mlm:input"][0]
    inp.pop("value_scaling")
    inp.update({"norm_type": norm_type, "norm_by_channel": True, **fields})


@pytest.mark.parametrize(("edit", "mean", "std", "clip"), [
    (lambda d: _legacy(d, "min-max", statistics=[
        {"minimum": 100, "maximum": 4100}, {"minimum": 0, "maximum": 3000},
        {"minimum": 50, "maximum": 2050}]), [100, 0, 50], [4000, 3000, 2000], None),
    (lambda d: _legacy(d, "z-score", norm_by_channel=False,
                       statistics=[{"mean": 1000, "stddev": 250}]),
     [1000] * 3, [250] * 3, None),
    (lambda d: _legacy(d, "clip", norm_clip=[3000, 3000, 4000]),
     [0] * 3, [3000, 3000, 4000], (0.0, 1.0)),
    (lambda d: d["properties"]["mlm:input"][0].update(value_scaling=[
        {"type": "min-max", "minimum": 0, "maximum": 10000}]), [0] * 3, [10000] * 3, None),
    (lambda d: d["properties"]["mlm:input"][0].update(value_scaling=[
        {"type": "clip", "minimum": 0, "maximum": 3000}] * 3), [0] * 3, [1] * 3, (0, 3000)),
    (lambda d: d["properties"]["mlm:input"][0].update(value_scaling=None), [0] * 3, [1] * 3,
     None),
])
def test_scaling_spellings_of_mlm_1_0_to_1_4(tmp_path, edit, mean, std, clip):
    from pipeline.bundle import load_bundle

    spec = load_bundle(write_mlm_item(tmp_path / "m", edit=edit)).spec
    assert (spec.input.mean, spec.input.std) == (mean, std)
    assert spec.input.clip == (tuple(clip) if clip else None)


@pytest.mark.parametrize(("side", "tile", "overlap"), [(None, 64, None), (48, 46, 1)])
def test_an_onnx_model_asset_gives_the_onnx_format(tmp_path, side, tile, overlap):
    from pipeline.bundle import ModelFormat, load_bundle

    write_onnx(tmp_path / "o" / "net.onnx", side=side)
    spec = load_bundle(write_mlm_item(tmp_path / "o", weights="net.onnx", artifact="onnx")).spec
    assert spec.format is ModelFormat.ONNX and spec.weights == "net.onnx"
    assert spec.receptive_field == 3  # measured by impulse responses
    # a fixed input size: windows of exactly that size (core + 2 x halo)
    assert (spec.tile, spec.overlap) == (tile, overlap)


def _outside(doc: dict, folder: Path) -> None:
    (folder.parent / "outside.pt").write_bytes((folder / "model.pt").read_bytes())
    doc["assets"]["model"]["href"] = "../outside.pt"


def _linked_outside(doc: dict, folder: Path) -> None:
    target = folder.parent / "elsewhere.pt"
    target.write_bytes((folder / "model.pt").read_bytes())
    os.symlink(target, folder / "link.pt")
    doc["assets"]["model"]["href"] = "./link.pt"


def _props(doc: dict) -> dict:
    return doc["properties"]


BAD_ITEMS = {
    "no mlm:input": (lambda d, f: _props(d).pop("mlm:input"), "mlm:input: expected a list"),
    "classes not 0..K-1": (
        lambda d, f: [c.update(value=v) for c, v in zip(
            _props(d)["mlm:output"][0]["classification:classes"], (0, 2, 3), strict=True)],
        "values must be 0..2 without gaps"),
    "unsupported task": (
        lambda d, f: _props(d)["mlm:output"][0].update(tasks=["object-detection"]),
        "tasks: segpipe runs semantic-segmentation models, got ['object-detection']"),
    "no model asset": (lambda d, f: d["assets"]["model"].update(roles=["data"]),
                       "expected an asset with the role 'mlm:model'"),
    "weights outside": (_outside, "expected a file inside the item's folder"),
    "weights linked outside": (_linked_outside, "expected a file inside the bundle directory"),
    "weights missing": (lambda d, f: d["assets"]["model"].update(href="./gone.pt"),
                        "weights file"),
    "s3 href": (lambda d, f: d["assets"]["model"].update(href="s3://models/net.pt"),
                "is not a local file"),
    "clip on one band": (lambda d, f: _props(d)["mlm:input"][0]["value_scaling"].__setitem__(
        1, {"type": "clip", "minimum": 0, "maximum": 3000}), "not representable"),
    "resize": (lambda d, f: _props(d)["mlm:input"][0].update(resize_type="crop"),
               "resize_type: expected null"),
    "channels differ": (lambda d, f: _props(d)["mlm:input"][0]["input"].update(
        shape=[-1, 4, 64, 64]), "input.shape has 4 channels but bands lists 3"),
    "pickled weights": (lambda d, f: d["assets"]["model"].update(
        {"mlm:artifact_type": "torch.save"}), "got 'torch.save'"),
}


@pytest.fixture(scope="module")
def weights_bytes(tmp_path_factory) -> bytes:
    return write_torchscript(tmp_path_factory.mktemp("ts") / "model.pt").read_bytes()


@pytest.mark.parametrize("case", list(BAD_ITEMS))
def test_a_malformed_item_is_one_line_and_exit_2(tmp_path, weights_bytes, case):
    edit, expected = BAD_ITEMS[case]
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.pt").write_bytes(weights_bytes)
    model = write_mlm_item(folder, edit=lambda doc: edit(doc, folder))
    scene, _ = write_scene(tmp_path / "scene")
    code, output = _invoke(["run", scene, "--model", model, "--executor", "local",
                            "--out", tmp_path / "out"])
    assert code == 2, output
    assert expected in output and str(model) in output, output
    assert len(output.strip().splitlines()) == 1 and "Traceback" not in output, output
    assert not (tmp_path / "out").exists()
