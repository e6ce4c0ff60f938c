"""An ONNX file run by onnxruntime, called like the torch networks the predictor runs.

:class:`OnnxNetwork` takes what :class:`~pipeline.inference.predictor.TilePredictor`
passes a network, a float32 tensor ``(B, C, *S)``, and returns ``(B, K, *S)``:

* **sizes**: a dynamic axis takes the window as it is; a fixed spatial size gets each
  window zero-padded at its end (the windows the planner makes are never larger:
  :mod:`pipeline.model_sources.onnx_file`) and the output cropped back; a fixed batch
  size is met by running the batch in chunks of it (the last one zero-padded);
* **outputs**: the first output; logits and probabilities are both fine (the predictor
  takes the argmax). A single channel is a binary model and becomes two channels
  ``(t - v, v - t)``: class 1 where the value ``v`` exceeds the threshold ``t``, which
  is the metadata's ``seg_thresh`` (default 0.5) when the output is made by a
  ``Sigmoid`` (probabilities), and that threshold's logit (0 for 0.5) otherwise
  (logits). An output whose spatial size differs from the input's is refused;
* **devices**: the CPU execution provider with ``torch.get_num_threads()`` intra-op
  threads (the tile worker sets them) and one inter-op thread; ``.to("cuda")`` puts
  the CUDA execution provider first when onnxruntime has it.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from segcore.errors import ModelError

if TYPE_CHECKING:
    from pipeline.bundle import ModelBundle

log = logging.getLogger(__name__)

CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"
_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
                "tensor(double)": np.float64}


def _session(path: Path, providers: list[str]):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: no provider chatter on stderr
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)


def _fixed(dim) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


def _binary_threshold(path: Path, metadata: dict[str, str]) -> tuple[float, bool]:
    """The single-channel threshold and whether the output holds probabilities."""
    from pipeline.model_sources.onnx_file import read_signature

    probabilities = read_signature(path).output_op == "Sigmoid"
    raw = metadata.get("seg_thresh")
    try:
        threshold = float(raw) if raw is not None else 0.5
    except ValueError:
        raise ModelError(f"model '{path}': metadata 'seg_thresh': expected a number in "
                         f"(0, 1), received {raw!r}") from None
    if not 0.0 < threshold < 1.0:
        raise ModelError(f"model '{path}': metadata 'seg_thresh': expected a number in "
                         f"(0, 1), received {raw!r}")
    if probabilities:
        return threshold, True
    return math.log(threshold / (1.0 - threshold)), False


class OnnxNetwork:
    """The ONNX file of ``bundle`` (``bundle.weights_path``) as a dense network.

    Parameters
    ----------
    bundle : ModelBundle
        A bundle with ``format: onnx``.
    """

    receptive_field = 0  # unknown here: the source measures it (onnx_file)

    def __init__(self, bundle: ModelBundle) -> None:
        self.path = Path(bundle.weights_path)
        self.name = bundle.name
        self.device = torch.device("cpu")
        self._start([CPU])

    def _start(self, providers: list[str]) -> None:
        self.session = _session(self.path, providers)
        self.providers = self.session.get_providers()
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        self.input_type = _NUMPY_TYPES.get(first.type, np.float32)
        self.batch = _fixed(first.shape[0]) if first.shape else None
        self.spatial = tuple(_fixed(d) for d in first.shape[2:])
        self.output_name = self.session.get_outputs()[0].name
        self._threshold: tuple[float, bool] | None = None

    # the torch.nn.Module surface the predictor and the planner use
    def to(self, device: str | torch.device | None = None, **_: object) -> OnnxNetwork:
        """Choose the execution provider for ``device`` (``memory_format`` etc. ignored)."""
        import onnxruntime as ort

        if device is None:
            return self
        device = torch.device(device)
        wanted = [CUDA, CPU] if device.type == "cuda" else [CPU]
        if device.type == "cuda" and CUDA not in ort.get_available_providers():
            log.warning("model '%s': onnxruntime has no %s here (install onnxruntime-gpu); "
                        "running on the CPU", self.name, CUDA)
            wanted = [CPU]
        if wanted[0] != self.providers[0]:
            self._start(wanted)
        self.device = device
        return self

    training = False  # always in inference mode

    def eval(self) -> OnnxNetwork:
        return self

    def train(self, mode: bool = True) -> OnnxNetwork:  # nothing to train
        return self

    def parameters(self):
        return iter(())

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, *S)`` float -> ``(B, K, *S)`` float32 on ``x``'s device."""
        host = x.detach().to("cpu", torch.float32).numpy()
        out = self.run(host)
        return torch.from_numpy(out).to(x.device)

    def run(self, x: np.ndarray) -> np.ndarray:
        """``(B, C, *S)`` float32 -> ``(B, K, *S)`` float32 (module docstring)."""
        size = x.shape[2:]
        padded = self._padded(x)
        step = self.batch or len(padded)
        parts = [self._run_chunk(padded[i:i + step]) for i in range(0, len(padded), step)]
        out = np.concatenate(parts)[: len(x)]
        if out.ndim != x.ndim or out.shape[2:] != padded.shape[2:]:
            raise ModelError(f"model '{self.name}': output: expected the input's spatial "
                             f"size {tuple(padded.shape[2:])}, received {tuple(out.shape)}")
        out = out[(Ellipsis, *(slice(0, n) for n in size))]
        if out.shape[1] == 1:
            out = self._two_classes(out)
        return np.ascontiguousarray(out, dtype=np.float32)

    def _padded(self, x: np.ndarray) -> np.ndarray:
        """Zero-pad every fixed spatial axis to its size (at the end)."""
        pads = [(0, 0), (0, 0)]
        for axis, (n, fixed) in enumerate(zip(x.shape[2:], self.spatial)):
            if fixed is not None and n > fixed:
                raise ModelError(
                    f"model '{self.name}': window {tuple(x.shape[2:])} exceeds the model's "
                    f"fixed input size {tuple(self.spatial)} on axis {axis + 2}: use a "
                    "smaller --tile (window = tile + 2 x halo)")
            pads.append((0, (fixed - n) if fixed is not None else 0))
        return np.pad(x, pads) if any(p for _, p in pads) else x

    def _run_chunk(self, x: np.ndarray) -> np.ndarray:
        missing = (self.batch or len(x)) - len(x)
        if missing:
            x = np.concatenate([x, np.zeros((missing, *x.shape[1:]), x.dtype)])
        try:
            (out,) = self.session.run([self.output_name],
                                      {self.input_name: x.astype(self.input_type, copy=False)})
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"model '{self.name}': onnxruntime failed on an input of shape "
                             f"{x.shape}: {first}") from exc
        return np.asarray(out)

    def _two_classes(self, out: np.ndarray) -> np.ndarray:
        if self._threshold is None:
            meta = self.session.get_modelmeta().custom_metadata_map
            self._threshold = _binary_threshold(self.path, dict(meta))
        margin = out.astype(np.float32) - np.float32(self._threshold[0])
        return np.concatenate([-margin, margin], axis=1)


def impulse_receptive_field_of(path: Path, channels: int) -> int:
    """The receptive field of the ONNX file at ``path`` by impulse responses
    (:func:`segcore.receptive_field_impulse.impulse_receptive_field`; 0: global).

    A fixed input size is the only window probed; dynamic models are probed at 64,
    128 and 256 px (32 and 64 voxels in 3-D).
    """
    from types import SimpleNamespace

    from segcore.receptive_field_impulse import impulse_receptive_field

    net = OnnxNetwork(SimpleNamespace(weights_path=path, name=path.name))  # type: ignore[arg-type]
    fixed = [s for s in net.spatial if s is not None]
    ndim = len(net.spatial)
    if fixed:
        sides: tuple[int, ...] = (min(fixed),)
    else:
        sides = (32, 64) if ndim == 3 else (64, 128, 256)
    return impulse_receptive_field(net.run, channels, ndim, sides=sides)
