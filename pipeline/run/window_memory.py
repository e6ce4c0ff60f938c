"""Memory of one model window: measured once per bundle, then a budget for the planner.

:func:`forward_peak_bytes` runs the network once under a torch dispatch mode that
adds up the bytes of every tensor an operator returns while it is alive (freed
storages are subtracted), so the peak of live tensors during one forward pass is
known without a GPU, on any bundle format (built-in, TorchScript, torch.export).
Two small windows give the bytes per pixel (voxel) of the network; the planner
multiplies them by :data:`SAFETY` to cover what the tracker cannot see (operator
workspaces, allocator slack) and the worker's own arrays (normalised input,
argmax, instance grouping), measured at 1.6-2x the tracked peak for
``demo-medical`` on the CPU.
"""

from __future__ import annotations

import os
import weakref
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from pipeline.bundle import ModelBundle, load_bundle
from pipeline.options import RunOptions
from pipeline.run.calibration_cache import remembered

SAFETY = 2.0  # resident memory of a worker's window / tracked tensor peak (see module doc)
BUDGET_SHARE = 0.5  # of a worker's share of the machine's memory
FALLBACK_BYTES_PER_PIXEL = 4096.0  # a model the tracker cannot run: assume a heavy one


class _LiveTensors(TorchDispatchMode):
    """Running total and peak of the bytes held by tensors operators returned."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def _free(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            key, size = storage.data_ptr(), storage.nbytes()
            if size and key not in self.live:
                self.live[key] = size
                self.current += size
                self.peak = max(self.peak, self.current)
                weakref.finalize(storage, self._free, key)
        return out


def forward_peak_bytes(net: torch.nn.Module, x: torch.Tensor) -> int:
    """Peak bytes of the tensors alive during ``net(x)`` (inputs and weights excluded).

    Examples
    --------
    >>> net = torch.nn.Conv2d(1, 4, 3, padding=1).eval()
    >>> forward_peak_bytes(net, torch.zeros(1, 1, 16, 16))  # one (1, 4, 16, 16) float32 output
    4096
    """
    tracker = _LiveTensors()
    with torch.inference_mode(), tracker:
        net(x)
    return tracker.peak


@dataclass(frozen=True)
class WindowMemory:
    """Memory of a window of ``p`` pixels: ``fixed + per_pixel * p`` bytes (with
    :data:`SAFETY` applied to the measured slope)."""

    per_pixel: float
    fixed: float = 0.0

    def bytes(self, pixels: int) -> float:
        return self.fixed + self.per_pixel * pixels

    def max_pixels(self, budget: float) -> int:
        """Largest window (pixels) whose memory fits ``budget`` bytes (at least 1)."""
        return max(1, int((budget - self.fixed) // self.per_pixel))


def _measure(bundle: ModelBundle) -> dict:
    """``WindowMemory`` fields of the bundle from two small windows (raises when the
    tracker cannot run the model)."""
    spec = bundle.spec
    side = 4 * spec.stride if spec.ndim == 3 else 16 * spec.stride
    net = bundle.build().eval()
    sizes = (side, 2 * side)
    peaks = [forward_peak_bytes(net, torch.zeros((1, spec.input.channels) + (s,) * spec.ndim))
             for s in sizes]
    pixels = [s ** spec.ndim for s in sizes]
    slope = max((peaks[1] - peaks[0]) / (pixels[1] - pixels[0]), 1.0)
    return {"per_pixel": SAFETY * slope, "fixed": max(0.0, peaks[0] - slope * pixels[0])}


@lru_cache(maxsize=16)
def _measured(path: str, mtime_ns: int) -> WindowMemory:
    bundle = load_bundle(path)
    try:
        kept = remembered("window-memory", bundle, {"safety": SAFETY},
                          lambda: _measure(bundle))
    except Exception:  # noqa: BLE001 - a model the tracker cannot run gets a heavy default
        return WindowMemory(per_pixel=FALLBACK_BYTES_PER_PIXEL)
    return WindowMemory(per_pixel=float(kept["per_pixel"]), fixed=float(kept["fixed"]))


def window_memory(bundle: ModelBundle) -> WindowMemory:
    """The bundle's :class:`WindowMemory`, measured once per weights file (kept in the
    process and in the calibration cache, :mod:`pipeline.run.calibration_cache`).

    Examples
    --------
    >>> from pipeline.bundle import load_bundle
    >>> window_memory(load_bundle("demo-medical")).per_pixel  # 2 x 136 B per voxel
    272.0
    """
    return _measured(str(bundle.path), bundle.weights_path.stat().st_mtime_ns)


def _machine_memory(gpus_per_worker: float) -> float:
    """Bytes one worker's share is taken from: a GPU's memory (x its share) when this
    machine has one and workers use GPUs, else the machine's physical memory."""
    if gpus_per_worker > 0 and torch.cuda.is_available():
        return torch.cuda.get_device_properties(0).total_memory * min(gpus_per_worker, 1.0)
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def memory_budget(options: RunOptions, workers: int) -> float:
    """Bytes one window may take: ``--memory-budget``, else :data:`BUDGET_SHARE` of a
    worker's share of the memory (a GPU's memory x ``--gpus-per-worker``, or the
    machine's memory / ``workers``)."""
    if options.memory_budget is not None:
        return float(options.memory_budget)
    if options.gpus_per_worker > 0 and torch.cuda.is_available():
        return BUDGET_SHARE * _machine_memory(options.gpus_per_worker)
    return BUDGET_SHARE * _machine_memory(0.0) / max(1, workers)

