"""A bundle's ``name`` and ``weights`` cannot lead out of their directories."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from pipeline.bundle import MODEL_FILE, bundled_models, load_bundle
from segcore.errors import ModelError


@pytest.fixture
def bundle_dir(tmp_path) -> Path:
    """A copy of the demo-satellite bundle that a test may edit."""
    target = tmp_path / "bundle"
    shutil.copytree(bundled_models()["demo-satellite"], target)
    return target


def _edit(directory: Path, **fields) -> None:
    spec = yaml.safe_load((directory / MODEL_FILE).read_text())
    (directory / MODEL_FILE).write_text(yaml.safe_dump({**spec, **fields}))


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", ".", "a\\b", "/abs", "x\x00y", ""])
def test_a_name_that_is_not_one_plain_component_is_refused(bundle_dir, name):
    _edit(bundle_dir, name=name)
    with pytest.raises(ModelError, match=r"name: .*expected one plain file name") as err:
        load_bundle(bundle_dir)
    assert repr(name)[1:-1] in str(err.value)  # what was received
    assert "\n" not in str(err.value).strip()


@pytest.mark.parametrize("weights", ["/etc/hostname", "../outside.safetensors",
                                     "sub/../../outside.safetensors", "C:\\w\\model.pt",
                                     "\\\\server\\share\\model.pt", ""])
def test_weights_outside_the_bundle_are_refused(bundle_dir, weights):
    _edit(bundle_dir, weights=weights)
    with pytest.raises(ModelError, match=r"weights: .*relative to the bundle directory"):
        load_bundle(bundle_dir)


def test_a_weights_link_leading_out_of_the_bundle_is_refused(bundle_dir, tmp_path):
    spec = yaml.safe_load((bundle_dir / MODEL_FILE).read_text())
    outside = tmp_path / "elsewhere.safetensors"
    (bundle_dir / spec["weights"]).rename(outside)
    (bundle_dir / spec["weights"]).symlink_to(outside)
    with pytest.raises(ModelError, match="weights: expected a file inside the bundle") as err:
        load_bundle(bundle_dir)
    assert str(outside) in str(err.value)


def test_weights_in_a_subdirectory_or_linked_inside_are_accepted(bundle_dir):
    spec = yaml.safe_load((bundle_dir / MODEL_FILE).read_text())
    (bundle_dir / "weights").mkdir()
    (bundle_dir / spec["weights"]).rename(bundle_dir / "weights" / "net.safetensors")
    _edit(bundle_dir, weights="weights/net.safetensors")
    assert load_bundle(bundle_dir).weights_path.is_file()
    (bundle_dir / "link.safetensors").symlink_to(bundle_dir / "weights" / "net.safetensors")
    _edit(bundle_dir, weights="link.safetensors")
    bundle = load_bundle(bundle_dir)
    assert bundle.name == "demo-satellite"
    assert sum(p.numel() for p in bundle.build().parameters()) > 0
