"""Synthetic scenes written as GeoTIFF: georeferencing, dtypes, nodata, labels, atomicity."""

from __future__ import annotations

import math

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine
from rasterio.windows import Window as RioWindow

import pipeline.synthdata.satellite as synthetic
from pipeline.synthdata.satellite import UNLABELLED, SceneFiles, label_file_dtype, nodata_wedge, write_scene
from segcore.errors import ConfigError, InputError
from segcore.geometry.window import Window
from segcore.synthetic.satellite import SatelliteSceneSpec, render

SPEC = SatelliteSceneSpec(seed=7, height=700, width=600, building_density=2.0)
WINDOWS = [Window((0, 0), (700, 600)), Window((500, 100), (700, 555)), Window((37, 511), (300, 600))]


def _read(path, window: Window) -> np.ndarray:
    (y0, x0), (h, w) = window.start, window.shape
    with rasterio.open(path) as ds:
        return ds.read(window=RioWindow(x0, y0, w, h))


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> SceneFiles:
    out = tmp_path_factory.mktemp("scene")
    return write_scene(out / "scene.tif", spec=SPEC, label_path=out / "labels.tif", block=512)


def test_geotiff_profile(written):
    assert written.image.name == "scene.tif" and written.labels.name == "labels.tif"
    with rasterio.open(written.image) as ds:
        assert ds.crs.to_epsg() == 32633
        assert ds.transform == Affine(10, 0, 500000, 0, -10, 5200000)
        assert (ds.count, ds.height, ds.width) == (3, 700, 600)
        assert ds.dtypes == ("uint8",) * 3 and ds.nodata is None
        assert ds.block_shapes == [(512, 512)] * 3
        assert ds.compression.value == "DEFLATE"
    with rasterio.open(written.labels) as ds:
        assert (ds.count, ds.dtypes, ds.crs.to_epsg()) == (2, ("uint16", "uint16"), 32633)
        assert ds.transform == Affine(10, 0, 500000, 0, -10, 5200000)
        assert ds.tags()["UNLABELLED_CLASS"] == "65535"


def test_no_temporary_files_are_left(written):
    assert sorted(p.name for p in written.image.parent.iterdir()) == ["labels.tif", "scene.tif"]


@pytest.mark.parametrize("window", WINDOWS)
def test_windows_of_the_files_equal_render(written, window):
    expected = render(SPEC, window)
    assert np.array_equal(_read(written.image, window), expected.image)
    labels = _read(written.labels, window)
    assert np.array_equal(labels[0], expected.semantic)
    assert np.array_equal(labels[1], expected.instance)


def test_uint16_geographic_with_nodata_wedge(tmp_path):
    spec = SatelliteSceneSpec(seed=3, height=520, width=530, bands=4)
    files = write_scene(
        tmp_path / "a.tif", spec=spec, label_path=tmp_path / "a_labels.tif", crs="EPSG:4326",
        nodata=0, dtype="uint16", nodata_fraction=0.1, block=512,
    )
    whole = Window((0, 0), spec.shape)
    mask = nodata_wedge(spec.shape, whole, 0.1)
    assert mask.mean() == pytest.approx(0.1, abs=0.01)
    with rasterio.open(files.image) as ds:
        assert ds.crs.is_geographic and ds.nodata == 0 and ds.dtypes == ("uint16",) * 4
        assert ds.transform == Affine(1e-4, 0, 15.0, 0, -1e-4, 47.0)
        values, valid = ds.read(), ds.dataset_mask() > 0
    assert np.array_equal(valid, ~mask)
    expected = render(spec).image.astype(np.uint16) * 257
    expected[expected == 0] = 1  # valid samples never equal nodata
    assert np.array_equal(values[:, ~mask], expected[:, ~mask])
    assert np.all(values[:, mask] == 0)
    labels = _read(files.labels, whole)
    assert np.all(labels[0][mask] == UNLABELLED) and np.all(labels[1][mask] == 0)
    assert np.all(labels[0][~mask] < 5)


def test_float32_reflectance_with_nan_nodata_and_explicit_transform(tmp_path):
    spec = SatelliteSceneSpec(seed=4, height=300, width=260)
    transform = Affine(2.5, 0, 300000, 0, -2.5, 4000000)
    files = write_scene(
        tmp_path / "f.tif", spec=spec, crs="EPSG:32632", transform=transform,
        nodata=float("nan"), dtype="float32", nodata_fraction=0.3,
    )
    assert files.labels is None
    with rasterio.open(files.image) as ds:
        assert ds.dtypes == ("float32",) * 3 and math.isnan(ds.nodata)
        assert ds.transform == transform and ds.crs.to_epsg() == 32632
        values = ds.read()
    mask = nodata_wedge(spec.shape, Window((0, 0), spec.shape), 0.3)
    assert np.all(np.isnan(values[:, mask])) and not np.any(np.isnan(values[:, ~mask]))
    expected = render(spec).image.astype(np.float32) / np.float32(255)
    assert np.array_equal(values[:, ~mask], expected[:, ~mask])
    assert 0.0 <= values[:, ~mask].min() and values[:, ~mask].max() <= 1.0


def test_label_dtype_widens_for_huge_scenes():
    assert label_file_dtype(SatelliteSceneSpec(seed=0, height=2048, width=2048)) == "uint16"
    assert label_file_dtype(SatelliteSceneSpec(seed=0, height=16384, width=16384)) == "uint32"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"dtype": "uint61"}, "did you mean 'uint16'"),
        ({"block": 1000}, "block"),
        ({"nodata_fraction": 0.2}, "nodata_fraction"),
        ({"nodata": 300}, "nodata"),
        ({"nodata": 0, "nodata_fraction": 1.5}, "nodata_fraction"),
        ({"crs": "EPSG:999999"}, "crs"),
    ],
)
def test_bad_arguments_raise_config_error(tmp_path, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        write_scene(tmp_path / "x.tif", spec=SatelliteSceneSpec(seed=0, height=32, width=32), **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_missing_directory_raises_input_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        write_scene(tmp_path / "nope" / "x.tif", spec=SatelliteSceneSpec(seed=0, height=32, width=32))


def test_failed_write_leaves_the_old_file_and_no_temporaries(tmp_path, monkeypatch):
    spec = SatelliteSceneSpec(seed=0, height=40, width=40)
    target = tmp_path / "x.tif"
    target.write_bytes(b"old")

    def broken(*args, **kwargs):
        raise RuntimeError("render failed")

    monkeypatch.setattr(synthetic, "render", broken)
    with pytest.raises(RuntimeError, match="render failed"):
        write_scene(target, spec=spec, label_path=tmp_path / "y.tif")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.tif"]
    assert target.read_bytes() == b"old"
