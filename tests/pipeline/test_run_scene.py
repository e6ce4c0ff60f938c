"""End-to-end runs of the plain-Python pipeline (no Prefect): real GeoTIFFs, Zarr, Ray."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import rasterio

from pipeline.options import RunOptions
from pipeline.run import Workspace, run_scene
from pipeline.formats import Scene
from pipeline.store import IMAGE, SEMANTIC, VALID, open_store


def _run(image, out, bundle, pool, labels=None, **options):
    scene = Scene(image, image.name.removesuffix(".tif"), "geotiff")
    ws = Workspace(scene, out, labels)
    return ws, run_scene(ws, bundle, RunOptions(**options), pool).report.to_json()


CASES = [
    # (crs, dtype, nodata)
    ("EPSG:32633", "uint8", None),
    ("EPSG:32633", "uint8", 0),
    ("EPSG:32633", "uint16", 65535),
    ("EPSG:32633", "float32", -9999.0),
    ("EPSG:4326", "uint8", 255),
    ("EPSG:4326", "uint16", None),
    ("EPSG:4326", "float32", float("nan")),
]


@pytest.mark.parametrize(("crs", "dtype", "nodata"), CASES)
def test_cog_exports_keep_georeferencing_and_nodata(scene_factory, tiny_bundle, tiny_pool,
                                                    tmp_path, crs, dtype, nodata):
    kwargs = {"crs": crs, "dtype": dtype}
    if nodata is not None:
        kwargs.update(nodata=nodata, nodata_fraction=0.1)
    image, _ = scene_factory(f"geo-{crs[5:]}-{dtype}-{nodata}", size=(1100, 900), **kwargs)
    ws, report = _run(image, tmp_path, tiny_bundle, tiny_pool, tile=256)
    cog = ws.final / "semantic.tif"
    with rasterio.open(image) as src, rasterio.open(cog) as dst:
        assert dst.crs == src.crs
        assert dst.transform.almost_equals(src.transform, precision=1e-12)
        assert (dst.width, dst.height) == (src.width, src.height)
        assert dst.profile.get("tiled") or dst.block_shapes[0][0] < dst.height
        assert dst.overviews(1), "COG must carry overviews"
        assert dst.nodata == 255
        semantic = dst.read(1)
        input_valid = src.dataset_mask() > 0
        if dtype == "float32":
            input_valid &= np.isfinite(src.read()).all(axis=0)
    # input nodata pixels are nodata in the output, valid ones get a class
    np.testing.assert_array_equal(semantic == 255, ~input_valid)
    if nodata is not None:
        assert (~input_valid).mean() > 0.02
    # ... and are left out of the summary
    counted = sum(c["pixels"] for c in report["summary"]["classes"].values())
    assert counted == int(input_valid.sum())
    assert all(c["area_m2"] > 0 for c in report["summary"]["classes"].values() if c["pixels"])
    # the Zarr store carries the same labels and the georeferencing in its attrs
    group = open_store(ws.final / "scene.zarr")
    np.testing.assert_array_equal(group[SEMANTIC][:], semantic)
    assert "transform" in group.attrs and "crs" in group.attrs


def test_report_json_has_contract_keys(scene_factory, tiny_bundle, tiny_pool, tmp_path):
    image, labels = scene_factory("keys", size=(600, 500))
    ws, report = _run(image, tmp_path, tiny_bundle, tiny_pool, labels=labels, tile=256)
    on_disk = json.loads((ws.final / "report.json").read_text())
    assert on_disk == report
    for key in ("scene_id", "input", "kind", "shape", "model", "tiles", "timings_s", "summary",
                "metrics"):
        assert key in report
    assert set(report["tiles"]) >= {"total", "computed", "reused", "retried"}
    assert report["tiles"]["total"] == report["tiles"]["computed"] == 6
    assert set(report["timings_s"]) >= {"read", "infer", "stitch", "panoptic", "metrics",
                                        "export", "total"}
    assert report["kind"] == "geotiff" and report["shape"] == [600, 500]
    sem = report["metrics"]["semantic"]
    assert set(sem) == {"miou", "dice", "per_class"} and 0 <= sem["miou"] <= 1
    html = (ws.final / "report.html").read_text()
    assert "quicklook_semantic.png" in html and "mIoU" in html
    assert (ws.final / "quicklook_semantic.png").stat().st_size > 1000
    assert not ws.partial.exists()


def test_projected_areas_are_pixel_count_times_pixel_area(scene_factory, tiny_bundle, tiny_pool,
                                                          tmp_path):
    image, _ = scene_factory("area-utm", size=(512, 512))  # 10 m pixels
    _, report = _run(image, tmp_path, tiny_bundle, tiny_pool, tile=256)
    for c in report["summary"]["classes"].values():  # ground area: UTM's central meridian
        # has point scale 0.9996, so a 100 m² map pixel covers 100 / 0.9996² m² of ground
        assert c["area_m2"] == pytest.approx(c["pixels"] * 100.0 / 0.9996**2, rel=1e-6)


def test_geographic_areas_follow_latitude(scene_factory, tiny_bundle, tiny_pool, tmp_path):
    from rasterio.transform import from_origin

    from segcore.geodesy import WGS84, geographic_row_areas

    res, n = 1e-4, 256
    per_pixel = {}
    for lat in (0.0, 60.0):
        top = lat + n * res / 2
        image, _ = scene_factory(f"area-lat{lat}", size=(n, n), crs="EPSG:4326",
                                 transform=from_origin(10.0, top, res, res))
        _, report = _run(image, tmp_path / str(lat), tiny_bundle, tiny_pool, tile=256)
        classes = report["summary"]["classes"].values()
        total = sum(c["area_m2"] for c in classes)
        exact = n * geographic_row_areas(top, -res, res, n, a=WGS84[0], rf=WGS84[1]).sum()
        assert total == pytest.approx(exact, rel=1e-9)
        per_pixel[lat] = total / sum(c["pixels"] for c in classes)
    # a 1e-4 degree pixel: ~123 m2 at the equator (WGS84); at 60 N slightly more than
    # cos(60) of that, because the ellipsoid is flatter there than a sphere
    assert per_pixel[0.0] == pytest.approx((6378137.0 * math.radians(res)) ** 2, rel=0.01)
    assert 0.5 < per_pixel[60.0] / per_pixel[0.0] < 0.51


def test_bands_select_input_bands(scene_factory, tiny_bundle, tiny_pool, tmp_path):
    image, _ = scene_factory("four-band", size=(300, 300), bands=4)
    ws, report = _run(image, tmp_path, tiny_bundle, tiny_pool, bands=[4, 2, 1], tile=256)
    group = open_store(ws.final / "scene.zarr")
    with rasterio.open(image) as src:
        np.testing.assert_array_equal(group[IMAGE][:], src.read([4, 2, 1]))
    assert report["bands"] == [4, 2, 1]
    assert group[VALID][:].all()


def test_failed_scene_leaves_finished_result_untouched(scene_factory, tiny_bundle, tiny_pool,
                                                       tmp_path):
    image, _ = scene_factory("stable", size=(300, 300))
    ws, _ = _run(image, tmp_path, tiny_bundle, tiny_pool, tile=256)
    before = {p.relative_to(ws.final): p.read_bytes() for p in ws.final.rglob("*") if p.is_file()}
    with pytest.raises(Exception):
        _run(image, tmp_path, tiny_bundle, tiny_pool, bands=[1, 2, 7])
    after = {p.relative_to(ws.final): p.read_bytes() for p in ws.final.rglob("*") if p.is_file()}
    assert after == before
    assert not ws.partial.exists()


def test_labels_on_another_grid_keep_the_segmentation(scene_factory, tiny_bundle, tiny_pool,
                                                      tmp_path):
    image, _ = scene_factory("lab-scene", size=(300, 300))
    _, other_labels = scene_factory("lab-other", size=(200, 300))
    ws, report = _run(image, tmp_path, tiny_bundle, tiny_pool, labels=other_labels, tile=256)
    error = report["metrics"]["error"]
    assert "share one grid" in error and str(other_labels) in error
    assert (ws.final / "semantic.tif").is_file()


def test_missing_crs_fails_with_a_clear_reason(scene_factory, tiny_bundle, tiny_pool, tmp_path):
    from segcore.errors import InputError

    src_path, _ = scene_factory("crs-src", size=(128, 128))
    bare = tmp_path / "no-crs.tif"
    with rasterio.open(src_path) as src:
        profile = {**src.profile}
        profile.pop("crs", None)
        profile["transform"] = rasterio.Affine.identity()
        with rasterio.open(bare, "w", **profile) as dst:
            dst.write(src.read())
    with pytest.raises(InputError, match="CRS") as info:
        _run(bare, tmp_path / "out", tiny_bundle, tiny_pool)
    assert str(bare) in str(info.value)
