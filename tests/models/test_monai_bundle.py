"""MONAI bundles through `segpipe run`, checked against MONAI itself.

Each test bundle holds a tiny 3-D conv net with seeded weights (TorchScript), its
``metadata.json`` and an ``inference.json``. The oracle is the bundle's own definition
run the MONAI way: its ``preprocessing`` instantiated by MONAI's ConfigParser (these
configs are the test's own, so instantiating them here is safe), the network on the
whole volume, argmax, then back to the file's grid with nibabel. segpipe must agree on
at least 99.99 % of the voxels, on volumes stored LPS and RAS with anisotropic voxels.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from pipeline.bundle import load_bundle
from segcore.errors import ModelError

_TMP = Path(os.environ["SEGPIPE_TEST_TMP"])
CLASSES = {"0": "background", "1": "liver", "2": "spleen"}


class TinyNet(torch.nn.Module):
    """Conv 3x3x3 -> ReLU -> conv 1x1x1: a receptive field of 3, asymmetric weights."""

    def __init__(self, channels: int, classes: int) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv3d(channels, 6, 3, padding=1)
        self.conv2 = torch.nn.Conv3d(6, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.relu(self.conv1(x)))


def _net(channels: int, classes: int, seed: int) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet(channels, classes).eval()


def _metadata(channels: int, classes: dict[str, str]) -> dict:
    return {"name": "tiny", "version": "0.1.0", "network_data_format": {
        "inputs": {"image": {"type": "image", "format": "hounsfield", "num_channels": channels,
                             "spatial_shape": ["1*n", "1*n", "1*n"], "dtype": "float32"}},
        "outputs": {"pred": {"type": "image", "format": "segmentation",
                             "num_channels": len(classes), "channel_def": classes}}}}


def _inference(preprocessing: list[dict]) -> dict:
    return {
        "bundle_root": ".",
        "roi": [32, 32, 16],
        "preprocessing": {"_target_": "Compose", "transforms": preprocessing},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": "@roi", "overlap": 0.25},
        "postprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "Activationsd", "keys": "pred", "softmax": True},
            {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
            {"_target_": "SaveImaged", "keys": "pred", "output_dir": "eval"}]},
    }


def write_bundle(root: Path, *, channels: int, preprocessing: list[dict], seed: int = 4,
                 classes: dict[str, str] = CLASSES, net_classes: int | None = None) -> Path:
    """A MONAI bundle directory with a seeded TinyNet; returns it."""
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "configs" / "metadata.json").write_text(json.dumps(_metadata(channels, classes)))
    (root / "configs" / "inference.json").write_text(json.dumps(_inference(preprocessing)))
    net = _net(channels, net_classes or len(classes), seed)
    torch.jit.save(torch.jit.script(net), str(root / "models" / "model.ts"))
    return root


def _ct_preprocessing(pixdim: list[float]) -> list[dict]:
    return [
        {"_target_": "LoadImaged", "keys": "image"},
        {"_target_": "EnsureChannelFirstd", "keys": "image"},
        {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
        {"_target_": "Spacingd", "keys": "image", "pixdim": pixdim, "mode": "bilinear"},
        {"_target_": "monai.transforms.ScaleIntensityRanged", "keys": "image", "a_min": -57,
         "a_max": 164, "b_min": 0.0, "b_max": 1.0, "clip": True},
        {"_target_": "EnsureTyped", "keys": "image"},
    ]


_MR_PREPROCESSING = [
    {"_target_": "LoadImaged", "keys": "image"},
    {"_target_": "EnsureChannelFirstd", "keys": "image"},
    {"_target_": "Orientationd", "keys": "image", "axcodes": "LPS"},
    {"_target_": "NormalizeIntensityd", "keys": "image", "nonzero": True, "channel_wise": True},
]


def _smooth(shape: tuple[int, ...], seed: int, scale: float, offset: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    field = gaussian_filter(np.random.default_rng(seed).normal(size=shape), 1.5)
    return field / field.std() * scale + offset


def write_volume(path: Path, data: np.ndarray, zooms: tuple[float, float, float],
                 axcodes: str) -> Path:
    """A NIfTI file whose voxel axes run along ``axcodes`` (e.g. LPS) with ``zooms``."""
    ornt = nib.orientations.axcodes2ornt(tuple(axcodes))
    affine = np.eye(4)
    for i, (axis, sign) in enumerate(ornt.astype(int)):
        affine[:3, i] = 0.0
        affine[axis, i] = sign * zooms[i]
    affine[:3, 3] = [-20.0, 15.0, 7.5]
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def monai_labels(bundle: Path, volume: Path) -> np.ndarray:
    """The bundle's definition the MONAI way, on the whole volume, in the file's grid."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    data = parser.get_parsed_content("preprocessing")({"image": str(volume)})
    net = torch.jit.load(str(bundle / "models" / "model.ts")).eval()
    with torch.inference_mode():
        pred = net(torch.as_tensor(data["image"]).float()[None])[0].argmax(0).numpy()
    # back to the file's voxel order: the model's orientation -> the file's (no resampling:
    # the bundles' pixdim is the volume's own)
    img = nib.load(str(volume))
    model = nib.orientations.axcodes2ornt(nib.aff2axcodes(data["image"].affine.numpy()))
    own = nib.orientations.io_orientation(img.affine)
    back = nib.orientations.apply_orientation(
        pred, nib.orientations.ornt_transform(model, own))
    assert back.shape == img.shape[:3], (back.shape, img.shape)
    return back.astype(np.uint8)


def segpipe(*args: object) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="r", dir=_TMP)
    return subprocess.run([sys.executable, "-m", "flows.cli", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=300, check=False)


def _run_on_ray(bundle: Path, volume: Path, out: Path, tile: int) -> None:
    """The run a Ray executor makes (model actors, block passes as Ray tasks), in this
    process on the test session's runtime: a CLI run would start a runtime of its own."""
    from pipeline.formats import FORMATS
    from pipeline.inference.pool import PoolConfig, WorkerPool
    from pipeline.options import RunOptions
    from pipeline.run import Workspace, run_scene

    model = load_bundle(bundle)
    pool = WorkerPool(str(model.path), PoolConfig(workers=1, batch_size=2))
    try:
        assert type(pool.blocks).__name__ == "RayBlocks"  # the passes are Ray tasks
        ws = Workspace(FORMATS["nifti"].scene(volume), out)
        run_scene(ws, model, RunOptions(tile=tile), pool)
    finally:
        pool.shutdown()


def _run_and_compare(bundle: Path, volume: Path, out: Path, *extra: str,
                     executor: str = "local") -> float:
    if executor == "ray":
        _run_on_ray(bundle, volume, out, int(extra[extra.index("--tile") + 1]))
    else:
        proc = segpipe("run", volume, "--model", bundle, "--out", out, "--executor", executor,
                       *extra)
        assert proc.returncode == 0, proc.stderr[-3000:]
    [semantic] = list(out.rglob("semantic.nii.gz"))
    got = np.asarray(nib.load(str(semantic)).dataobj)
    want = monai_labels(bundle, volume)
    assert got.shape == want.shape
    agreement = float((got == want).mean())
    print(f"{bundle.name} on {volume.name}: agreement {agreement:.7f} "
          f"(classes {np.bincount(want.ravel(), minlength=3)})")
    assert agreement >= 0.9999, agreement
    assert len(np.unique(want)) == 3  # every class occurs: the comparison means something
    [report] = list(out.rglob("report.json"))
    text = report.read_text()
    assert all(f'"{name}"' in text for name in CLASSES.values()), text[:2000]
    if "--tile" in extra:  # several windows, each normalised and turned on its own
        assert json.loads(text)["tiles"]["total"] > 1
    return agreement


def test_ct_bundle_matches_monai_on_lps_anisotropic_volume(tmp_path):
    """Orientationd RAS + Spacingd at the volume's spacing + ScaleIntensityRanged (clip),
    on an LPS int16 volume with 0.8 x 1.0 x 2.5 mm voxels; a second, RAS-stored volume
    with the same world content checks the orientation round trip."""
    zooms = (0.8, 1.0, 2.5)  # along the file's axes: L, P, S (pixdim RAS: the same sizes)
    bundle = write_bundle(tmp_path / "ct_bundle", channels=1,
                          preprocessing=_ct_preprocessing(list(zooms)))
    ct = _smooth((40, 36, 20), seed=1, scale=90.0, offset=50.0).astype(np.int16)
    lps = write_volume(tmp_path / "ct_lps.nii.gz", ct, zooms, "LPS")
    _run_and_compare(bundle, lps, tmp_path / "out_lps")
    ras = write_volume(tmp_path / "ct_ras.nii.gz", ct[::-1, ::-1].copy(), zooms, "RAS")
    _run_and_compare(bundle, ras, tmp_path / "out_ras", "--tile", "16")


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_normalize_intensity_bundle_uses_scene_statistics(tmp_path, executor, request):
    """NormalizeIntensityd(nonzero, channel_wise) on a 2-channel volume with zero voxels,
    model orientation LPS, stored PLS-like (permuted axes) and tiled in several windows:
    every window uses the whole scene's statistics (on Ray: computed by a block pass on
    the cluster and sent to the model actors with the tiles)."""
    if executor == "ray":
        request.getfixturevalue("ray_session")
    bundle = write_bundle(tmp_path / "mr_bundle", channels=2, preprocessing=_MR_PREPROCESSING,
                          seed=5)
    shape = (30, 28, 18)
    mr = np.stack([_smooth(shape, 2, 40.0, 300.0), _smooth(shape, 3, 5.0, -20.0)], axis=-1)
    mr[:6] = 0.0  # a background slab: excluded from the statistics, kept at 0
    volume = write_volume(tmp_path / "mr.nii.gz", mr.astype(np.float32), (1.2, 0.9, 2.0),
                          "PLS")
    _run_and_compare(bundle, volume, tmp_path / "out_mr", "--tile", "16", executor=executor)


@pytest.mark.parametrize("case", ["transform", "expression", "metadata", "channels",
                                  "weights"])
def test_bad_bundles_are_refused_with_one_line(tmp_path, case):
    pre = _ct_preprocessing([1.0, 1.0, 1.0])
    kwargs: dict = {}
    if case == "transform":
        pre.insert(3, {"_target_": "CropForegroundd", "keys": "image", "source_key": "image"})
    elif case == "expression":
        pre[3]["pixdim"] = "$[1.0, 1.0, 1.0]"
    elif case == "channels":
        kwargs["net_classes"] = 2  # metadata says 3
    root = write_bundle(tmp_path / "bad", channels=1, preprocessing=pre, **kwargs)
    if case == "metadata":
        (root / "configs" / "metadata.json").write_text('{"network_data_format": {"inputs": ')
    elif case == "weights":
        (root / "models" / "model.ts").unlink()
    expected = {"transform": "MONAI transform 'CropForegroundd' in configs/inference.json is "
                             "not supported (supported: LoadImaged",
                "expression": "preprocessing#transforms#3#pixdim is a Python expression",
                "metadata": "cannot read configs/metadata.json",
                "channels": "gives 2 output channels but configs/metadata.json",
                "weights": "has no models/model.ts"}[case]
    with pytest.raises(ModelError) as err:
        load_bundle(root)
    message = str(err.value)
    assert expected in message and "\n" not in message and str(root) in message, message
    if case in ("transform", "channels"):  # the command: exit 2, one line
        volume = write_volume(tmp_path / "x.nii.gz", np.zeros((8, 8, 8), np.int16),
                              (1.0, 1.0, 1.0), "RAS")
        proc = segpipe("run", volume, "--model", root, "--out", tmp_path / "o",
                       "--executor", "local")
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert proc.returncode == 2 and len(lines) == 1 and expected in lines[0], proc.stderr


@pytest.mark.parametrize("params", [
    {"_target_": "ScaleIntensityd", "minv": -1.0, "maxv": 2.0},
    {"_target_": "ScaleIntensityd", "channel_wise": True},
    {"_target_": "NormalizeIntensityd"},
    {"_target_": "NormalizeIntensityd", "subtrahend": 10.0, "nonzero": True},
])
def test_scene_statistics_equal_monai_on_the_whole_volume(tmp_path, params):
    """The per-scene statistics, computed slab by slab from a store, normalise like
    MONAI's transform on the whole volume (store chunks of 5 slices: several slabs)."""
    from monai.bundle import ConfigParser

    from pipeline.inference.scene_intensity import scene_normalisation
    from pipeline.model_sources.monai_transforms import PREPROCESSING, InputPolicy
    from pipeline.store import IMAGE, VALID, create_store

    image = np.stack([_smooth((12, 10, 9), 4, 30.0, 100.0), _smooth((12, 10, 9), 5, 2.0, -3.0)])
    image[:, :3] = 0.0
    image = image.astype(np.float32)
    group = create_store(tmp_path / "s.zarr", bands=2, shape=(12, 10, 9), dtype="float32",
                         image_chunk=5, attrs={})
    group[IMAGE][:] = image
    group[VALID][:] = True
    policy = PREPROCESSING[params["_target_"]](InputPolicy(2), params)
    mean, std = scene_normalisation(group, policy.scene).arrays()
    got = (image - mean[:, None, None, None]) / std[:, None, None, None]
    if policy.keep_zero:
        got[image == 0] = 0.0
    want = np.asarray(ConfigParser({"t": {**params, "keys": "image"}}).get_parsed_content("t")(
        {"image": torch.from_numpy(image.copy())})["image"])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_asking_the_model_sources_does_not_import_torch():
    """Which source claims a model, and a MONAI bundle's transform table, need no torch
    (about 2 s of imports); only building the network does."""
    code = ("import sys\n"
            "import pipeline.model_sources as m\n"
            "from pipeline.model_sources.monai_transforms import PREPROCESSING\n"
            "m.sources()\n"
            "print(sorted(n for n in sys.modules if n == 'torch' or n.startswith('torch.')))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2], check=True)
    assert done.stdout.strip() == "[]", done.stdout[:300]
