"""TilePredictor: a loaded model plus its normalisation, turning raw tiles into labels.

Pure compute on arrays; the Ray actor shell (``actor.py``) adds the store I/O.
Pattern: segcore model -> this class -> Ray actor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipeline.bundle import ModelBundle
from segcore.errors import ModelError
from segcore.geometry.padding import pad_to_multiple
from segcore.instances.grouping import group_instances


@dataclass(frozen=True)
class TilePrediction:
    """Labels of one tile window: class ids and tile-local instance ids (0 = none)."""

    semantic: np.ndarray  # (*S) uint8/uint16, nodata where the input is invalid
    instance: np.ndarray | None  # (*S) int64 local ids, None for semantic-only models


_DENSE_HEADS = ("semantic", "center", "offset")


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """Mixed precision on a GPU: bf16 where supported, else fp16; none on the CPU.

    ``precision`` (bundle): ``auto``, ``fp32`` (never), ``bf16`` or ``fp16``.

    Examples
    --------
    >>> autocast_dtype(torch.device("cpu"), "auto") is None
    True
    """
    if device.type != "cuda" or precision == "fp32":
        return None
    if precision == "fp16":
        return torch.float16
    if precision == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


class TilePredictor:
    """Run a bundle's network on raw ``(C, *S)`` tiles (``S`` = ``(h, w)`` or ``(d, h, w)``).

    Parameters
    ----------
    bundle : ModelBundle
        The model; its network is loaded once, here.
    device : str
        ``"cpu"`` or a CUDA device.
    """

    max_batch_voxels = 2**22  # per model call: 4 x 624^2 px in 2-D, one 176^3 window in 3-D

    def __init__(self, bundle: ModelBundle, *, device: str = "cpu") -> None:
        self.bundle = bundle
        self.device = torch.device(device)
        self.net = bundle.build().to(self.device)
        spec = bundle.spec.input
        self.ndim = bundle.spec.ndim
        trailing = (None,) * self.ndim
        self._mean = np.asarray(spec.mean, dtype=np.float32)[(slice(None), *trailing)]
        self._std = np.asarray(spec.std, dtype=np.float32)[(slice(None), *trailing)]
        self._scale = spec.value_scale
        self.stride = bundle.spec.stride
        self.channels = spec.channels
        self.thing_ids = np.array([c.id for c in bundle.spec.classes if c.isthing], dtype=np.int64)
        self.has_instances = "instance" in bundle.spec.heads
        self.autocast_dtype = autocast_dtype(self.device, bundle.spec.precision)
        # channels-last helps 2-D convolutions on tensor cores; not used on the CPU
        self.channels_last = self.device.type == "cuda" and self.ndim == 2
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.oom_splits = 0

    def normalise(self, image: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """``(C, *S)`` raw samples -> float32 model input; nodata and NaN become 0."""
        dtype = str(image.dtype)
        if dtype not in self._scale:
            raise ModelError(
                f"model '{self.bundle.name}': no input.value_scale for sample type {dtype} "
                f"(has {sorted(self._scale)})"
            )
        x = image.astype(np.float32) * np.float32(self._scale[dtype])
        x = (x - self._mean) / self._std
        x[:, ~valid] = 0.0
        x[~np.isfinite(x)] = 0.0
        return x

    def outputs(self, batch: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """Model heads for same-shape normalised tiles: ``[(C, *S)] -> [{head: (k, *S)}]``.

        On out-of-memory the batch is halved and both halves retried (down to one
        tile), and later calls keep the smaller batch (:attr:`max_batch_voxels`).
        """
        try:
            return self._forward(batch)
        except torch.OutOfMemoryError:
            if len(batch) == 1:
                raise
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            half = len(batch) // 2
            voxels = int(np.prod(batch[0].shape[1:]))
            self.max_batch_voxels = max(voxels, half * voxels)
            self.oom_splits += 1
            return self.outputs(batch[:half]) + self.outputs(batch[half:])

    @torch.inference_mode()
    def _forward(self, batch: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        x = torch.from_numpy(np.stack(batch))
        if self.device.type == "cuda":  # pinned host memory: asynchronous copy to the GPU
            x = x.pin_memory().to(self.device, non_blocking=True)
        x, size = pad_to_multiple(x, self.stride, spatial_dims=self.ndim)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype,
                            enabled=self.autocast_dtype is not None):
            out = self.net(x)
        heads = out if isinstance(out, dict) else {"semantic": out}
        heads = {k: v for k, v in heads.items() if k in _DENSE_HEADS}  # e.g. not query logits
        crop = (Ellipsis, *(slice(0, n) for n in size))
        cropped = {k: v[crop].float().cpu().numpy() for k, v in heads.items()}
        return [{k: v[i] for k, v in cropped.items()} for i in range(len(batch))]

    def _instances(self, heads: dict[str, np.ndarray], semantic: np.ndarray,
                   valid: np.ndarray) -> np.ndarray:
        grouping = self.bundle.spec.instances
        things = np.isin(semantic, self.thing_ids) & valid
        return group_instances(
            heads["center"], heads["offset"], things, threshold=grouping.threshold,
            nms_kernel=grouping.nms_kernel, top_k=grouping.top_k,
        ).numpy()

    def _batches(self, by_shape: dict[tuple[int, ...], list[int]],
                 inputs: list[np.ndarray]) -> list[list[int]]:
        """Same-shape groups split so one model call sees at most ``max_batch_voxels``
        voxels (at least one tile): 3-D windows are large, 2-D ones batch freely."""
        out = []
        for indices in by_shape.values():
            voxels = int(np.prod(inputs[indices[0]].shape[1:]))
            size = max(1, self.max_batch_voxels // max(voxels, 1))
            out += [indices[i : i + size] for i in range(0, len(indices), size)]
        return out

    def predict(
        self, images: list[np.ndarray], valids: list[np.ndarray], *, nodata: int
    ) -> list[TilePrediction]:
        """Class ids ``(*S)`` (``nodata`` where the input is invalid) and instances per tile."""
        inputs = [self.normalise(im, va) for im, va in zip(images, valids)]
        results: list[TilePrediction | None] = [None] * len(inputs)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, x in enumerate(inputs):
            by_shape.setdefault(x.shape, []).append(i)
        for indices in self._batches(by_shape, inputs):
            for i, heads in zip(indices, self.outputs([inputs[i] for i in indices])):
                lab = heads["semantic"].argmax(axis=0).astype(np.uint16 if nodata > 255 else np.uint8)
                lab[~valids[i]] = nodata
                inst = self._instances(heads, lab, valids[i]) if self.has_instances else None
                results[i] = TilePrediction(lab, inst)
        return results  # type: ignore[return-value]
