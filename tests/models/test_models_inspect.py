"""``segpipe models inspect MODEL``: what a run will do with a model, before any run.

The printed tile and halo are the planner's own choice with default options, the
normalisation and classes are the bundle's, and ``--json`` says the same as the text.
A model that cannot be loaded is one line and exit 2.
"""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from tests.models.test_mlm_item import MEAN, STD, write_mlm_item, write_onnx


def _invoke(*args) -> tuple[int, str]:
    from flows.cli import app

    result = CliRunner().invoke(app, ["models", *map(str, args)])
    return result.exit_code, result.output


def _field(output: str, name: str) -> str:
    """The value printed beside ``name`` (first line of it)."""
    match = re.search(rf"^{re.escape(name)}\s{{2,}}(.+?)\s*$", output, re.MULTILINE)
    assert match, f"no '{name}' line in:\n{output}"
    return match.group(1)


def test_plain_models_still_lists_the_bundled_models():
    code, output = _invoke()
    assert code == 0 and "demo-satellite" in output and "demo-medical" in output


def test_a_bundled_model_shows_the_planners_tile_halo_and_its_classes():
    from pipeline.bundle import load_bundle
    from pipeline.options import RunOptions
    from pipeline.run.plan import plan_tiles

    code, output = _invoke("inspect", "demo-satellite")
    assert code == 0, output
    bundle = load_bundle("demo-satellite")
    plan = plan_tiles((3000, 2000), bundle, RunOptions())
    assert _field(output, "tile") == str(plan.tile) == "512"
    assert _field(output, "halo") == f"{plan.halo} (exact)" == "56 (exact)"
    assert _field(output, "receptive field") == "103 (declared)"
    assert _field(output, "source") == "bundle"
    assert _field(output, "heads") == "semantic, instance"
    assert _field(output, "mean") == ", ".join(f"{v:.6g}" for v in bundle.spec.input.mean)
    assert re.search(r"^4\s+building\s+yes\s+#dc322f", output, re.MULTILINE)
    assert re.search(r"^2\s+water\s+no\s", output, re.MULTILINE)

    code, text = _invoke("inspect", "demo-satellite", "--json")
    assert code == 0, text
    info = json.loads(text)
    assert (info["tiling"]["tile"], info["tiling"]["halo"]) == (plan.tile, plan.halo)
    assert info["normalisation"]["mean"] == bundle.spec.input.mean
    assert info["normalisation"]["value_scale"]["uint8"] == pytest.approx(1 / 255)
    assert [(c["id"], c["name"], c["thing"]) for c in info["classes"]] == \
        [tuple(row) for row in bundle.spec.class_rows]
    assert info["device"]["device"] in ("cpu", "cuda") and info["kind"] == "bundle"


def test_a_3d_model_says_its_tile_is_chosen_per_volume():
    code, text = _invoke("inspect", "demo-medical", "--json")
    assert code == 0, text
    info = json.loads(text)
    assert info["tiling"]["tile"] is None and info["tiling"]["halo_mode"] == "effective"
    # the probe's effective halo, which a run checks for its split; the exact one bounds it
    assert info["tiling"]["halo_exact"] == 56 and info["spacing_mm"] == [2.0, 2.0, 2.0]
    assert info["tiling"]["halo"] == 24


def test_an_mlm_item_shows_its_bands_scaling_and_measured_receptive_field(tmp_path):
    model = write_mlm_item(tmp_path / "m")
    code, output = _invoke("inspect", model)
    assert code == 0, output
    assert _field(output, "source") == "mlm"
    assert _field(output, "bands").startswith("nir, red, green;")
    assert _field(output, "tile") == "64" and _field(output, "halo") == "1 (exact)"
    assert _field(output, "receptive field") == "3 (measured)"  # one 3x3 convolution
    assert _field(output, "mean") == "2100, 1500, 1700"
    assert _field(output, "std") == "600, 450, 500"
    assert _field(output, "resolution") == "10 m/px"
    assert _field(output, "accelerator") == "amd64"
    assert re.search(r"^1\s+field\s+no\s+#e6c619", output, re.MULTILINE)

    code, text = _invoke("inspect", model, "--json")
    info = json.loads(text)
    assert info["kind"] == "mlm" and info["descriptors"] == [str(model)]
    assert info["format"] == "torchscript" and info["input"]["bands"] == ["nir", "red", "green"]
    assert set(info["normalisation"]["value_scale"].values()) == {1.0}
    assert info["normalisation"]["mean"] == MEAN.tolist()
    assert info["normalisation"]["std"] == STD.tolist()
    assert info["receptive_field"] == {"pixels": 3, "how": "measured"}
    assert info["source"]["total_parameters"] == 84


def test_a_clip_is_shown(tmp_path):
    def clip(doc):
        doc["properties"]["mlm:input"][0]["value_scaling"] = [
            {"type": "clip", "minimum": 0, "maximum": 3000}]

    code, output = _invoke("inspect", write_mlm_item(tmp_path / "c", edit=clip))
    assert code == 0, output
    assert _field(output, "clip") == "0, 3000"


def test_an_onnx_file_shows_its_metadata_and_the_onnxruntime_provider(tmp_path):
    path = write_onnx(tmp_path / "deepness.onnx", metadata={
        "model_type": "Segmentor", "class_names": {"0": "water", "1": "field", "2": "forest"},
        "tiles_size": 96, "tiles_overlap": 25, "resolution": 50,
        "standardization_mean": [0.4, 0.5, 0.6], "standardization_std": [0.2, 0.25, 0.3]})
    code, output = _invoke("inspect", path)
    assert code == 0, output
    assert _field(output, "source") == "onnx" and _field(output, "format") == "onnx"
    assert _field(output, "device") == "cpu (CPUExecutionProvider)"
    assert _field(output, "mean") == "0.4, 0.5, 0.6" and _field(output, "std") == "0.2, 0.25, 0.3"
    assert _field(output, "resolution") == "0.5 m/px"
    # Deepness: 25 % of a 96 px window overlap (24 px), 12 px a side, a 72 px core
    assert _field(output, "tile") == "72" and _field(output, "halo") == "12 (given)"
    assert re.search(r"^2\s+forest\s+no\s", output, re.MULTILINE)
    info = json.loads(_invoke("inspect", path, "--json")[1])
    assert info["device"]["provider"] == "CPUExecutionProvider"
    assert info["normalisation"]["value_scale"]["uint16"] == pytest.approx(1 / 255)
    assert [c["name"] for c in info["classes"]] == ["water", "field", "forest"]


def test_an_mlm_item_with_an_onnx_asset(tmp_path):
    info = json.loads(_invoke("inspect", write_mlm_item(tmp_path / "m", weights="m.onnx",
                                                         artifact="onnx"), "--json")[1])
    assert (info["kind"], info["format"]) == ("mlm", "onnx")
    assert info["device"]["provider"] == "CPUExecutionProvider"
    assert info["receptive_field"] == {"pixels": 3, "how": "measured"}
    assert (info["tiling"]["tile"], info["tiling"]["halo"]) == (64, 1)


@pytest.mark.parametrize("case", ["no bundle", "unreadable weights", "bad item"])
def test_a_model_that_cannot_be_loaded_is_one_line_and_exit_2(tmp_path, case):
    if case == "no bundle":
        model = tmp_path / "empty"
        model.mkdir()
        expected = "directory has no model.yaml"
    elif case == "unreadable weights":
        (tmp_path / "m").mkdir()
        (tmp_path / "m" / "model.pt").write_bytes(b"not a TorchScript archive")
        model = write_mlm_item(tmp_path / "m")
        expected = "cannot load model.pt"
    else:
        model = write_mlm_item(tmp_path / "m", edit=lambda d: d["properties"].pop("mlm:output"))
        expected = "mlm:output: expected a list"
    code, output = _invoke("inspect", model)
    assert code == 2, output
    assert expected in output and len(output.strip().splitlines()) == 1, output
    assert "Traceback" not in output
