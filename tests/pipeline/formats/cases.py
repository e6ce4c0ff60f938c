"""One conformance case per registered scene format: how to write its files and read them back.

Each case writes real files of its format in the quirks of that format (a projected
CRS with a rotated transform and nodata for GeoTIFF; an LPS affine with anisotropic
voxels and distinct qform/sform codes for NIfTI) and reads exported label files back
in the file's own array order with their grid. The conformance suite
(``test_conformance.py``) runs every case through the same tests; a format registered
in ``pipeline.formats.FORMATS`` without a case here fails the suite.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import nibabel as nib
import numpy as np
import rasterio
import torch
from rasterio.crs import CRS
from rasterio.transform import Affine

from pipeline.bundle import MODEL_FILE, ClassSpec, InputSpec, ModelSpec, load_bundle, save_bundle
from segcore.models.factory import build_model

THRESHOLD = 500.0  # the spot model: class 1 where the first channel exceeds it
SPOT = 1000


class SpotNet(torch.nn.Module):
    """Class 1 where the raw first channel exceeds THRESHOLD, any number of spatial axes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x[:, :1]), x[:, :1] - 500.0], dim=1)


class FormatCase(Protocol):
    name: str
    ndim: int
    shape: tuple[int, ...]  # the file's own array shape (disk order)
    suffix: str
    tile: int  # a tile core size that cuts the scene into 8 to 40 tiles

    def write(self, path: Path, data: np.ndarray) -> Path: ...

    def read(self, path: Path) -> tuple[np.ndarray, dict[str, Any]]: ...


@dataclass(frozen=True)
class GeoTiffCase:
    """Single-band uint16 GeoTIFF, UTM 33N with a rotated 10 m transform, nodata 0."""

    name: str = "geotiff"
    ndim: int = 2
    shape: tuple[int, ...] = (150, 220)
    suffix: str = ".tif"
    tile: int = 48

    def write(self, path: Path, data: np.ndarray) -> Path:
        transform = Affine(9.9, 1.2, 500_000.0, 1.3, -9.8, 6_100_000.0)  # rotated/sheared
        profile = {"driver": "GTiff", "height": data.shape[0], "width": data.shape[1],
                   "count": 1, "dtype": str(data.dtype), "crs": CRS.from_epsg(32633),
                   "transform": transform, "tiled": True, "blockxsize": 64, "blockysize": 64,
                   "nodata": 0}
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data, 1)
        return path

    def read(self, path: Path) -> tuple[np.ndarray, dict[str, Any]]:
        with rasterio.open(path) as src:
            return src.read(1), {"crs": src.crs.to_wkt(), "transform": tuple(src.transform),
                                 "shape": (src.height, src.width)}


@dataclass(frozen=True)
class NiftiCase:
    """int16 NIfTI-1 ``.nii.gz``, LPS, anisotropic voxels, qform_code 1 and sform_code 2."""

    name: str = "nifti"
    ndim: int = 3
    shape: tuple[int, ...] = (44, 40, 30)
    suffix: str = ".nii.gz"
    tile: int = 24

    def write(self, path: Path, data: np.ndarray) -> Path:
        affine = np.diag([-1.5, -1.25, 2.5, 1.0])
        affine[:3, 3] = (40.0, -12.0, 7.5)
        image = nib.Nifti1Image(data.astype(np.int16), affine)
        image.set_qform(affine, code=1)
        image.set_sform(affine, code=2)
        nib.save(image, str(path))
        return path

    def read(self, path: Path) -> tuple[np.ndarray, dict[str, Any]]:
        image = nib.load(str(path))
        header = image.header
        return np.asarray(image.dataobj), {
            "affine": np.round(image.affine, 6).tolist(), "shape": image.shape,
            "zooms": tuple(round(float(z), 6) for z in header.get_zooms()),
            "qform_code": int(header["qform_code"]), "sform_code": int(header["sform_code"])}


def write_band(path: Path, data: np.ndarray, *, transform: Affine, crs: str = "EPSG:32633",
               nodata: float | None = 0) -> Path:
    """A tiled single- or multi-band GeoTIFF (``(H, W)`` or ``(C, H, W)`` data)."""
    data = data[None] if data.ndim == 2 else data
    with rasterio.open(path, "w", driver="GTiff", height=data.shape[1], width=data.shape[2],
                       count=data.shape[0], dtype=str(data.dtype), crs=crs, transform=transform,
                       tiled=True, blockxsize=64, blockysize=64, nodata=nodata) as dst:
        dst.write(data)
    return path


def write_stac_item(path: Path, item_id: str, bands: dict[str, tuple[str, str]], *,
                    bbox: tuple[float, float, float, float] = (14.9, 55.0, 15.0, 55.1)) -> Path:
    """A STAC Item file at ``path`` whose assets are the given files (relative hrefs).

    ``bands``: asset key -> (file name beside ``path``, eo:bands common name).
    """
    import datetime as dt

    import pystac

    w, s, e, n = bbox
    geometry = {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}
    item = pystac.Item(item_id, geometry, list(bbox), dt.datetime(2026, 6, 1, 10, 30,
                       tzinfo=dt.UTC), properties={})
    for key, (file, common) in bands.items():
        item.add_asset(key, pystac.Asset(f"./{file}", media_type=pystac.MediaType.COG,
                                         roles=["data"], extra_fields={
                                             "eo:bands": [{"name": key, "common_name": common}]}))
    item.set_self_href(str(path))
    item.make_asset_hrefs_relative()
    path.write_text(json.dumps(item.to_dict(include_self_link=False, transform_hrefs=False)))
    return path


@dataclass(frozen=True)
class StacCase:
    """A STAC Item whose red band is a uint16 COG on a rotated UTM 33N grid (nodata 0),
    beside a coarser swir16 band the model does not use; exports are COGs."""

    name: str = "stac"
    ndim: int = 2
    shape: tuple[int, ...] = (150, 220)
    suffix: str = ".json"
    export_suffix: str = ".tif"
    tile: int = 48

    def write(self, path: Path, data: np.ndarray) -> Path:
        transform = Affine(9.9, 1.2, 500_000.0, 1.3, -9.8, 6_100_000.0)
        stem = path.name[: -len(self.suffix)]
        write_band(path.with_name(f"{stem}_B04.tif"), data, transform=transform)
        coarse = data[::2, ::2] if data.ndim == 2 else data
        write_band(path.with_name(f"{stem}_B11.tif"), coarse, transform=transform @ Affine.scale(2))
        return write_stac_item(path, stem, {"B04": (f"{stem}_B04.tif", "red"),
                                            "B11": (f"{stem}_B11.tif", "swir16")})

    def read(self, path: Path) -> tuple[np.ndarray, dict[str, Any]]:
        if path.name.endswith(self.suffix):  # the input: its red band
            path = path.with_name(f"{path.name[: -len(self.suffix)]}_B04.tif")
        return GeoTiffCase().read(path)


from tests.pipeline.formats.dicom_make import DicomCase

CASES: dict[str, FormatCase] = {c.name: c for c in (GeoTiffCase(), NiftiCase(), StacCase(),
                                                    DicomCase())}


def spot_data(case: FormatCase, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Background values below the threshold with spots above it; (data, spot mask)."""
    rng = np.random.default_rng(seed)
    data = rng.integers(1, 400, size=case.shape).astype(np.uint16 if case.ndim == 2 else np.int16)
    spots = rng.random(case.shape) < 0.01
    data[spots] = SPOT
    return data, spots


def smooth_data(case: FormatCase, seed: int) -> np.ndarray:
    """Content for the convolutional model: smoothed noise, every value valid (> 0)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.random(case.shape), 2.0)
    scaled = (noise - noise.min()) / (np.ptp(noise) + 1e-9) * 20000 + 100
    return scaled.astype(np.uint16 if case.ndim == 2 else np.int16)


def spot_bundle(root: Path, ndim: int) -> Any:
    """A TorchScript bundle of :class:`SpotNet` (raw values, value scale 1)."""
    root.mkdir(parents=True, exist_ok=True)
    torch.jit.save(torch.jit.script(SpotNet()), str(root / "model.pt"))
    spec = ModelSpec(
        name=f"spot{ndim}d", format="torchscript", weights="model.pt", ndim=ndim,
        input=InputSpec(channels=1, mean=[0.0], std=[1.0],
                        value_scale={k: 1.0 for k in ("int16", "uint16", "uint8", "float32",
                                                      "float64", "int32")}),
        classes=[ClassSpec(id=0, name="background"), ClassSpec(id=1, name="spot")],
        tile=32, overlap=0, stride=1, receptive_field=1,
        spacing=None if ndim == 2 else [2.5, 1.25, 1.5],
    )
    (root / MODEL_FILE).write_text(json.dumps(json.loads(spec.model_dump_json())))
    return load_bundle(root)


def conv_bundle(root: Path, ndim: int) -> Any:
    """A random convolutional U-Net (content-sensitive weights) with its receptive field."""
    from tests.segcore.random_models import randomise

    torch.manual_seed(5)
    params = {"in_channels": 1, "num_classes": 3, "base_channels": 4, "depth": 2}
    net = randomise(build_model("unet2d" if ndim == 2 else "unet3d", **params), 6)
    spec = ModelSpec(
        name=f"conv{ndim}d", architecture="unet2d" if ndim == 2 else "unet3d", params=params,
        weights="model.safetensors", ndim=ndim,
        input=InputSpec(channels=1, mean=[0.15], std=[0.1]),
        classes=[ClassSpec(id=i, name=f"c{i}") for i in range(3)],
        tile=256, receptive_field=int(net.receptive_field), stride=int(net.stride),
        spacing=None if ndim == 2 else [2.5, 1.25, 1.5],
    )
    return save_bundle(root, spec, net.state_dict())
