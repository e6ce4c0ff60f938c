"""Do instances depend on the tile size? Tiled runs against a single-tile run, per tile size.

    .venv/bin/python bench/tile_invariance.py [--images astronaut coffee ... synthetic]
                                              [--tiles 64 96 128 256 512] [--size 576x704]
                                              [--model demo-satellite] [--out DIR]

Each image becomes a 3-band uint8 GeoTIFF (UTM 33N, 10 m pixels) of ``--size``:

- a scikit-image sample photo (the files shipped in its wheel, nothing is downloaded),
  scaled up where it is smaller than ``--size`` and cropped to it: real imagery the
  model was never trained on, so its predictions are scattered;
- ``synthetic``: a synthetic satellite scene with large buildings
  (:class:`~segcore.synthetic.spec.SatelliteSceneSpec` ``large_buildings``), many of
  them larger than the model's tile halo.

The scene is run once as a single tile (a tile at least the scene size: the reference)
and once per ``--tiles`` size, in this process (``executor="local"``, no Ray), through
:func:`pipeline.run.runner.run_scene`. Per run the table prints the panoptic quality of
the tiled ``panoptic`` map with the single-tile map as truth (PQ, SQ, RQ over all
classes, and PQ of the thing classes alone), the instances of both runs, the share of
pixels whose semantic class agrees, and the run's seconds. Above the table, per image:
the halo of the plan and how many single-tile instances are larger than it (bounding
box side), and for ``synthetic`` how many true buildings are.

Everything is written under a temporary directory (or ``--out``, kept). Seconds on a
loaded machine are noisy; the quality figures are not.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PHOTOS = ("astronaut", "coffee", "chelsea", "motorcycle_left", "rocket", "hubble_deep_field")
SYNTHETIC = "synthetic"
LARGE_SPEC = {"seed": 6, "cell_size": 128, "large_buildings": 0.8, "building_density": 4.0,
              "river_density": 0.0, "lake_cover": 0.03, "road_density": 1.5}
"""The synthetic scene's parameters besides its size."""


def photo(name: str) -> np.ndarray:
    """``(H, W, 3)`` uint8 pixels of a photo shipped in scikit-image's wheel."""
    import skimage.data
    from skimage.io import imread

    folder = Path(skimage.data.__file__).parent
    matches = sorted(folder.glob(f"{name}.*"))
    if not matches:
        raise SystemExit(f"--images: no photo {name!r} in {folder}; try one of {', '.join(PHOTOS)}")
    pixels = imread(matches[0])
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    return np.ascontiguousarray(pixels[..., :3].astype(np.uint8))


def fit(pixels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Scale ``pixels`` up (bilinear) until it covers ``shape``, then crop its centre."""
    from skimage.transform import resize

    h, w = pixels.shape[:2]
    scale = max(shape[0] / h, shape[1] / w, 1.0)
    if scale > 1.0:
        size = (int(np.ceil(h * scale)), int(np.ceil(w * scale)))
        pixels = (resize(pixels, size, order=1, preserve_range=True) + 0.5).astype(np.uint8)
        h, w = size
    y, x = (h - shape[0]) // 2, (w - shape[1]) // 2
    return np.ascontiguousarray(pixels[y : y + shape[0], x : x + shape[1]])


def write_geotiff(path: Path, pixels: np.ndarray) -> Path:
    """``(H, W, 3)`` uint8 as a 3-band GeoTIFF in UTM 33N with 10 m pixels."""
    import rasterio
    from rasterio.transform import Affine

    profile = {"driver": "GTiff", "height": pixels.shape[0], "width": pixels.shape[1],
               "count": 3, "dtype": "uint8", "crs": "EPSG:32633",
               "transform": Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5200000.0)}
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(pixels.transpose(2, 0, 1))
    return path


def make_scene(name: str, folder: Path, shape: tuple[int, int]) -> tuple[Path, Path | None]:
    """The image (and, for ``synthetic``, its label file) of ``name`` at ``shape``."""
    if name != SYNTHETIC:
        return write_geotiff(folder / f"{name}.tif", fit(photo(name), shape)), None
    from pipeline.synthdata.satellite import write_scene
    from segcore.synthetic.spec import SatelliteSceneSpec

    spec = SatelliteSceneSpec(height=shape[0], width=shape[1], **LARGE_SPEC)
    files = write_scene(folder / f"{name}.tif", spec=spec, label_path=folder / f"{name}_labels.tif")
    return files.image, files.labels


@dataclass(frozen=True)
class Run:
    """One run's panoptic and semantic maps, segment categories, halo and seconds."""

    panoptic: np.ndarray
    semantic: np.ndarray
    categories: dict[int, int]
    things: int
    halo: int
    tiles: int
    seconds: float


def run_once(image: Path, out: Path, tile: int, bundle, pool) -> Run:
    """Run ``image`` with tile cores of ``tile`` px in this process; read its outputs."""
    from pipeline.formats import Scene
    from pipeline.options import RunOptions
    from pipeline.run import Workspace, run_scene
    from pipeline.store import PANOPTIC, SEMANTIC, open_store

    ws = Workspace(Scene(image, image.stem, "geotiff"), out)
    start = time.perf_counter()
    result = run_scene(ws, bundle, RunOptions(tile=tile, executor="local", resume=False), pool)
    seconds = time.perf_counter() - start
    group = open_store(ws.final / "scene.zarr")
    segments = json.loads((ws.final / "segments.json").read_text())["segments_info"]
    tiles = result.report.to_json()["tiles"]
    return Run(np.asarray(group[PANOPTIC][...]), np.asarray(group[SEMANTIC][...]),
               {int(s["id"]): int(s["category_id"]) for s in segments},
               sum(1 for s in segments if s["isthing"]), int(tiles["halo"]), int(tiles["total"]),
               seconds)


def quality(truth: Run, tiled: Run, classes: dict[int, str], thing_ids: list[int]) -> dict:
    """PQ, SQ, RQ (all classes), PQ of the things, and semantic agreement of ``tiled``."""
    from segcore.panoptic.quality import PanopticAccumulator, panoptic_quality

    acc = PanopticAccumulator()
    acc.add(tiled.panoptic, truth.panoptic)
    scores = panoptic_quality(acc, tiled.categories, truth.categories, classes,
                              thing_ids=thing_ids)
    return {"pq": scores.pq, "sq": scores.sq, "rq": scores.rq, "pq_things": scores.things["pq"],
            "semantic": float(np.mean(tiled.semantic == truth.semantic))}


def larger_than(ids: np.ndarray, halo: int) -> int:
    """Segments of ``ids`` (0 = none) whose bounding box is wider or taller than ``halo``."""
    from scipy import ndimage

    boxes = ndimage.find_objects(ids.astype(np.int64))
    return sum(1 for b in boxes if b is not None
               and max(b[0].stop - b[0].start, b[1].stop - b[1].start) > halo)


def true_buildings(labels: Path) -> np.ndarray:
    """Instance band of a synthetic label file."""
    import rasterio

    with rasterio.open(labels) as ds:
        return ds.read(2)


def _fmt(value: float | None) -> str:
    return "  -  " if value is None else f"{value:.3f}"


def bench(args: argparse.Namespace, folder: Path) -> None:
    from pipeline.bundle import load_bundle
    from pipeline.inference.local_pool import LocalPool

    bundle = load_bundle(args.model)
    classes = {c.id: c.name for c in bundle.spec.classes}
    thing_ids = [c.id for c in bundle.spec.classes if c.isthing]
    pool = LocalPool(str(bundle.path), batch_size=4)
    rows = []
    try:
        for name in args.images:
            image, labels = make_scene(name, folder, args.size)
            single = run_once(image, folder / f"{name}-single", max(args.size), bundle, pool)
            things = single.panoptic * np.isin(single.panoptic, [
                i for i, c in single.categories.items() if c in thing_ids])
            note = (f"{name}: {args.size[0]}x{args.size[1]}, halo {single.halo}, single tile "
                    f"{single.things} instances, {larger_than(things, single.halo)} larger "
                    f"than the halo")
            if labels is not None:
                truth = true_buildings(labels)
                note += (f"; truth {np.unique(truth[truth > 0]).size} buildings, "
                         f"{larger_than(truth, single.halo)} larger than the halo")
            print(note, f"({single.seconds:.1f} s)", flush=True)
            for tile in args.tiles:
                tiled = run_once(image, folder / f"{name}-{tile}", tile, bundle, pool)
                rows.append((name, tile, tiled.tiles, quality(single, tiled, classes, thing_ids),
                             single.things, tiled.things, tiled.seconds))
    finally:
        pool.shutdown()
    print(f"\n{'image':<18}{'tile':>5}{'tiles':>6}{'PQ':>7}{'SQ':>7}{'RQ':>7}{'PQth':>7}"
          f"{'inst 1/tiled':>14}{'semantic':>10}{'s':>7}")
    for name, tile, tiles, q, n1, n2, seconds in rows:
        print(f"{name:<18}{tile:>5}{tiles:>6}{_fmt(q['pq']):>7}{_fmt(q['sq']):>7}"
              f"{_fmt(q['rq']):>7}{_fmt(q['pq_things']):>7}{f'{n1}/{n2}':>14}"
              f"{q['semantic']:>10.5f}{seconds:>7.1f}")


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 576x704, got {text!r}") from None
    if min(h, w) < 64:
        raise argparse.ArgumentTypeError(f"expected sides of at least 64 px, got {text!r}")
    return h, w


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Panoptic quality of tiled runs against a single-tile run, per tile size "
        "(real photos from scikit-image and a synthetic scene with large buildings).")
    parser.add_argument("--images", nargs="+", default=[*PHOTOS[:3], SYNTHETIC],
                        help=f"photos ({', '.join(PHOTOS)}) and/or {SYNTHETIC}")
    parser.add_argument("--tiles", nargs="+", type=int, default=[64, 96, 128, 256, 512])
    parser.add_argument("--size", type=_size, default=(576, 704), help="scene HxW in pixels")
    parser.add_argument("--model", default="demo-satellite", help="bundle name or directory")
    parser.add_argument("--out", type=Path, help="keep scenes and runs here (default: a "
                        "temporary directory, removed)")
    args = parser.parse_args(argv)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        bench(args, args.out)
        return
    with tempfile.TemporaryDirectory(prefix="tile-invariance-") as tmp:
        bench(args, Path(tmp))


if __name__ == "__main__":
    main()
