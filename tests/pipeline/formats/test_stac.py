"""STAC Items in and out: band selection by common name, mixed resolutions read onto the
finest grid window by window, missing assets, catalogs and ItemCollections, and a real
``segpipe run`` writing ``item.json`` and ``catalog.json`` that pystac reads back.

Every Item is built with pystac around GeoTIFFs the tests write with rasterio. pystac's
``validate()`` needs the extension schemas from the network, which this machine cannot
reach: the documents are validated against the core STAC schemas pystac ships (offline)
and the extension fields are checked through pystac's extension classes.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pystac
import pytest
from pystac.extensions.classification import ClassificationExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import RasterExtension
from pystac.validation import validate_dict
from rasterio.transform import Affine
from typer.testing import CliRunner

from pipeline.discovery import discover
from pipeline.io.stac_items import band_names, load_items, select_bands
from pipeline.io.stac_raster import StacRasterReader, band_grid
from pipeline.options import parse_bands
from segcore.errors import InputError
from tests.pipeline.formats.cases import write_band, write_stac_item

TEN_M = Affine(10.0, 0.0, 600_000.0, 0.0, -10.0, 5_800_000.0)
SHAPE = (96, 128)  # the 10 m grid


def _bands(folder: Path, stem: str, seed: int) -> dict[str, np.ndarray]:
    """10 m red and green, a 20 m blue and a 20 m nir band (uint16, values >= 1)."""
    rng = np.random.default_rng(seed)
    fine = {n: rng.integers(1, 3000, SHAPE).astype(np.uint16) for n in ("red", "green")}
    coarse = {n: rng.integers(1, 3000, (SHAPE[0] // 2, SHAPE[1] // 2)).astype(np.uint16)
              for n in ("blue", "nir")}
    for name, data in {**fine, **coarse}.items():
        transform = TEN_M if name in fine else TEN_M @ Affine.scale(2)
        write_band(folder / f"{stem}_{name}.tif", data, transform=transform, crs="EPSG:32632")
    return {**fine, **coarse}


def _item(folder: Path, stem: str, seed: int = 0) -> tuple[Path, dict[str, np.ndarray]]:
    data = _bands(folder, stem, seed)
    keys = {"red": "B04", "green": "B03", "blue": "B02", "nir": "B8A"}
    path = write_stac_item(folder / f"{stem}.json", stem,
                           {keys[n]: (f"{stem}_{n}.tif", n) for n in data})
    return path, data


def test_bands_are_chosen_by_common_name_and_a_missing_name_lists_the_names(tmp_path):
    path, _ = _item(tmp_path, "s2")
    (item,) = load_items(path)
    assert band_names(item) == ["red", "green", "blue", "nir"]
    chosen = select_bands(item, ["NIR", "red"], source=str(path))
    assert [(b.name, Path(b.href).name, b.index) for b in chosen] == [
        ("nir", "s2_nir.tif", 1), ("red", "s2_red.tif", 1)]
    assert Path(chosen[0].href).is_absolute()  # resolved relative to the Item
    assert [b.name for b in select_bands(item, [3, 1], source=str(path))] == ["blue", "red"]
    with pytest.raises(InputError) as err:
        select_bands(item, ["red", "swir16"], source=str(path))
    message = str(err.value)
    assert "swir16" in message and "red, green, blue, nir" in message and "\n" not in message
    assert parse_bands("red,green,blue") == ["red", "green", "blue"]
    assert parse_bands("4,3,2") == [4, 3, 2]


def test_bands_at_other_resolutions_are_read_onto_the_finest_grid_window_by_window(tmp_path):
    path, data = _item(tmp_path, "mixed")
    (item,) = load_items(path)
    bands = band_grid(select_bands(item, ["blue", "red", "nir"], source=str(path)),
                      item_id=item.id)
    assert bands.grid.shape == SHAPE and bands.grid.transform == tuple(TEN_M)[:6]
    assert bands.resampled == ("blue", "nir")
    up = {n: np.repeat(np.repeat(data[n], 2, axis=0), 2, axis=1) for n in ("blue", "nir")}
    reader = pickle.loads(pickle.dumps(StacRasterReader(bands)))  # as a block task gets it
    with reader:
        for rows, cols in [(slice(0, 96), slice(0, 128)), (slice(13, 47), slice(31, 90))]:
            pixels, valid = reader.read_with_valid((rows, cols))
            assert pixels.shape == (3, rows.stop - rows.start, cols.stop - cols.start)
            np.testing.assert_array_equal(pixels[0], up["blue"][rows, cols])
            np.testing.assert_array_equal(pixels[1], data["red"][rows, cols])
            np.testing.assert_array_equal(pixels[2], up["nir"][rows, cols])
            assert valid.all()
    # only the 10 m band is read directly; the 20 m ones go through a warped view
    assert [type(s).__name__ for s in reader._sources] == ["WarpedVRT", "DatasetReader",
                                                           "WarpedVRT"]


def test_a_missing_asset_is_one_line_naming_its_href(tmp_path):
    path, _ = _item(tmp_path, "gone")
    (tmp_path / "gone_green.tif").unlink()
    (item,) = load_items(path)
    with pytest.raises(InputError) as err:
        band_grid(select_bands(item, ["red", "green", "blue"], source=str(path)),
                  item_id=item.id)
    assert str(tmp_path / "gone_green.tif") in str(err.value)
    assert "\n" not in str(err.value) and "green" in str(err.value)


def test_catalogs_and_item_collections_give_one_scene_per_item(tmp_path):
    folder = tmp_path / "cat"
    folder.mkdir()
    catalog = pystac.Catalog("tiles", "two tiles")
    for stem in ("tile-a", "tile b"):
        path, _ = _item(folder, stem.replace(" ", "_"))
        item = pystac.Item.from_file(str(path))
        item.id = stem
        catalog.add_item(item)
    catalog.normalize_hrefs(str(tmp_path / "stac"))
    for item in catalog.get_items():  # the assets stay where the tests wrote them
        for asset in item.assets.values():
            asset.href = str(folder / Path(asset.href).name)
    catalog.save(pystac.CatalogType.SELF_CONTAINED)
    scenes = discover([tmp_path / "stac" / "catalog.json"])
    assert [(s.scene_id, s.kind) for s in scenes] == [("tile-a", "stac"), ("tile_b", "stac")]
    assert all(s.path.name == f"{s.path.parent.name}.json" for s in scenes)  # the Item files
    # a directory: the catalog and its Item files give each Item once, and the band
    # files the Items read are not GeoTIFF scenes of their own
    shutil.copytree(folder, tmp_path / "stac" / "bands",
                    ignore=shutil.ignore_patterns("*.json"))
    for item in catalog.get_items():
        for asset in item.assets.values():
            asset.href = str(tmp_path / "stac" / "bands" / Path(asset.href).name)
    catalog.save(pystac.CatalogType.SELF_CONTAINED)
    (tmp_path / "stac" / "bands" / "other.tif").write_bytes((folder / "tile-a_red.tif")
                                                            .read_bytes())
    found = discover([tmp_path / "stac"])
    assert sorted((s.scene_id, s.kind) for s in found) == [
        ("bands__other", "geotiff"), ("tile-a", "stac"), ("tile_b", "stac")]
    collection = pystac.ItemCollection(list(catalog.get_items()))
    coll_path = tmp_path / "items.json"
    coll_path.write_text(json.dumps(collection.to_dict(transform_hrefs=False)))
    scenes = discover([coll_path])
    assert [(s.scene_id, s.path) for s in scenes] == [("tile-a", scenes[0].path),
                                                      ("tile_b", scenes[1].path)]


def _core_valid(doc: dict, href: Path) -> None:
    """The core STAC schema (shipped with pystac: no network)."""
    assert validate_dict(doc, extensions=[], href=str(href))


def test_segpipe_run_writes_item_json_and_catalog_json(tmp_path):
    from flows.cli import app

    good, _ = _item(tmp_path, "s2-good", seed=1)
    bad, _ = _item(tmp_path, "s2-bad", seed=2)
    (tmp_path / "s2-bad_blue.tif").unlink()
    # an ItemCollection: two Items in one file (self links to the good Item's file)
    inline = []
    for item_id in ("c1", "c2"):
        item = pystac.Item.from_file(str(good))
        item.id = item_id
        inline.append(item)
    collection = tmp_path / "two.json"
    collection.write_text(json.dumps(pystac.ItemCollection(inline).to_dict()))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(good), str(bad), str(collection),
                                      "--model", "demo-satellite", "--bands", "red,green,blue",
                                      "--executor", "local", "--out", str(out)])
    assert result.exit_code == 1, result.output  # one Item failed, the others finished
    rows = {r["scene_id"]: r for r in json.loads((out / "batch.json").read_text())["scenes"]}
    assert rows["s2-good"]["status"] == "ok" and rows["s2-bad"]["status"] == "failed"
    assert rows["c1"]["status"] == rows["c2"]["status"] == "ok"
    same = [_read_cog(out / sid / "semantic.tif")[1] for sid in ("s2-good", "c2")]
    np.testing.assert_array_equal(same[0], same[1])  # the same bands, from the collection
    reason = rows["s2-bad"]["reason"]
    assert str(tmp_path / "s2-bad_blue.tif") in reason and "\n" not in reason
    report = json.loads((out / "s2-good" / "report.json").read_text())
    assert report["kind"] == "stac" and report["shape"] == list(SHAPE)
    assert report["bands"] == ["red", "green", "blue"]

    catalog = pystac.Catalog.from_file(str(out / "catalog.json"))
    _core_valid(json.loads((out / "catalog.json").read_text()), out / "catalog.json")
    assert sorted(i.id for i in catalog.get_items()) == ["c1", "c2", "s2-good"]
    item = next(i for i in catalog.get_items() if i.id == "s2-good")
    _core_valid(json.loads((out / "s2-good" / "item.json").read_text()),
                out / "s2-good" / "item.json")
    for asset in item.assets.values():  # every asset is a file of the scene
        assert Path(asset.get_absolute_href()).is_file(), asset.href
    roles = {k: a.roles for k, a in item.assets.items()}
    assert roles["semantic"] == ["data"] and roles["report"] == ["metadata"]
    assert "overview" in roles["report_html"] and "visual" in roles["quicklook_image"]
    proj = ProjectionExtension.ext(item)
    assert proj.code == "EPSG:32632" and proj.shape == list(SHAPE)
    assert proj.transform == list(TEN_M)[:6]
    classes = ClassificationExtension.ext(item.assets["semantic"]).classes
    assert [c.value for c in classes] == list(range(5)) and classes[0].name == "background"
    assert RasterExtension.ext(item.assets["semantic"]).bands[0].nodata == 255
    (source,) = item.get_links("derived_from")
    assert Path(source.get_absolute_href()) == good
    assert item.properties["processing:software"]["segpipe"]
    assert "blue resampled onto the grid of the finest band" in \
        item.properties["processing:lineage"]
    assert item.datetime == pystac.Item.from_file(str(good)).datetime
    grid, labels = _read_cog(out / "s2-good" / "semantic.tif")
    assert grid == (SHAPE, tuple(TEN_M)[:6]) and labels.max() < 5


def _read_cog(path: Path) -> tuple[tuple, np.ndarray]:
    """A label COG's ``(shape, transform)`` and pixels."""
    import rasterio

    with rasterio.open(path) as src:
        return ((src.height, src.width), tuple(src.transform)[:6]), src.read(1)


def _ingest_named(tmp_path: Path, demo_bundle, stem: str, seed: int):
    """``_item``'s Item ingested into ``tmp_path/scene.zarr`` for the demo model with its
    input bands named (nir, red, green); returns the ingested scene and the band data."""
    from dataclasses import replace

    from pipeline.bundle import InputSpec
    from pipeline.formats.stac import STAC
    from pipeline.options import RunOptions

    path, data = _item(tmp_path, stem, seed=seed)
    spec = demo_bundle.spec
    named = InputSpec(**{**spec.input.model_dump(), "bands": ["nir", "red", "green"]})
    bundle = replace(demo_bundle, spec=spec.model_copy(update={"input": named}))
    scene = STAC.ingest(STAC.open(path), tmp_path / "scene.zarr", bundle=bundle,
                        options=RunOptions(image_chunk=32), attrs={"scene_id": stem},
                        copy=True)
    return scene, data


def test_the_bundles_input_bands_may_be_names_and_ingest_resamples_them(tmp_path, demo_bundle):
    from pipeline.store import IMAGE, VALID, open_store

    scene, data = _ingest_named(tmp_path, demo_bundle, "named", seed=3)
    assert scene.bands == ("nir", "red", "green") and scene.resampled == ("nir",)
    group = open_store(tmp_path / "scene.zarr")
    image = group[IMAGE][:]
    np.testing.assert_array_equal(image[0], np.repeat(np.repeat(data["nir"], 2, 0), 2, 1))
    np.testing.assert_array_equal(image[1:], np.stack([data["red"], data["green"]]))
    assert group[VALID][:].all() and group.attrs["bands"] == ["nir", "red", "green"]
    assert group.attrs["stac"]["item"] == "named"


def test_item_json_names_the_label_cogs_before_the_export_has_written_them(tmp_path,
                                                                           demo_bundle):
    """The quicklooks (which write item.json) run beside the COG export: the Item lists
    every label array's COG whether or not the export has finished writing it yet."""
    from pipeline.formats.stac import STAC
    from pipeline.options import RunOptions
    from pipeline.store import SEMANTIC, create_label_array, open_store

    scene, _ = _ingest_named(tmp_path, demo_bundle, "early", seed=4)
    spec = demo_bundle.spec
    group = open_store(tmp_path / "scene.zarr", mode="r+")
    semantic = create_label_array(group, SEMANTIC, dtype=np.dtype("uint8"), fill_value=255,
                                  chunks=(32, 32))
    semantic[:] = 1
    out = tmp_path / "out"
    out.mkdir()
    STAC.quicklooks(group, semantic, scene, colors=spec.colors, out_dir=out,
                    options=RunOptions())
    assert not (out / "semantic.tif").exists()  # the export has not written it yet
    item = pystac.Item.from_dict(json.loads((out / "item.json").read_text()))
    assert item.assets["semantic"].href == "./semantic.tif"
    assert item.assets["semantic"].roles == ["data"]
    assert "instance" not in item.assets  # a semantic-only store: no instance COG


def test_band_names_on_a_geotiff_are_refused_in_one_line(tmp_path):
    from pipeline.formats.geotiff import check_bands
    from pipeline.io.geotiff import open_raster

    info = open_raster(write_band(tmp_path / "x.tif", np.ones((3, 8, 8), np.uint8),
                                  transform=TEN_M))
    with pytest.raises(InputError, match="takes 1-based band numbers"):
        check_bands(info, ["red", "green", "blue"], 3)


def test_stac_1_1_bands_and_the_size_the_executor_sees(tmp_path):
    from pipeline.executor import total_pixels
    from pipeline.formats.stac import STAC

    path, _ = _item(tmp_path, "v11")
    doc = json.loads(path.read_text())
    for asset in doc["assets"].values():  # STAC 1.1: bands with eo:common_name
        asset["bands"] = [{"name": b["name"], "eo:common_name": b["common_name"]}
                          for b in asset.pop("eo:bands")]
    path.write_text(json.dumps(doc))
    (item,) = load_items(path)
    assert band_names(item) == ["red", "green", "blue", "nir"]
    assert STAC.open(path).shape == SHAPE  # the largest band file
    assert total_pixels(discover([path])) == SHAPE[0] * SHAPE[1]
