"""The GPU path: tiles/s and GPU busy time of the tile predictor, per model.

On a GPU machine: ``.venv/bin/python bench/gpu.py`` (8192² scene, CUDA); on a CPU:
``.venv/bin/python bench/gpu.py --cpu --size 1024`` (the same table, quickly).

For each model (``demo-satellite``, and a larger U-Net with random weights: more
channels, one level deeper, an instance head) the tile windows of a synthetic RGB
scene of ``--size``² (tile + halo, as the pipeline plans them) are rendered into
memory first; then ``TilePredictor.predict`` runs over all of them in batches, as a
model actor does: normalise, copy in through the reused page-locked buffer, forward,
argmax and instance grouping on the device, integer labels back to the host.
Printed per model:

- ``tiles/s``: windows per second of wall time (the device synchronised at the end);
- ``GPU busy s``: the summed time of the device's kernels in a second, profiled pass
  (``torch.profiler``), and ``busy %`` = busy / wall;
- ``util %``: mean ``nvidia-smi`` GPU utilisation sampled during the timed pass;
- ``to host MB/tile``: what crossed back per tile (labels), against the float logits
  (``logits MB/tile``) that crossing back before argmax would move.

The card's name (``torch.cuda.get_device_name``) heads the table. GPU columns show
``-`` on a CPU.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def large_unet_bundle(folder: Path, channels: int, depth: int):
    """A seeded random-weight U-Net with an instance head, saved as a bundle."""
    import torch

    from pipeline.bundle import (
        ClassSpec,
        InputSpec,
        InstanceSpec,
        ModelSpec,
        save_bundle,
    )
    from segcore.models.factory import build_model
    from segcore.synthetic.satellite import SATELLITE_CLASSES

    torch.manual_seed(0)
    params = {"in_channels": 3, "num_classes": len(SATELLITE_CLASSES),
              "base_channels": channels, "depth": depth, "instance_head": True}
    net = build_model("unet2d", **params).eval()
    spec = ModelSpec(
        name=f"unet2d-c{channels}-d{depth}", architecture="unet2d", params=params,
        weights="model.safetensors", heads=["semantic", "instance"],
        input=InputSpec(channels=3, mean=[0.5] * 3, std=[0.25] * 3),
        classes=[ClassSpec(id=c.id, name=c.name, isthing=c.isthing, color=c.color)
                 for c in SATELLITE_CLASSES],
        instances=InstanceSpec(), tile=512, receptive_field=int(net.receptive_field),
        stride=int(net.stride))
    return save_bundle(folder, spec, net.state_dict())


def tile_windows(bundle, size: int, tile: int | None) -> list:
    """The scene's tile windows (tile + halo) as the pipeline plans them, rendered."""
    from pipeline.options import RunOptions
    from pipeline.run.plan import plan_tiles
    from segcore.synthetic.satellite import SatelliteSceneSpec, render

    spec = SatelliteSceneSpec(seed=11, height=size, width=size, bands=3)
    grid = plan_tiles((size, size), bundle, RunOptions(tile=tile)).grid
    return [render(spec, t.halo).image for t in grid]


class SmiSampler:
    """Mean ``nvidia-smi`` GPU utilisation (%) while running; None without nvidia-smi."""

    def __init__(self, device_index: int, every_s: float = 0.1) -> None:
        self.index, self.every_s, self.samples = device_index, every_s, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        query = ["nvidia-smi", f"--id={self.index}", "--query-gpu=utilization.gpu",
                 "--format=csv,noheader,nounits"]
        while not self._stop.is_set():
            try:
                out = subprocess.run(query, capture_output=True, text=True, timeout=5, check=False)
                self.samples.append(float(out.stdout.strip().splitlines()[0]))
            except (OSError, ValueError, IndexError, subprocess.SubprocessError):
                return
            self._stop.wait(self.every_s)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    @property
    def mean(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None


def run_all(predictor, windows: list, batch: int) -> list:
    import numpy as np

    valid = np.ones(windows[0].shape[1:], dtype=bool)
    out = []
    for i in range(0, len(windows), batch):
        part = windows[i : i + batch]
        out += predictor.predict(part, [valid[: w.shape[1], : w.shape[2]] for w in part],
                                 nodata=255)
    return out


def synchronise(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def kernel_seconds(predictor, windows: list, batch: int) -> float | None:
    """Summed device time of the kernels of one pass (torch.profiler); None if unavailable."""
    from torch.profiler import ProfilerActivity, profile

    try:
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            run_all(predictor, windows, batch)
            synchronise(predictor.device)
        events = prof.key_averages()
        total_us = sum(getattr(e, "self_device_time_total", 0) or
                       getattr(e, "self_cuda_time_total", 0) for e in events)
    except Exception as err:  # noqa: BLE001 - an optional figure
        print(f"  (profiler unavailable: {type(err).__name__}: {err})", file=sys.stderr)
        return None
    return total_us / 1e6


def measure(name: str, bundle, *, device: str, size: int, tile: int | None, batch: int) -> dict:
    import torch

    from pipeline.inference.predictor import TilePredictor

    start = time.perf_counter()
    windows = tile_windows(bundle, size, tile)
    render_s = time.perf_counter() - start
    predictor = TilePredictor(bundle, device=device)
    run_all(predictor, windows[:batch], batch)  # warm-up: kernels, allocator, pinned buffers
    synchronise(predictor.device)
    cuda = predictor.device.type == "cuda"
    index = predictor.device.index if predictor.device.index is not None else 0
    sampler = SmiSampler(index) if cuda else None
    if sampler:
        sampler.start()
    start = time.perf_counter()
    predictions = run_all(predictor, windows, batch)
    synchronise(predictor.device)
    wall = time.perf_counter() - start
    if sampler:
        sampler.stop()
    busy = kernel_seconds(predictor, windows, batch) if cuda else None
    pixels = sum(w.shape[1] * w.shape[2] for w in windows) / len(windows)
    heads = bundle.spec.num_classes + (3 if predictor.has_instances else 0)  # centre + offsets
    to_host = sum(p.semantic.nbytes + (p.offsets.nbytes if p.offsets is not None else 0)
                  for p in predictions) / len(predictions)
    return {"model": name, "device": str(predictor.device), "tiles": len(windows),
            "window": f"{windows[0].shape[1]}x{windows[0].shape[2]}",
            "tiles_s": len(windows) / wall, "wall_s": wall, "busy_s": busy,
            "busy_pct": None if busy is None else 100 * busy / wall,
            "util_pct": sampler.mean if sampler else None,
            "to_host_mb": to_host / 2**20, "logits_mb": pixels * heads * 4 / 2**20,
            "render_s": render_s, "oom_splits": predictor.oom_splits,
            "peak_gpu_gb": torch.cuda.max_memory_allocated(predictor.device) / 2**30
            if cuda else None}


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(card: str, size: int, batch: int, rows: list[dict]) -> None:
    print(f"\ncard: {card}   scene: {size}x{size} RGB synthetic   batch: {batch} tiles")
    head = ("model", "device", "tiles", "window", "tiles/s", "wall s", "GPU busy s", "busy %",
            "util %", "to host MB/tile", "logits MB/tile", "peak GPU GiB")
    print(" | ".join(head))
    print(" | ".join("---" for _ in head))
    for r in rows:
        print(" | ".join([r["model"], r["device"], str(r["tiles"]), r["window"],
                          fmt(r["tiles_s"], ".2f"), fmt(r["wall_s"], ".2f"),
                          fmt(r["busy_s"], ".2f"), fmt(r["busy_pct"], ".0f"),
                          fmt(r["util_pct"], ".0f"), fmt(r["to_host_mb"], ".3f"),
                          fmt(r["logits_mb"], ".2f"), fmt(r["peak_gpu_gb"], ".2f")]))


def main(argv: list[str] | None = None) -> None:
    import torch

    from pipeline.bundle import load_bundle

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even with CUDA")
    parser.add_argument("--size", type=int, default=8192, help="scene side in pixels")
    parser.add_argument("--tile", type=int, default=None, help="tile core (default: bundle's)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="tiles per predict call (default 8 on a GPU, 2 on the CPU)")
    parser.add_argument("--large-channels", type=int, default=None,
                        help="base channels of the larger U-Net (default 64; 16 with --cpu)")
    parser.add_argument("--large-depth", type=int, default=4)
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available() and not args.cpu
    device = "cuda" if cuda else "cpu"
    batch = args.batch_size or (8 if cuda else 2)
    channels = args.large_channels or (64 if cuda else 16)
    if not cuda:
        torch.set_num_threads(os.cpu_count() or 1)
    card = torch.cuda.get_device_name(0) if cuda else "none (CPU run)"
    rows = []
    with tempfile.TemporaryDirectory(prefix="segpipe-gpu-bench-") as tmp:
        models = [("demo-satellite", load_bundle("demo-satellite")),
                  (f"unet2d c{channels} d{args.large_depth}",
                   large_unet_bundle(Path(tmp) / "large", channels, args.large_depth))]
        for name, bundle in models:
            print(f"{name}: rendering the tile windows of {args.size}^2, then predicting ...",
                  file=sys.stderr, flush=True)
            rows.append(measure(name, bundle, device=device, size=args.size, tile=args.tile,
                                batch=batch))
    print_table(card, args.size, batch, rows)


if __name__ == "__main__":
    main()
