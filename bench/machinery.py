"""The machinery around the model: scene time against the raw I/O floor, with a near-free model.

    .venv/bin/python bench/machinery.py [--sizes 8192 16384] [--repeats 1] [--workdir .bench]
    .venv/bin/python bench/machinery.py --sizes 32768      # 1.07 Gpx: stages and peak RSS

The model is a 1x1 convolution exported as a TorchScript bundle (``bench/near_free.py``,
written into the work directory): a stand-in for a GPU-speed model, so that everything
the pipeline does besides the model shows. For each size it

1. writes a three-band synthetic GeoTIFF once (cached in the work directory);
2. runs ``segpipe run SCENE --model near-free --out OUT --no-resume`` in a subprocess and
   samples the resident memory of the whole process tree (driver, Ray workers and Ray's
   own services) every 0.2 s; reads ``report.json`` for the scene time (``timings_s``);
3. measures, in this process, the raw I/O floor of the same scene, each part using all
   cores: a windowed read of the input (one reader thread per core, 1024 px windows), a
   Zarr v3 write of the run's uint8 label array (512 px chunks, zstd, as the store does),
   and one COG write of it (DEFLATE, predictor 2, 512 px blocks, nearest overviews,
   ``NUM_THREADS=ALL_CPUS``).

Prints per size: the stage times, scene time, floor parts, the ratio scene / floor (the
acceptance figure: at most 2.0), wall time minus scene time (fixed cost per command), and
the peak RSS of the process tree.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from memory import TreeSampler, make_scene  # noqa: E402
from near_free import write_bundle  # noqa: E402

BIN = Path(sys.executable).parent
GIB = 1024**3
STAGES = ("read", "infer", "stitch", "panoptic", "metrics", "export")


def run_segpipe(scene: Path, bundle: Path, out: Path, extra: list[str]) -> dict:
    """``segpipe run`` in a subprocess: wall time, peak tree RSS and the scene's report."""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    cmd = [str(BIN / "segpipe"), "run", str(scene), "--model", str(bundle), "--out", str(out),
           "--no-resume", *extra]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    sampler = TreeSampler(proc.pid)
    sampler.start()
    _, stderr = proc.communicate()
    wall = time.perf_counter() - start
    sampler.stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"segpipe run failed ({proc.returncode}): {stderr.decode()[-3000:]}")
    report = json.loads((out / scene.stem / "report.json").read_text())
    return {"wall": wall, "tree": sampler.peak_tree, "report": report}


def read_floor(scene: Path, window: int = 1024) -> float:
    """Seconds to read every band of ``scene`` in windows, one reader thread per core."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(scene) as ds:
        height, width = ds.height, ds.width
    windows = [Window(c, r, min(window, width - c), min(window, height - r))
               for r in range(0, height, window) for c in range(0, width, window)]
    threads = os.cpu_count() or 1

    def part(k: int) -> int:
        n = 0
        with rasterio.open(scene) as ds:
            for w in windows[k::threads]:
                n += ds.read(window=w).size
        return n

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(part, range(threads)))
    return time.perf_counter() - start


def zarr_floor(labels, folder: Path) -> float:
    """Seconds to write ``labels`` (uint8) as a Zarr v3 array, 512 px chunks, zstd."""
    import zarr
    from zarr.codecs import ZstdCodec

    store = folder / "floor.zarr"
    array = zarr.create_array(str(store), shape=labels.shape, chunks=(512, 512), dtype="uint8",
                              compressors=(ZstdCodec(level=3),), fill_value=255)
    start = time.perf_counter()
    array[...] = labels
    seconds = time.perf_counter() - start
    shutil.rmtree(store)
    return seconds


def cog_floor(labels, info_path: Path, folder: Path) -> float:
    """Seconds for one COG write of ``labels`` on the scene's grid, all cores."""
    import rasterio
    import rasterio.shutil
    from rasterio.io import MemoryFile

    with rasterio.open(info_path) as ds:
        crs, transform = ds.crs, ds.transform
    height, width = labels.shape
    dst = folder / "floor.tif"
    with MemoryFile() as mem:
        with mem.open(driver="GTiff", width=width, height=height, count=1, dtype="uint8",
                      crs=crs, transform=transform, nodata=255, tiled=True, blockxsize=512,
                      blockysize=512, BIGTIFF="IF_SAFER") as src:
            src.write(labels, 1)
        with mem.open() as src:
            start = time.perf_counter()
            rasterio.shutil.copy(src, str(dst), driver="COG", COMPRESS="DEFLATE",
                                 PREDICTOR="2", BLOCKSIZE="512", OVERVIEWS="AUTO",
                                 OVERVIEW_RESAMPLING="NEAREST", BIGTIFF="IF_SAFER",
                                 NUM_THREADS="ALL_CPUS")
            seconds = time.perf_counter() - start
    dst.unlink()
    return seconds


def bench_size(size: int, bundle: Path, workdir: Path, extra: list[str]) -> dict:
    import numpy as np
    import zarr

    scene = workdir / f"scene-{size}.tif"
    make_scene(scene, size)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        out = Path(tmp) / "out"
        run = run_segpipe(scene, bundle, out, extra)
        semantic = zarr.open_array(str(out / scene.stem / "scene.zarr" / "semantic"), mode="r")
        labels = np.asarray(semantic[...])
        shutil.rmtree(out)
        floor = {"read": read_floor(scene), "zarr": zarr_floor(labels, Path(tmp)),
                 "cog": cog_floor(labels, scene, Path(tmp))}
    timings = run["report"]["timings_s"]
    return {"size": size, "wall": run["wall"], "tree": run["tree"], "timings": timings,
            "scene": timings["total"], "floor": floor, "floor_total": sum(floor.values())}


def show(r: dict) -> None:
    t, f = r["timings"], r["floor"]
    stages = "  ".join(f"{k} {t.get(k, 0.0):.2f}" for k in STAGES)
    print(f"{r['size']:>6}^2 x3  scene {r['scene']:7.2f} s  ({stages})", flush=True)
    print(f"         floor {r['floor_total']:6.2f} s  (read {f['read']:.2f}, zarr write "
          f"{f['zarr']:.2f}, COG write {f['cog']:.2f})  scene / floor {r['scene'] / r['floor_total']:.2f}",
          flush=True)
    print(f"         wall {r['wall']:7.2f} s  wall - scene {r['wall'] - r['scene']:.2f} s  "
          f"peak RSS tree {r['tree'] / GIB:.2f} GiB", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[8192, 16384])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=ROOT / ".bench")
    parser.add_argument("--segpipe-args", default="", help="extra `segpipe run` arguments")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    bundle = write_bundle(args.workdir / "near-free")
    print(f"near-free bundle: {bundle}; {os.cpu_count()} cores", flush=True)
    for size in args.sizes:
        for _ in range(args.repeats):
            show(bench_size(size, bundle, args.workdir, args.segpipe_args.split()))


if __name__ == "__main__":
    main()
