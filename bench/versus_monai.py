"""segpipe versus MONAI's sliding_window_inference on a scene that fits in memory.

    .venv/bin/python bench/versus_monai.py [--size 2048] [--tile 512] [--model demo-satellite]

MONAI: the whole scene is read and normalised into one tensor first (not timed), then
``monai.inferers.sliding_window_inference`` runs the same network over windows of
``tile + 2 * halo`` pixels with ``overlap = 2 * halo / window`` (so window origins fall
on the same tile grid), constant blending, 4 windows per batch, all cores in this process.
Its class map is the argmax of the blended semantic logits.

segpipe: ``run_scene`` from the GeoTIFF on disk (ingest, 2 model actors, stitching,
panoptic fusion, three COG exports, report: I/O included), with the same tile and halo.
segpipe does not blend: each window contributes only its core, and with the halo of half
the receptive field that equals whole-scene inference.

Prints both times, the ratio segpipe / MONAI (end to end and inference stage only) and
the share of valid pixels whose class agrees.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def monai_run(scene: Path, bundle, tile: int, halo: int):
    import numpy as np
    import torch
    from monai.inferers import sliding_window_inference

    from pipeline.inference.predictor import TilePredictor
    from pipeline.io.geotiff import GeoTiffReader, open_raster

    info = open_raster(scene)
    predictor = TilePredictor(bundle)
    with GeoTiffReader(scene, bands=bundle.default_bands(info.count)) as reader:
        pixels, valid = reader.read_with_valid((slice(0, info.height), slice(0, info.width)))
    x = torch.from_numpy(predictor.normalise(pixels, valid))[None]
    window = tile + 2 * halo
    torch.set_num_threads(os.cpu_count() or 1)

    def semantic(t: torch.Tensor) -> torch.Tensor:
        out = predictor.net(t)
        return out["semantic"] if isinstance(out, dict) else out

    start = time.perf_counter()
    with torch.inference_mode():
        logits = sliding_window_inference(x, roi_size=(window, window), sw_batch_size=4,
                                          predictor=semantic, overlap=2 * halo / window,
                                          mode="constant", padding_mode="reflect")
    seconds = time.perf_counter() - start
    labels = logits[0].argmax(0).numpy().astype(np.uint8)
    return seconds, labels, valid


def ours_run(scene: Path, bundle, options):
    import ray

    from pipeline.inference.pool import PoolConfig, WorkerPool
    from pipeline.run import Workspace, run_scene
    from pipeline.formats import Scene
    from pipeline.store import SEMANTIC, open_store

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    pool = WorkerPool(str(bundle.path), PoolConfig(workers=os.cpu_count() or 1,
                                                   batch_size=options.batch_size))
    pool.describe()
    with tempfile.TemporaryDirectory(dir=ROOT / ".bench") as out:
        ws = Workspace(Scene(scene, scene.stem, "geotiff"), Path(out))
        start = time.perf_counter()
        report = run_scene(ws, bundle, options, pool).report.to_json()
        seconds = time.perf_counter() - start
        labels = open_store(ws.final / "scene.zarr")[SEMANTIC][:]
    pool.shutdown()
    ray.shutdown()
    return seconds, report, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--model", default="demo-satellite")
    args = parser.parse_args()
    from memory import bench_setup
    from pipeline.io.geotiff import open_raster
    from pipeline.run.plan import plan_tiles

    scene, bundle, options = bench_setup(args.size, args.model, args.tile)
    halo = plan_tiles(open_raster(scene).shape, bundle, options).halo
    m_seconds, m_labels, valid = monai_run(scene, bundle, args.tile, halo)
    print(f"MONAI sliding_window_inference ({args.size}^2, window {args.tile + 2 * halo}, "
          f"tensor in memory): {m_seconds:.2f} s", flush=True)
    o_seconds, report, o_labels = ours_run(scene, bundle, options)
    infer = report["timings_s"]["infer"]
    print(f"segpipe run_scene (I/O, instances, panoptic, exports included): {o_seconds:.2f} s "
          f"(inference stage {infer:.2f} s)", flush=True)
    agree = float((m_labels == o_labels)[valid].mean())
    print(f"time ratio segpipe / MONAI: end to end {o_seconds / m_seconds:.3f}, "
          f"inference stage {infer / m_seconds:.3f}")
    print(f"class agreement on valid pixels: {100 * agree:.4f} %")


if __name__ == "__main__":
    main()
