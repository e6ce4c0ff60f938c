"""segpipe versus MONAI's sliding_window_inference on a scene that fits in memory.

    .venv/bin/python bench/versus_monai.py [--size 2048] [--tile 512] [--model demo-satellite]

MONAI: the whole scene is read and normalised into one tensor first (not timed), then
``monai.inferers.sliding_window_inference`` runs the same network over windows of
``tile + 2 * halo`` pixels with ``overlap = 2 * halo / window`` (so window origins fall
on the same tile grid), constant blending, 4 windows per batch, all cores in this process,
on the network as the bundle loads it (``bundle.build()``, PyTorch's default layout).
Its class map is the argmax of the blended semantic logits. For reference it is timed
once more on the channels-last network segpipe's model workers run on the CPU
(``pipeline.inference.predictor.channels_last_on_cpu``); the ratio uses the first.

segpipe: ``run_scene`` from the GeoTIFF on disk (ingest, 2 model actors, stitching,
panoptic fusion, three COG exports, report: I/O included), with the same tile and halo.
segpipe does not blend: each window contributes only its core, and with the halo of half
the receptive field that equals whole-scene inference.

Prints both times, the ratio segpipe / MONAI (end to end and inference stage only) and
the share of valid pixels whose class agrees.

3-D case (``--volumes 160 256``, model ``demo-medical`` unless ``--model`` names another
3-D bundle): a seeded phantom of N^3 voxels at the model's spacing (``.nii`` under
``.bench/``). MONAI: ``sliding_window_inference`` over the ingested volume held in memory
as one tensor (not timed), roi 96^3, overlap 0.25, mode gaussian, one window per call,
all cores in this process. segpipe: ``run_scene`` with the default options (cores chosen
by cost, effective halo), its time the report's ``timings_s.total``. The per-model
calibration (memory per voxel, effective-halo probe and check) runs once before the
timed scene, like loading the model, and is printed on its own (a few seconds on the first
command, well under one once the calibration cache holds it: ``SEGPIPE_NO_CACHE=1`` measures
anew). The untiled reference
is ``run_scene`` with a tile larger than the volume (one window). Prints scene time,
MONAI time, their ratio, and the share of valid voxels whose class equals the untiled
reference and MONAI's.
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
# the environment `segpipe` gives itself, before torch is imported (huge pages for torch's
# CPU tensors: flows/environment.py); MONAI runs in this process and gets it too
from flows.environment import configure  # noqa: E402

configure()


def monai_run(scene: Path, bundle, tile: int, halo: int):
    import numpy as np
    import torch
    from monai.inferers import sliding_window_inference

    from pipeline.inference.predictor import TilePredictor
    from pipeline.io.geotiff import GeoTiffReader, open_raster

    info = open_raster(scene)
    predictor = TilePredictor(bundle)  # its normalisation; the network as loaded below
    with GeoTiffReader(scene, bands=bundle.default_bands(info.count)) as reader:
        pixels, valid = reader.read_with_valid((slice(0, info.height), slice(0, info.width)))
    x = torch.from_numpy(predictor.normalise(pixels, valid))[None]
    window = tile + 2 * halo
    torch.set_num_threads(os.cpu_count() or 1)

    def timed(net) -> tuple[float, np.ndarray]:
        def semantic(t: torch.Tensor) -> torch.Tensor:
            out = net(t)
            return out["semantic"] if isinstance(out, dict) else out

        start = time.perf_counter()
        with torch.inference_mode():
            logits = sliding_window_inference(x, roi_size=(window, window), sw_batch_size=4,
                                              predictor=semantic, overlap=2 * halo / window,
                                              mode="constant", padding_mode="reflect")
        return time.perf_counter() - start, logits[0].argmax(0).numpy().astype(np.uint8)

    seconds, labels = timed(bundle.build())
    tuned = None
    if predictor.channels_last:
        tuned, _ = timed(bundle.build().to(memory_format=torch.channels_last))
    return seconds, labels, valid, tuned


def ours_run(scene: Path, bundle, options):
    import ray

    from flows.batch import start_pool
    from pipeline.formats import Scene
    from pipeline.run import Workspace, run_scene
    from pipeline.store import SEMANTIC, open_store

    from pipeline.inference.runtime import ensure_ray

    ensure_ray(num_cpus=os.cpu_count())  # as `segpipe run` starts its local runtime
    # and its pool: one actor per core, models loaded, block-pass workers warmed up
    pool = start_pool(bundle, options.model_copy(update={"workers": os.cpu_count() or 1}))
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
    parser.add_argument("--model", default=None,
                        help="default: demo-satellite, or demo-medical with --volumes")
    parser.add_argument("--volumes", type=int, nargs="+", default=None, metavar="N",
                        help="run the 3-D case on N^3 phantoms instead (e.g. 160 256)")
    args = parser.parse_args()
    if args.volumes:
        volumes_case(args.volumes, args.model or "demo-medical")
        return
    args.model = args.model or "demo-satellite"
    from memory import bench_setup

    from pipeline.io.geotiff import open_raster
    from pipeline.run.plan import plan_tiles

    scene, bundle, options = bench_setup(args.size, args.model, args.tile)
    halo = plan_tiles(open_raster(scene).shape, bundle, options).halo
    m_seconds, m_labels, valid, tuned = monai_run(scene, bundle, args.tile, halo)
    print(f"MONAI sliding_window_inference ({args.size}^2, window {args.tile + 2 * halo}, "
          f"tensor in memory): {m_seconds:.2f} s", flush=True)
    if tuned is not None:
        print(f"MONAI on the channels-last network (reference): {tuned:.2f} s", flush=True)
    o_seconds, report, o_labels = ours_run(scene, bundle, options)
    infer = report["timings_s"]["infer"]
    print(f"segpipe run_scene (I/O, instances, panoptic, exports included): {o_seconds:.2f} s "
          f"(inference stage {infer:.2f} s)", flush=True)
    print("segpipe stages (s): " + ", ".join(f"{k} {v:.2f}" for k, v in report["timings_s"].items()),
          flush=True)
    agree = float((m_labels == o_labels)[valid].mean())
    print(f"time ratio segpipe / MONAI: end to end {o_seconds / m_seconds:.3f}, "
          f"inference stage {infer / m_seconds:.3f}")
    if tuned is not None:
        print(f"against MONAI on the channels-last network: end to end {o_seconds / tuned:.3f}, "
              f"inference stage {infer / tuned:.3f}")
    print(f"class agreement on valid pixels: {100 * agree:.4f} %")


# --- 3-D: phantom volumes -------------------------------------------------------------


def _phantom(size: int, spacing: tuple[float, float, float]) -> Path:
    from pipeline.synthdata.phantoms import write_phantom

    path = ROOT / ".bench" / f"phantom-{size}.nii"
    if not path.is_file():
        path.parent.mkdir(exist_ok=True)
        write_phantom(path, shape=(size,) * 3, spacing=spacing, seed=11, lesions=(6, 10))
    return path


def _segpipe_volume(path: Path, bundle, options, pool):
    """``run_scene`` on a volume: its report and (semantic, valid, image) of the store."""
    from pipeline.formats import Scene
    from pipeline.run import Workspace, run_scene
    from pipeline.store import IMAGE, SEMANTIC, VALID, open_store

    with tempfile.TemporaryDirectory(dir=ROOT / ".bench") as out:
        ws = Workspace(Scene(path, path.stem, "nifti"), Path(out))
        report = run_scene(ws, bundle, options, pool).report.to_json()
        group = open_store(ws.final / "scene.zarr")
        return report, group[SEMANTIC][:], group[VALID][:], group[IMAGE][:]


def _monai_volume(image, valid, bundle):
    """MONAI's sliding window over the volume in memory: (seconds, labels)."""
    import numpy as np
    import torch
    from monai.inferers import sliding_window_inference

    from pipeline.inference.predictor import TilePredictor

    predictor = TilePredictor(bundle)
    x = torch.from_numpy(predictor.normalise(image, valid))[None]
    torch.set_num_threads(os.cpu_count() or 1)

    def semantic(t: torch.Tensor) -> torch.Tensor:
        out = predictor.net(t)
        return out["semantic"] if isinstance(out, dict) else out

    start = time.perf_counter()
    with torch.inference_mode():
        logits = sliding_window_inference(x, roi_size=(96, 96, 96), sw_batch_size=1,
                                          predictor=semantic, overlap=0.25, mode="gaussian")
    seconds = time.perf_counter() - start
    return seconds, logits[0].argmax(0).numpy().astype(np.uint8)


def volumes_case(sizes: list[int], model: str) -> None:
    """The 3-D comparison (module docstring) for N^3 phantoms, N in ``sizes``."""
    import ray

    from pipeline.bundle import load_bundle
    from flows.batch import start_pool
    from pipeline.options import RunOptions
    from pipeline.run.plan import plan_tiles

    bundle = load_bundle(model)
    workers = os.cpu_count() or 1
    options = RunOptions(resume=False)
    from pipeline.inference.runtime import ensure_ray

    ensure_ray(num_cpus=workers)  # as `segpipe run` starts its local runtime, and its pool
    pool = start_pool(bundle, options.model_copy(update={"workers": workers}))
    for size in sizes:
        path = _phantom(size, tuple(bundle.spec.spacing or (1.0, 1.0, 1.0)))
        start = time.perf_counter()
        plan = plan_tiles((size,) * 3, bundle, options, workers=workers)
        print(f"{size}^3: plan {plan.grid.grid_shape} cores {plan.core}, halo {plan.halo} "
              f"({plan.halo_mode}, check agreement {plan.halo_agreement}); calibration "
              f"(first plan of the process, from the calibration cache when it holds it; "
              f"not in scene time) {time.perf_counter() - start:.2f} s",
              flush=True)
        report, labels, valid, image = _segpipe_volume(path, bundle, options, pool)
        whole = RunOptions(resume=False, tile=-(-size // bundle.spec.stride) * bundle.spec.stride)
        _, reference, _, _ = _segpipe_volume(path, bundle, whole, pool)
        m_seconds, m_labels = _monai_volume(image, valid, bundle)
        seconds, infer = report["timings_s"]["total"], report["timings_s"]["infer"]
        agree = float((labels == reference)[valid].mean())
        agree_monai = float((labels == m_labels)[valid].mean())
        stages = ", ".join(f"{k} {v:.2f}" for k, v in report["timings_s"].items() if k != "total")
        print(f"{size}^3: segpipe scene {seconds:.2f} s ({stages}; {report['tiles']['total']} "
              f"tiles), MONAI roi 96 overlap 0.25 gaussian {m_seconds:.2f} s, ratio "
              f"{seconds / m_seconds:.3f} (inference stage alone {infer / m_seconds:.3f})",
              flush=True)
        print(f"{size}^3: class agreement on valid voxels: with whole-volume inference "
              f"{100 * agree:.4f} %, with MONAI {100 * agree_monai:.4f} %", flush=True)
    pool.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
