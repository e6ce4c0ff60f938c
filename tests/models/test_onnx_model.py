"""``--model file.onnx``: tiny ONNX models with known weights, built with ``onnx.helper``,
run through ``segpipe run`` on GeoTIFF and NIfTI scenes; the labels are compared with
numpy's computation of the model's own definition over the whole scene (Deepness
scaling 1/255, standardisation, zero-padded convolution, argmax or threshold)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import onnx
import pytest
import rasterio
from onnx import TensorProto, helper, numpy_helper
from rasterio.transform import from_origin
from typer.testing import CliRunner

from flows.cli import app
from pipeline.bundle import load_bundle
from pipeline.resolution import warn_resolution
from segcore.errors import ModelError

NODATA_LABEL = 255  # uint8 label rasters' nodata


def conv_model(path: Path, weights: np.ndarray, bias: np.ndarray, *,
               spatial: tuple | None = None, batch: int | None = None, last: str | None = None,
               meta: dict[str, str] | None = None) -> Path:
    """A zero-padded 'same' convolution ``(K, C, k, k[, k])``, then ``last`` (Softmax over
    the channels, Sigmoid, or nothing); ``spatial``: fixed sizes (None: dynamic)."""
    k, c = weights.shape[:2]
    ndim = weights.ndim - 2
    sizes = list(spatial) if spatial else ["d", "h", "w"][3 - ndim:]
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["z" if last else "y"],
                              pads=[weights.shape[2] // 2] * (2 * ndim))]
    if last == "Softmax":
        nodes.append(helper.make_node("Softmax", ["z"], ["y"], axis=1))
    elif last == "Sigmoid":
        nodes.append(helper.make_node("Sigmoid", ["z"], ["y"]))
    graph = helper.make_graph(
        nodes, "known", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                       [batch or "n", c, *sizes])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch or "n", k, *sizes])],
        [numpy_helper.from_array(weights.astype(np.float32), "W"),
         numpy_helper.from_array(bias.astype(np.float32), "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in (meta or {}).items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


def reference(raw: np.ndarray, valid: np.ndarray, weights: np.ndarray, bias: np.ndarray, *,
              mean, std, binary: bool = False) -> np.ndarray:
    """The model's definition on the whole ``(C, *S)`` scene, in float64."""
    spatial = (slice(None),) + (None,) * (raw.ndim - 1)
    x = (raw.astype(np.float64) / 255.0 - np.asarray(mean)[spatial]) / np.asarray(std)[spatial]
    x[:, ~valid] = 0.0
    k = weights.shape[2]
    p = k // 2
    xp = np.pad(x, [(0, 0)] + [(p, p)] * (raw.ndim - 1))
    out = np.broadcast_to(bias[(slice(None), *spatial[1:])],
                          (len(bias), *raw.shape[1:])).astype(np.float64)
    for offset in np.ndindex(*(k,) * (raw.ndim - 1)):
        window = xp[(slice(None), *(slice(o, o + n) for o, n in zip(offset, raw.shape[1:])))]
        out = out + np.tensordot(weights[(slice(None), slice(None), *offset)], window, axes=1)
    labels = (out[0] > 0).astype(np.uint8) if binary else out.argmax(0).astype(np.uint8)
    labels[~valid] = NODATA_LABEL
    return labels


def segpipe(*args) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def write_geotiff(path: Path, image: np.ndarray, *, nodata=None, pixel_m: float = 0.5) -> Path:
    with rasterio.open(path, "w", driver="GTiff", height=image.shape[1], width=image.shape[2],
                       count=image.shape[0], dtype=image.dtype, crs="EPSG:32633", nodata=nodata,
                       transform=from_origin(500000, 5000000, pixel_m, pixel_m)) as dst:
        dst.write(image)
    return path


def read_labels(out: Path) -> np.ndarray:
    [semantic] = list(out.rglob("semantic.tif"))
    with rasterio.open(semantic) as src:
        return src.read(1)


def agreement(got: np.ndarray, want: np.ndarray) -> float:
    assert got.shape == want.shape
    return float((got == want).mean())


def test_dynamic_model_on_uint8_geotiff_measured_halo_and_class_names(tmp_path):
    rng = np.random.default_rng(1)
    weights, bias = rng.normal(size=(4, 3, 3, 3)), rng.normal(size=4) * 0.1
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    names = {"0": "water", "1": "field", "2": "forest", "3": "road"}
    model = conv_model(tmp_path / "fields.onnx", weights, bias, last="Softmax", meta={
        "model_type": json.dumps("Segmentor"), "class_names": json.dumps(names),
        "resolution": "50", "standardization_mean": json.dumps(mean),
        "standardization_std": json.dumps(std)})
    bundle = load_bundle(model)
    assert (bundle.spec.receptive_field, bundle.spec.resolution) == (3, 0.5)  # impulse probe
    image = rng.integers(0, 256, (3, 150, 130), dtype=np.uint8)
    scene = write_geotiff(tmp_path / "scene8.tif", image)
    code, output = segpipe("run", scene, "--model", model, "--out", tmp_path / "out",
                           "--executor", "local", "--tile", "48")
    assert code == 0, output
    want = reference(image, np.ones(image.shape[1:], bool), weights, bias, mean=mean, std=std)
    assert agreement(read_labels(tmp_path / "out"), want) == 1.0
    [report] = list((tmp_path / "out").rglob("report.json"))
    data = json.loads(report.read_text())
    assert list(data["summary"]["classes"]) == list(names.values())
    assert data["tiles"]["total"] > 1 and data["tiles"]["halo"] == 1


def test_fixed_size_binary_model_on_uint16_geotiff_with_nodata(tmp_path):
    rng = np.random.default_rng(2)
    weights, bias = rng.normal(size=(1, 4, 3, 3)), np.array([0.05])
    model = conv_model(tmp_path / "roofs.onnx", weights, bias, spatial=(64, 64), batch=1,
                       last="Sigmoid", meta={"class_names": json.dumps({"0": "building"}),
                                             "tiles_overlap": "10"})
    spec = load_bundle(model).spec
    # Deepness: overlap int(64 * 0.1 * 2) // 2 = 6 px between windows: halo 3, core 58
    assert (spec.tile, spec.overlap, spec.class_names) == (58, 3, ["background", "building"])
    image = rng.integers(1, 3000, (4, 140, 121), dtype=np.uint16)
    valid = np.ones(image.shape[1:], bool)
    valid[10:30, 50:90] = False
    image[:, ~valid] = 0
    scene = write_geotiff(tmp_path / "scene16.tif", image, nodata=0)
    code, output = segpipe("run", scene, "--model", model, "--out", tmp_path / "out",
                           "--executor", "local")
    assert code == 0, output
    want = reference(image, valid, weights, bias, mean=[0.0] * 4, std=[1.0] * 4, binary=True)
    assert agreement(read_labels(tmp_path / "out"), want) == 1.0
    [report] = list((tmp_path / "out").rglob("report.json"))
    tiles = json.loads(report.read_text())["tiles"]
    assert (tiles["total"], tiles["core"], tiles["halo"]) == (9, [58, 58], 3)  # 64 px windows
    assert len(np.unique(want[valid])) == 2  # both classes present: the threshold is tested


def test_3d_model_on_nifti(tmp_path):
    rng = np.random.default_rng(3)
    weights, bias = rng.normal(size=(3, 1, 3, 3, 3)), rng.normal(size=3) * 0.1
    model = conv_model(tmp_path / "organs.onnx", weights, bias,
                       meta={"class_names": json.dumps(["air", "soft", "bone"])})
    assert load_bundle(model).spec.ndim == 3
    volume = rng.normal(100.0, 60.0, (40, 36, 30)).astype(np.float32)  # (R, A, S)
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(volume, np.eye(4)), str(path))
    code, output = segpipe("run", path, "--model", model, "--out", tmp_path / "out",
                           "--executor", "local", "--tile", "16", "--halo-mode", "exact")
    assert code == 0, output
    canonical = volume.transpose(2, 1, 0)[None]  # (S, A, R): segpipe's canonical order
    want = reference(canonical, np.ones(canonical.shape[1:], bool), weights, bias,
                     mean=[0.0], std=[1.0]).transpose(2, 1, 0)
    [semantic] = list((tmp_path / "out").rglob("semantic.nii.gz"))
    got = np.asarray(nib.load(str(semantic)).dataobj)
    assert agreement(got, want) == 1.0
    [report] = list((tmp_path / "out").rglob("report.json"))
    tiles = json.loads(report.read_text())["tiles"]
    assert tiles["total"] == 3 * 3 * 2 and tiles["halo"] == 1


BAD = {
    "class_names": ({"class_names": "{0: 'water', 1:"}, "'class_names': expected a JSON"),
    "mean-length": ({"standardization_mean": "[0.1, 0.2]", "standardization_std": "[1, 1, 1]"},
                    "'standardization_mean': expected a list of 3 numbers"),
    "model_type": ({"model_type": json.dumps("Detector")}, "'model_type': expected 'Segmentor'"),
    "tiles_size": ({"tiles_size": "-5"}, "'tiles_size': expected an integer >= 16"),
}


@pytest.fixture(scope="module")
def small_scene(tmp_path_factory):
    image = np.random.default_rng(4).integers(0, 256, (3, 40, 40), dtype=np.uint8)
    return write_geotiff(tmp_path_factory.mktemp("onnx") / "small.tif", image)


@pytest.mark.parametrize("case", list(BAD))
def test_malformed_metadata_is_one_line_and_exit_2(case, small_scene, tmp_path):
    meta, expected = BAD[case]
    model = conv_model(tmp_path / "bad.onnx", np.ones((2, 3, 1, 1)), np.zeros(2), meta=meta)
    code, output = segpipe("run", small_scene, "--model", model, "--out", tmp_path / "out")
    lines = [ln for ln in output.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in output, output
    assert str(model) in lines[0] and expected in lines[0]
    assert not (tmp_path / "out").exists()


def test_input_layout_without_channels_is_exit_2(small_scene, tmp_path):
    model = conv_model(tmp_path / "flat.onnx", np.ones((2, 3, 1, 1)), np.zeros(2))
    proto = onnx.load(str(model))
    proto.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "c"  # dynamic channels
    onnx.save(proto, str(model))
    code, output = segpipe("run", small_scene, "--model", model, "--out", tmp_path / "out")
    assert code == 2 and len(output.strip().splitlines()) == 1, output
    assert str(model) in output and "fixed channel count" in output


def test_four_channel_model_on_three_band_scene_fails_the_scene_in_one_line(small_scene,
                                                                            tmp_path):
    """A scene the model cannot take fails alone (exit 1: other scenes may run), in one
    line naming the file and both channel counts."""
    model = conv_model(tmp_path / "rgbn.onnx", np.ones((2, 4, 1, 1)), np.zeros(2))
    code, output = segpipe("run", small_scene, "--model", model, "--out", tmp_path / "out",
                           "--executor", "local")
    lines = [ln for ln in output.splitlines() if ln.strip()]
    assert code == 1 and len(lines) == 1 and "Traceback" not in output, output
    assert str(small_scene) in lines[0] and "needs 4 input bands" in lines[0]


def test_declared_resolution_is_checked_against_the_scene(small_scene, tmp_path):
    from pipeline.io.geotiff import open_raster

    model = conv_model(tmp_path / "r.onnx", np.ones((2, 3, 1, 1)), np.zeros(2),
                       meta={"resolution": "500", "tiles_overlap": "0"})  # 5 m per pixel
    spec = load_bundle(model).spec
    line = warn_resolution(open_raster(small_scene), spec)  # the scene has 0.5 m pixels
    assert line is not None and str(small_scene) in line and "10x finer" in line
    close = conv_model(tmp_path / "c.onnx", np.ones((2, 3, 1, 1)), np.zeros(2),
                       meta={"resolution": "52", "tiles_overlap": "0"})  # within 10 %
    assert warn_resolution(open_raster(small_scene), load_bundle(close).spec) is None


def test_metadata_mapping_and_fingerprint_files(tmp_path):
    model = conv_model(tmp_path / "m.onnx", np.ones((3, 2, 5, 5)), np.zeros(3), meta={
        "model_type": "segmentor", "names": "{0: 'a', 1: 'b', 2: 'c'}",  # Python literal
        "tile_size": "256", "tiles_overlap": "25", "standardization_mean": "0.5",
        "standardization_std": "[0.25, 0.5]"})
    bundle = load_bundle(model)
    spec = bundle.spec
    assert spec.class_names == ["a", "b", "c"]
    assert (spec.tile, spec.overlap) == (256 - 2 * 32, 32)  # 25 % of 256 = 64 px overlap
    assert spec.input.mean == [0.5, 0.5] and spec.input.std == [0.25, 0.5]
    assert set(spec.input.value_scale.values()) == {1 / 255}  # Deepness: every type / 255
    assert bundle.kind == "onnx" and bundle.weights_path == model
    assert bundle.descriptor_files == ()  # the file is digested once, as the weights
    proto = onnx.load(str(model))  # weights stored beside the file: digested as well
    onnx.save(proto, str(tmp_path / "ext.onnx"), save_as_external_data=True,
              location="ext.bin", size_threshold=0)
    external = load_bundle(tmp_path / "ext.onnx")
    assert external.descriptor_files == (tmp_path / "ext.bin",)
    import torch

    out = external.build()(torch.ones(2, 2, 9, 7))
    assert out.shape == (2, 3, 9, 7) and float(out[0, 0, 4, 3]) == pytest.approx(25 * 2)
    with pytest.raises(ModelError, match="'tiles_overlap': expected a number >= 0 and < 100"):
        load_bundle(conv_model(tmp_path / "o.onnx", np.ones((3, 2, 1, 1)), np.zeros(3),
                               meta={"tiles_overlap": "150"}))
