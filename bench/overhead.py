"""Pipeline overhead and worker scaling: tiles/s of segpipe versus the bare model.

    .venv/bin/python bench/overhead.py [--size 4096] [--tile 512] [--model demo-satellite]

1. **Bare model**: the scene's tile windows (tile + halo, exactly the windows the pipeline
   feeds) are read into memory first; then only the model's forward passes are timed, in
   this process with all cores (torch threads = CPU count), batches of same-shape windows;
   and again with one thread, times the core count: the ideal data-parallel figure with
   no overhead at all (the stricter reference). The network runs as the bundle loads it
   (PyTorch's default layout: the acceptance reference), and once more in the channels-last
   layout segpipe's model workers use on the CPU for segcore's own 2-D architectures
   (``pipeline.inference.predictor.channels_last_on_cpu``), with the ratios against both.
2. **Pipeline**: ``run_scene`` in the same process with a local Ray and 2 model actors
   (one per core): ingest, inference (actors read Zarr, run the model, group instances,
   write Zarr), stitching, panoptic fusion, exports, report. Tiles/s is reported for the
   inference stage and end to end.
3. **Scaling**: the inference stage with 1 actor (2 threads) and with 2 actors (1 thread
   each).

Prints tiles/s for each and the ratios pipeline / bare (the acceptance figure is the ratio
for 2 workers on 512 x 512 tiles).
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


def bare_tiles_per_second(scene: Path, bundle, options, repeats: int = 1,
                          threads: int | None = None,
                          channels_last: bool = False) -> tuple[float, int]:
    import torch

    from pipeline.inference.predictor import TilePredictor
    from pipeline.io.geotiff import GeoTiffReader, open_raster
    from pipeline.run.plan import plan_tiles

    info = open_raster(scene)
    plan = plan_tiles(info.shape, bundle, options)
    predictor = TilePredictor(bundle, channels_last=channels_last)
    bands = bundle.default_bands(info.count)
    windows = []
    with GeoTiffReader(scene, bands=bands) as reader:
        for tile in plan.grid:
            rows, cols = tile.halo.slices
            pixels, valid = reader.read_with_valid((rows, cols))
            windows.append(predictor.normalise(pixels, valid))
    torch.set_num_threads(threads or os.cpu_count() or 1)
    groups: dict[tuple, list] = {}
    for w in windows:
        groups.setdefault(w.shape, []).append(w)
    size = options.batch_size
    start = time.perf_counter()
    for _ in range(repeats):
        for same in groups.values():
            for i in range(0, len(same), size):
                predictor.outputs(same[i : i + size])
    seconds = (time.perf_counter() - start) / repeats
    return len(windows) / seconds, len(windows)


def pipeline_run(scene: Path, bundle, options, workers: int) -> dict:
    from pipeline.inference.pool import PoolConfig, WorkerPool
    from pipeline.run import Workspace, run_scene
    from pipeline.formats import Scene

    pool = WorkerPool(str(bundle.path), PoolConfig(workers=workers, batch_size=options.batch_size))
    pool.describe()
    try:
        with tempfile.TemporaryDirectory(dir=ROOT / ".bench") as out:
            ws = Workspace(Scene(scene, scene.stem, "geotiff"), Path(out))
            start = time.perf_counter()
            report = run_scene(ws, bundle, options, pool).report.to_json()
            total = time.perf_counter() - start
    finally:
        pool.shutdown()
        time.sleep(2)  # let Ray release the actors' CPUs
    tiles = report["tiles"]["total"]
    return {"tiles": tiles, "total_s": total, "infer_s": report["timings_s"]["infer"],
            "end_to_end": tiles / total, "inference": tiles / report["timings_s"]["infer"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--model", default="demo-satellite")
    args = parser.parse_args()
    import ray

    from memory import bench_setup

    scene, bundle, options = bench_setup(args.size, args.model, args.tile)
    bare, n = bare_tiles_per_second(scene, bundle, options)
    print(f"bare model forward, {os.cpu_count()} threads: {bare:6.2f} tiles/s "
          f"({n} windows of {args.tile} px + halo)", flush=True)
    single, _ = bare_tiles_per_second(scene, bundle, options, threads=1)
    ideal = single * (os.cpu_count() or 1)
    print(f"bare model forward, 1 thread: {single:6.2f} tiles/s; x {os.cpu_count()} cores "
          f"(ideal data-parallel, no overhead at all): {ideal:6.2f} tiles/s", flush=True)
    from pipeline.inference.predictor import TilePredictor

    tuned = tuned_ideal = None
    if TilePredictor(bundle).channels_last:  # the layout the model workers run here
        tuned, _ = bare_tiles_per_second(scene, bundle, options, channels_last=True)
        single_cl, _ = bare_tiles_per_second(scene, bundle, options, threads=1,
                                             channels_last=True)
        tuned_ideal = single_cl * (os.cpu_count() or 1)
        print(f"bare model forward, channels-last: {tuned:6.2f} tiles/s with "
              f"{os.cpu_count()} threads, {single_cl:6.2f} with 1 thread "
              f"(x {os.cpu_count()}: {tuned_ideal:6.2f})", flush=True)
    from pipeline.inference.runtime import ensure_ray

    ensure_ray(num_cpus=os.cpu_count())  # as `segpipe run` starts its local runtime
    runs = {w: pipeline_run(scene, bundle, options, w) for w in (2, 1)}
    for w, r in sorted(runs.items()):
        print(f"pipeline, {w} worker(s): inference {r['inference']:6.2f} tiles/s "
              f"({r['infer_s']:.1f} s), end to end {r['end_to_end']:6.2f} tiles/s "
              f"({r['total_s']:.1f} s)", flush=True)
    two = runs[2]
    print(f"overhead ratio (2 workers / bare, same process): inference stage "
          f"{two['inference'] / bare:.3f}, end to end {two['end_to_end'] / bare:.3f}")
    print(f"ratio to the ideal data-parallel bare model: inference stage "
          f"{two['inference'] / ideal:.3f}, end to end {two['end_to_end'] / ideal:.3f}")
    if tuned is not None:
        print(f"against the channels-last bare model: inference stage "
              f"{two['inference'] / tuned:.3f}, end to end {two['end_to_end'] / tuned:.3f} "
              f"(ideal data-parallel: {two['inference'] / tuned_ideal:.3f}, "
              f"{two['end_to_end'] / tuned_ideal:.3f})")
    print(f"scaling 1 -> 2 workers (inference tiles/s): "
          f"{runs[2]['inference'] / runs[1]['inference']:.2f}x")
    ray.shutdown()


if __name__ == "__main__":
    main()
