"""NIfTI volumes end to end (plain Python, no Prefect): real files, Zarr, Ray actors.

A TorchScript "spot" model (class 1 wherever the raw intensity exceeds 500) makes
the output predictable, so a label placed at a known voxel must come back at
the same world coordinate in every output, whatever the file's orientation,
header flavour or byte order.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from pipeline.options import RunOptions
from pipeline.run import Workspace, run_scene
from pipeline.formats import Scene
from pipeline.spacing import SpacingPolicy
from pipeline.store import SEMANTIC, open_store
from pipeline.synthdata.volumes import write_canonical
from segcore.errors import InputError

SHAPE = (20, 24, 28)  # canonical (Z, Y, X)
SPOTS = [(3, 5, 7), (10, 12, 20), (19, 0, 27)]


class _Spot(torch.nn.Module):
    def forward(self, x):
        return torch.cat([torch.zeros_like(x[:, :1]), x[:, :1] - 500.0], dim=1)


@pytest.fixture(scope="module")
def spot_bundle(tmp_path_factory):
    from pipeline.bundle import MODEL_FILE, ClassSpec, InputSpec, ModelSpec

    root = tmp_path_factory.mktemp("spot-bundle")
    torch.jit.save(torch.jit.script(_Spot()), str(root / "model.pt"))
    spec = ModelSpec(
        name="spot", format="torchscript", weights="model.pt", ndim=3,
        input=InputSpec(channels=1, mean=[0.0], std=[1.0],
                        value_scale={k: 1.0 for k in ("int16", "uint16", "uint8", "float32",
                                                      "float64", "int32")}),
        classes=[ClassSpec(id=0, name="background"), ClassSpec(id=1, name="spot")],
        tile=16, overlap=0, stride=1, receptive_field=1, spacing=[2.0, 2.0, 2.0],
    )
    (root / MODEL_FILE).write_text(json.dumps(json.loads(spec.model_dump_json())))
    from pipeline.bundle import load_bundle

    return load_bundle(root)


@pytest.fixture(scope="module")
def spot_pool(ray_session, spot_bundle):
    from pipeline.inference.pool import PoolConfig, WorkerPool

    pool = WorkerPool(str(spot_bundle.path), PoolConfig(workers=1, batch_size=4))
    yield pool
    pool.shutdown()


def _spot_volume(dtype="int16", nan_at=None) -> np.ndarray:
    data = np.zeros(SHAPE, dtype=dtype)
    for z, y, x in SPOTS:
        data[z, y, x] = 1000
    if nan_at is not None:
        data[nan_at] = np.nan
    return data


def _run(path, out, bundle, pool, labels=None, **options):
    scene = Scene(path, path.name.split(".")[0], "nifti")
    ws = Workspace(scene, out, labels)
    return ws, run_scene(ws, bundle, RunOptions(**options), pool).report.to_json()


CASES = {
    "LPS.nii": {"axcodes": "LPS"},
    "PLS.nii.gz": {"axcodes": "PLS"},
    "LAS-big-endian.nii": {"axcodes": "LAS", "big_endian": True},
    "RAS-nifti2.nii.gz": {"axcodes": "RAS", "version": 2},
    "qform0-sform2.nii": {"axcodes": "LPS", "qform_code": 0, "sform_code": 2},
    "sform0-qform1.nii.gz": {"axcodes": "PLS", "qform_code": 1, "sform_code": 0},
    "anisotropic.nii": {"axcodes": "LAS", "spacing": (2.0, 2.0, 2.0)},
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_outputs_keep_the_input_grid_and_world_positions(name, spot_bundle, spot_pool, tmp_path):
    kw = dict(CASES[name])
    spacing = kw.pop("spacing", (2.0, 2.0, 2.0))
    if name == "anisotropic.nii":
        spacing = (3.5, 0.8, 1.25)  # z, y, x; far from the model's 2 mm -> policy "ignore"
    path = write_canonical(tmp_path / name, _spot_volume(), spacing=spacing,
                           origin=(-20.0, 31.0, 7.5), **kw)
    policy = SpacingPolicy.IGNORE if name == "anisotropic.nii" else SpacingPolicy.RESAMPLE
    ws, report = _run(path, tmp_path / "out", spot_bundle, spot_pool, spacing=policy)
    src = nib.load(str(path))
    # a semantic-only model: no instance or panoptic outputs at all
    assert not (ws.final / "instance.nii.gz").exists()
    assert not (ws.final / "panoptic.nii.gz").exists()
    assert set(report["outputs"]) >= {"semantic"} and "instance" not in report["outputs"]
    for output in ("semantic",):
        out = nib.load(str(ws.final / f"{output}.nii.gz"))
        assert out.shape == src.shape
        np.testing.assert_allclose(out.affine, src.affine, atol=1e-6)
        np.testing.assert_allclose(out.header.get_zooms(), src.header.get_zooms(), atol=1e-6)
        assert int(out.header["qform_code"]) == int(src.header["qform_code"])
        assert int(out.header["sform_code"]) == int(src.header["sform_code"])
        np.testing.assert_allclose(out.get_qform(), src.get_qform(), atol=1e-6)
        np.testing.assert_allclose(out.get_sform(), src.get_sform(), atol=1e-6)
    semantic = np.asarray(nib.load(str(ws.final / "semantic.nii.gz")).dataobj)
    found = np.argwhere(semantic == 1)
    assert len(found) == len(SPOTS)
    # world coordinates of the found voxels == world coordinates of the placed spots
    image_ijk = np.argwhere(np.asarray(src.dataobj) > 500)
    world_found = nib.affines.apply_affine(src.affine, found)
    world_placed = nib.affines.apply_affine(src.affine, image_ijk)
    key = lambda a: a[np.lexsort(a.T[::-1])]  # noqa: E731
    np.testing.assert_allclose(key(world_found), key(world_placed), atol=1e-6)
    assert report["kind"] == "nifti" and report["shape"] == list(src.shape)
    assert report["summary"]["classes"]["spot"]["pixels"] == len(SPOTS)
    voxel_ml = float(np.prod(src.header.get_zooms()[:3])) / 1000
    assert report["summary"]["classes"]["spot"]["volume_ml"] == pytest.approx(3 * voxel_ml)


def test_nan_voxels_are_nodata(spot_bundle, spot_pool, tmp_path):
    data = _spot_volume("float32", nan_at=(slice(0, 2), slice(None), slice(None)))
    path = write_canonical(tmp_path / "nan.nii.gz", data, axcodes="LPS", spacing=(2, 2, 2))
    ws, report = _run(path, tmp_path / "out", spot_bundle, spot_pool)
    group = open_store(ws.final / "scene.zarr")
    sem = group[SEMANTIC][:]
    assert (sem[:2] == 255).all() and (sem[2:] != 255).all()
    assert report["summary"]["nodata_pixels"] == 2 * SHAPE[1] * SHAPE[2]


def test_spacing_refuse_fails_with_both_spacings(spot_bundle, spot_pool, tmp_path):
    path = write_canonical(tmp_path / "coarse.nii", _spot_volume(), axcodes="RAS",
                           spacing=(5.0, 2.0, 2.0))
    with pytest.raises(InputError, match=r"5 x 2 x 2 mm.*2 x 2 x 2 mm"):
        _run(path, tmp_path / "out", spot_bundle, spot_pool, spacing=SpacingPolicy.REFUSE)
    assert not (tmp_path / "out" / "coarse").exists()
    assert not list((tmp_path / "out").glob(".*partial"))


def test_spacing_resample_runs_at_model_spacing_and_returns_on_input_grid(
        spot_bundle, spot_pool, tmp_path):
    # a 4x4x4-voxel bright block at 1 mm becomes 2x2x2 voxels at the model's 2 mm and back
    data = np.zeros((16, 20, 24), np.int16)
    data[4:8, 8:12, 12:16] = 1000
    path = write_canonical(tmp_path / "fine.nii.gz", data, axcodes="LPS", spacing=(1, 1, 1))
    ws, report = _run(path, tmp_path / "out", spot_bundle, spot_pool)
    assert report["model_grid"]["resampled"] is True
    assert report["model_grid"]["shape"] == [8, 10, 12]
    out = nib.load(str(ws.final / "semantic.nii.gz"))
    src = nib.load(str(path))
    assert out.shape == src.shape
    np.testing.assert_allclose(out.affine, src.affine, atol=1e-6)
    got = np.asarray(out.dataobj) == 1
    want = np.asarray(src.dataobj) > 500
    assert got.sum() == want.sum() and (got == want).all()


def test_four_d_channels_feed_the_model_and_mismatch_is_clear(spot_bundle, spot_pool, tmp_path):
    two = np.stack([np.zeros(SHAPE, np.int16), _spot_volume()], axis=-1)
    path = write_canonical(tmp_path / "multi.nii", two, axcodes="LPS", spacing=(2, 2, 2))
    # the model takes one channel: the second one (--bands 2) holds the spots
    ws, report = _run(path, tmp_path / "out", spot_bundle, spot_pool, bands=[2])
    assert report["summary"]["classes"]["spot"]["pixels"] == len(SPOTS)
    with pytest.raises(InputError, match="2 channels on its 4th axis.*channel 3"):
        _run(path, tmp_path / "out2", spot_bundle, spot_pool, bands=[3])


def test_two_d_model_on_a_volume_is_a_clear_error(tiny_bundle, spot_pool, tmp_path):
    path = write_canonical(tmp_path / "v.nii", _spot_volume(), axcodes="RAS", spacing=(2, 2, 2))
    with pytest.raises(InputError, match="is 2-D; a NIfTI volume needs a 3-D model"):
        _run(path, tmp_path / "out", tiny_bundle, spot_pool)
