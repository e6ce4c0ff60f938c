"""TilePredictor: a loaded model plus its normalisation, turning raw tiles into labels.

Pure compute on arrays; the Ray actor shell (``actor.py``) adds the store I/O.
Pattern: segcore model -> this class -> Ray actor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipeline.bundle import ModelBundle, ModelFormat
from segcore.errors import ModelError
from segcore.geometry.padding import pad_to_multiple
from segcore.instances.grouping import find_centres


@dataclass(frozen=True)
class TilePrediction:
    """What one tile window's model output becomes on the device before it is copied back.

    Class ids for every model; for an instance head, what the scene-wide centre pass
    needs (:mod:`segcore.instances.centres`): the heatmap peaks of the window and the
    offsets of its thing pixels. Instance ids are given later, once the whole scene's
    centres are known, so they never depend on the tiling.
    """

    semantic: np.ndarray  # (*S) uint8/uint16, nodata where the input is invalid
    centres: np.ndarray | None = None  # (n, ndim) int64 peaks, window coordinates
    scores: np.ndarray | None = None  # (n,) float32 heatmap values at the peaks
    offsets: np.ndarray | None = None  # (ndim, *S) float32 on thing pixels, 0 elsewhere


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


def channels_last_on_cpu(bundle: ModelBundle) -> bool:
    """Whether a 2-D model runs in the channels-last layout on the CPU: segcore's own
    architectures (weights as a state dict), whose layers all take it.

    On a GPU every 2-D model does (tensor cores). On the CPU, oneDNN's channels-last
    convolutions took 0.56-0.68x the time of the default layout for segcore's U-Net,
    DeepLab and query architectures (a batch of 4 x 3 x 512², one thread; the ViT
    0.97x); ``demo-satellite``'s logits moved by at most 6e-6 on a random batch, and
    ``make demo``'s label arrays, COGs and segments stayed byte-identical (only its stored
    float offsets changed).
    A model made elsewhere (TorchScript, ``torch.export``, ONNX) keeps its layout: its
    code may assume contiguous tensors.
    """
    spec = bundle.spec
    return spec.format is ModelFormat.STATE_DICT and spec.prompts is None


class TilePredictor:
    """Run a bundle's network on raw ``(C, *S)`` tiles (``S`` = ``(h, w)`` or ``(d, h, w)``).

    Parameters
    ----------
    bundle : ModelBundle
        The model; its network is loaded once, here.
    device : str
        ``"cpu"`` or a CUDA device.
    channels_last : bool, optional
        Run the network in the channels-last layout; default: 2-D models on a GPU, and on
        the CPU where :func:`channels_last_on_cpu` says so (benchmarks pass False to time
        the network as it loads).
    """

    max_batch_voxels = 2**22  # per model call: 4 x 624^2 px in 2-D, one 176^3 window in 3-D

    def __init__(self, bundle: ModelBundle, *, device: str = "cpu",
                 channels_last: bool | None = None) -> None:
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
        if channels_last is None:
            channels_last = self.ndim == 2 and (
                self.device.type == "cuda" or channels_last_on_cpu(bundle))
        self.channels_last = channels_last
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.oom_splits = 0
        self._thing_ids = torch.as_tensor(self.thing_ids, device=self.device)
        self._pinned: dict[str, tuple[torch.Tensor, object]] = {}  # name -> (buffer, copy event)

    def normalise(self, image: np.ndarray, valid: np.ndarray,
                  scene: tuple[np.ndarray, np.ndarray] | None = None, *,
                  out: np.ndarray | None = None) -> np.ndarray:
        """``(C, *S)`` raw samples -> float32 model input; nodata and NaN become 0.

        ``scene``: per-channel ``(mean, std)`` ``(C,)`` of this scene, replacing the
        bundle's (``input.scene``, :mod:`pipeline.inference.scene_intensity`). Then
        ``input.clip`` applies, and ``input.keep_zero`` keeps zero samples 0.
        ``out``: a float32 ``(C, *S)`` array to write into (a row of a batch), else new.
        """
        dtype = str(image.dtype)
        if dtype not in self._scale:
            raise ModelError(
                f"model '{self.bundle.name}': no input.value_scale for sample type {dtype} "
                f"(has {sorted(self._scale)})"
            )
        if out is None:
            x = image.astype(np.float32)  # the same float32 steps as ever, in place
        else:
            x = out
            np.copyto(x, image, casting="unsafe")  # what astype(float32) gives
        x *= np.float32(self._scale[dtype])
        trailing = (slice(None), *(None,) * self.ndim)
        x -= self._mean if scene is None else scene[0].astype(np.float32)[trailing]
        x /= self._std if scene is None else scene[1].astype(np.float32)[trailing]
        spec = self.bundle.spec.input
        if spec.clip is not None:
            np.clip(x, np.float32(spec.clip[0]), np.float32(spec.clip[1]), out=x)
        if spec.keep_zero:
            x[image == 0] = 0.0
        if not valid.all():
            x[:, ~valid] = 0.0
        if image.dtype.kind == "f":  # integer samples cannot be NaN or infinite
            x[~np.isfinite(x)] = 0.0
        return x

    def outputs(self, batch: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """Model heads on the host for same-shape normalised tiles:
        ``[(C, *S)] -> [{head: (k, *S) float32}]`` (benchmarks and checks; tiles take
        :meth:`predict`, which keeps the heads on the device).

        On out-of-memory the batch is halved and both halves retried (down to one
        tile), and later calls keep the smaller batch (:attr:`max_batch_voxels`).
        """
        def host(part: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
            with torch.inference_mode():
                heads = {k: v.float().cpu().numpy() for k, v in self._heads(part).items()}
            return [{k: v[i] for k, v in heads.items()} for i in range(len(part))]

        return self._halving_on_oom(batch, host)

    def _halving_on_oom(self, items: list, call):
        """``call(items)``; on out-of-memory, ``call`` on each half (down to one item)."""
        try:
            return call(items)
        except torch.OutOfMemoryError:
            if len(items) == 1:
                raise
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            half = len(items) // 2
            first = items[0][0] if isinstance(items[0], tuple) else items[0]
            voxels = int(np.prod(first.shape[1:]))
            self.max_batch_voxels = max(voxels, half * voxels)
            self.oom_splits += 1
            return self._halving_on_oom(items[:half], call) + self._halving_on_oom(items[half:], call)

    def _to_device(self, name: str, arrays: list[np.ndarray] | np.ndarray) -> torch.Tensor:
        """Stack same-shape arrays (or take a stacked ``(B, *shape)`` array) onto the device.

        On a GPU the stack is written into a page-locked host buffer kept per ``name``
        (grown when too small, reused otherwise) and copied asynchronously; the next
        call waits for that copy before it writes the buffer again.
        """
        if self.device.type != "cuda":
            return torch.from_numpy(arrays if isinstance(arrays, np.ndarray) else np.stack(arrays))
        shape = (len(arrays), *arrays[0].shape)
        dtype = torch.from_numpy(arrays[0][:0]).dtype
        pinned, done = self._pinned.get(name, (None, None))
        if done is not None:
            done.synchronize()  # the previous copy out of this buffer has finished
        count = int(np.prod(shape))
        if pinned is None or pinned.dtype != dtype or pinned.numel() < count:
            pinned = torch.empty(count, dtype=dtype, pin_memory=True)
        host = pinned[:count].view(shape)
        for i, a in enumerate(arrays):
            host[i].copy_(torch.from_numpy(a))
        out = host.to(self.device, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self._pinned[name] = (pinned, event)
        return out

    def _heads(self, batch: list[np.ndarray] | np.ndarray) -> dict[str, torch.Tensor]:
        """Dense heads ``{name: (B, k, *S)}`` on the device, cropped to the tiles' size."""
        x = self._to_device("input", batch)
        x, size = pad_to_multiple(x, self.stride, spatial_dims=self.ndim)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype,
                            enabled=self.autocast_dtype is not None):
            out = self.net(x)
        heads = out if isinstance(out, dict) else {"semantic": out}
        crop = (Ellipsis, *(slice(0, n) for n in size))
        return {k: v[crop] for k, v in heads.items() if k in _DENSE_HEADS}  # not query logits

    @torch.inference_mode()
    def _labels(self, items: list[tuple[np.ndarray, np.ndarray]], nodata: int,
                scene: tuple[np.ndarray, np.ndarray] | None = None) -> list[TilePrediction]:
        """Labels of same-shape ``(raw samples, valid)`` tiles, computed on the device.

        The tiles are normalised straight into one batch array (no second copy to stack
        them). Argmax, nodata and the centre peaks run where the model ran; only the
        class ids (uint8/uint16) and, for an instance head, the peaks and the thing
        pixels' offsets are copied to the host (never the logits).
        """
        batch = np.empty((len(items), *items[0][0].shape), dtype=np.float32)
        for row, (image, valid) in zip(batch, items):
            self.normalise(image, valid, scene, out=row)
        heads = self._heads(batch)
        every = all(bool(v.all()) for _, v in items)  # no nodata: no mask to apply
        valid = None if every and not self.has_instances else \
            self._to_device("valid", [v for _, v in items])
        wide = nodata > 255  # uint16 ids travel as int32 (no uint16 kernels on every device)
        semantic = _argmax_classes(heads["semantic"]).to(torch.int32 if wide else torch.uint8)
        if not every:
            semantic = semantic.masked_fill_(~valid, nodata)
        copies = [semantic.to("cpu", non_blocking=True)]
        if self.has_instances:
            things = torch.isin(semantic, self._thing_ids.to(semantic.dtype)) & valid
            offsets = torch.where(things.unsqueeze(1), heads["offset"].float(), 0.0)
            peaks = [self._centres(heads["center"][i]) for i in range(len(items))]
            copies.append(offsets.to("cpu", non_blocking=True))
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()  # the copies have landed
        labels = copies[0].numpy()
        labels = labels.astype(np.uint16) if wide else labels
        if not self.has_instances:
            return [TilePrediction(labels[i]) for i in range(len(items))]
        offsets = copies[1].numpy()
        return [TilePrediction(labels[i], centres.cpu().numpy(), scores.cpu().numpy(),
                               offsets[i])
                for i, (centres, scores) in enumerate(peaks)]

    def _centres(self, heat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Peaks ``(n, ndim)`` int64 of one window's heatmap ``(1, *S)`` and their values
        ``(n,)`` float32 (on the device). ``top_k`` applies to the whole scene, later."""
        grouping = self.bundle.spec.instances
        heat = heat.float()[0]
        centres = find_centres(heat, threshold=grouping.threshold,
                               nms_kernel=grouping.nms_kernel)
        return centres, heat[tuple(centres.T)]

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
        self, images: list[np.ndarray], valids: list[np.ndarray], *, nodata: int,
        scene: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> list[TilePrediction]:
        """Class ids ``(*S)`` (``nodata`` where the input is invalid) and instances per tile
        (``scene``: the scene's own normalisation, see :meth:`normalise`)."""
        results: list[TilePrediction | None] = [None] * len(images)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, image in enumerate(images):
            by_shape.setdefault(image.shape, []).append(i)
        for indices in self._batches(by_shape, images):
            items = [(images[i], np.asarray(valids[i], dtype=bool)) for i in indices]
            labels = self._halving_on_oom(items, lambda part: self._labels(part, nodata, scene))
            for i, prediction in zip(indices, labels):
                results[i] = prediction
        return results  # type: ignore[return-value]


def _argmax_classes(logits: torch.Tensor) -> torch.Tensor:
    """``(B, k, *S)`` -> ``(B, *S)`` class of the largest logit (first on ties).

    On the GPU ``argmax``. On the CPU torch's argmax over the class axis is slow (0.23 s
    for ``(4, 5, 512, 512)`` float32 on one thread, numpy's 0.03 s); for up to 16 classes a
    running maximum over the classes, in numpy, is faster still and gives the same ids as
    uint8: a later class wins only where it is strictly larger, as in argmax. The ids are
    updated without branches (``ids = max(ids, c * larger)``: ``c`` exceeds every id so
    far), so the time does not depend on how the classes are arranged: 0.8-1.1 ms a 512²
    tile of five classes, noisy or smooth, against 1.5-5 ms for a masked assignment, which
    mispredicts a branch wherever the classes change.

    Examples
    --------
    >>> x = torch.tensor([[[[0.0, 2.0, 1.0]], [[1.0, 2.0, 0.0]], [[0.5, -1.0, 3.0]]]])
    >>> _argmax_classes(x).tolist()
    [[[1, 0, 2]]]
    """
    if logits.device.type != "cpu":
        return logits.argmax(1)
    values = logits.numpy()
    if values.shape[1] > 16:
        return torch.from_numpy(np.argmax(values, axis=1))
    best = values[:, 0].copy()
    ids = np.zeros(best.shape, np.uint8)
    larger = np.empty(best.shape, bool)  # one buffer each, for every class
    step = np.empty(best.shape, np.uint8)
    for c in range(1, values.shape[1]):
        np.greater(values[:, c], best, out=larger)
        np.maximum(best, values[:, c], out=best)
        np.multiply(larger, np.uint8(c), out=step)
        np.maximum(ids, step, out=ids)
    return torch.from_numpy(ids)
