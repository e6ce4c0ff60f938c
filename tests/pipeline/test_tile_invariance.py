"""Instances do not depend on the tiling: tiled runs equal a single-tile run (PQ >= 0.99).

Two scenes run with the ``demo-satellite`` bundle through :func:`pipeline.run.run_scene`
in this process (no Ray), once as a single tile (the truth) and once per tile size:

- real imagery: scikit-image's astronaut photo (shipped in its wheel), scaled to
  576 x 704 and written as a GeoTIFF in UTM 33N; the model was never trained on such
  pixels, so its instances are scattered and most are larger than the tile halo;
- a synthetic scene with large buildings (``SatelliteSceneSpec.large_buildings``), most
  of them larger than the halo.

``bench/tile_invariance.py`` prints the same comparison for more photos and tile sizes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine
from scipy import ndimage

from pipeline.formats import Scene
from pipeline.options import RunOptions
from pipeline.run import Workspace, run_scene
from pipeline.store import PANOPTIC, SEMANTIC, open_store
from segcore.panoptic.quality import PanopticAccumulator, panoptic_quality

SHAPE = (576, 704)
TILES = (64, 128, 256, 512)
LARGE = {"seed": 6, "cell_size": 128, "large_buildings": 0.8, "building_density": 4.0,
         "river_density": 0.0, "lake_cover": 0.03, "road_density": 1.5}


def _astronaut(path: Path) -> Path:
    import skimage.data
    from skimage.io import imread
    from skimage.transform import resize

    pixels = imread(Path(skimage.data.__file__).parent / "astronaut.png")[..., :3]
    scale = max(SHAPE[0] / pixels.shape[0], SHAPE[1] / pixels.shape[1])
    size = (int(np.ceil(pixels.shape[0] * scale)), int(np.ceil(pixels.shape[1] * scale)))
    pixels = (resize(pixels, size, order=1, preserve_range=True) + 0.5).astype(np.uint8)
    y, x = (size[0] - SHAPE[0]) // 2, (size[1] - SHAPE[1]) // 2
    pixels = np.ascontiguousarray(pixels[y : y + SHAPE[0], x : x + SHAPE[1]])
    with rasterio.open(path, "w", driver="GTiff", height=SHAPE[0], width=SHAPE[1], count=3,
                       dtype="uint8", crs="EPSG:32633",
                       transform=Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5200000.0)) as ds:
        ds.write(pixels.transpose(2, 0, 1))
    return path


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> dict[str, tuple[Path, Path | None]]:
    from pipeline.synthdata.satellite import write_scene
    from segcore.synthetic.spec import SatelliteSceneSpec

    root = tmp_path_factory.mktemp("tile-invariance")
    spec = SatelliteSceneSpec(height=SHAPE[0], width=SHAPE[1], **LARGE)
    files = write_scene(root / "large.tif", spec=spec, label_path=root / "large_labels.tif")
    return {"astronaut": (_astronaut(root / "astronaut.tif"), None),
            "large-buildings": (files.image, files.labels)}


@pytest.fixture(scope="module")
def local_pool(demo_bundle):
    from pipeline.inference.local_pool import LocalPool

    pool = LocalPool(str(demo_bundle.path), batch_size=4, cores=2)
    yield pool
    pool.shutdown()


def _run(image: Path, out: Path, tile: int, bundle, pool) -> dict:
    ws = Workspace(Scene(image, image.stem, "geotiff"), out)
    report = run_scene(ws, bundle, RunOptions(tile=tile, executor="local"), pool).report
    group = open_store(ws.final / "scene.zarr")
    segments = json.loads((ws.final / "segments.json").read_text())["segments_info"]
    return {"panoptic": np.asarray(group[PANOPTIC][...]),
            "semantic": np.asarray(group[SEMANTIC][...]),
            "categories": {s["id"]: s["category_id"] for s in segments},
            "things": [s["id"] for s in segments if s["isthing"]],
            "tiles": report.to_json()["tiles"]}


@pytest.fixture(scope="module")
def single_tile(scenes, demo_bundle, local_pool, tmp_path_factory) -> dict[str, dict]:
    """The single-tile run of each scene (tile = the scene's longer side), made once."""
    out = tmp_path_factory.mktemp("single")
    return {name: _run(image, out, max(SHAPE), demo_bundle, local_pool)
            for name, (image, _) in scenes.items()}


def _larger_than(ids: np.ndarray, halo: int) -> int:
    """Segments whose bounding box is taller or wider than ``halo``."""
    boxes = ndimage.find_objects(ids.astype(np.int64))
    return sum(1 for b in boxes if b is not None
               and max(b[0].stop - b[0].start, b[1].stop - b[1].start) > halo)


def test_the_reference_runs_are_not_vacuous(scenes, single_tile):
    for name, ref in single_tile.items():
        halo = ref["tiles"]["halo"]
        things = np.where(np.isin(ref["panoptic"], ref["things"]), ref["panoptic"], 0)
        big = _larger_than(things, halo)
        print(f"{name}: single tile {len(ref['things'])} instances, {big} larger than the "
              f"halo {halo}")
        assert ref["tiles"]["total"] == 1 and halo > 0
        assert len(ref["things"]) >= 5
        assert big >= 3
    _, labels = scenes["large-buildings"]
    with rasterio.open(labels) as ds:
        truth = ds.read(2)
    halo = single_tile["large-buildings"]["tiles"]["halo"]
    assert _larger_than(truth, halo) >= 5, "the generator made buildings larger than the halo"


@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("name", ["astronaut", "large-buildings"])
def test_tiled_instances_equal_the_single_tile_ones(name, tile, scenes, single_tile, demo_bundle,
                                                    local_pool, tmp_path, record_property):
    truth = single_tile[name]
    tiled = _run(scenes[name][0], tmp_path, tile, demo_bundle, local_pool)
    assert tiled["tiles"]["total"] > 1, "the scene is really tiled"
    acc = PanopticAccumulator()
    acc.add(tiled["panoptic"], truth["panoptic"])
    classes = {c.id: c.name for c in demo_bundle.spec.classes}
    things = [c.id for c in demo_bundle.spec.classes if c.isthing]
    scores = panoptic_quality(acc, tiled["categories"], truth["categories"], classes,
                              thing_ids=things)
    agreement = float(np.mean(tiled["semantic"] == truth["semantic"]))
    counts = (len(truth["things"]), len(tiled["things"]))
    print(f"{name} tile {tile}: PQ {scores.pq:.4f} (things {scores.things['pq']:.4f}), "
          f"instances single/tiled {counts[0]}/{counts[1]}, semantic agreement {agreement:.5f}")
    record_property("instances_single_tiled", counts)
    record_property("pq", scores.pq)
    assert agreement >= 0.999
    assert scores.pq >= 0.99
    assert scores.things["pq"] >= 0.99
