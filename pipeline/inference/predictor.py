"""TilePredictor: a loaded model plus its normalisation, turning raw tiles into labels.

Pure compute on arrays; the Ray actor shell (``actor.py``) adds the store I/O.
Pattern: segcore model -> this class -> Ray actor.
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.bundle import ModelBundle
from segcore.errors import ModelError
from segcore.geometry.padding import pad_to_multiple


class TilePredictor:
    """Run a bundle's network on raw ``(C, h, w)`` tiles.

    Parameters
    ----------
    bundle : ModelBundle
        The model; its network is loaded once, here.
    device : str
        ``"cpu"`` or a CUDA device.
    """

    def __init__(self, bundle: ModelBundle, *, device: str = "cpu") -> None:
        self.bundle = bundle
        self.device = torch.device(device)
        self.net = bundle.build().to(self.device)
        spec = bundle.spec.input
        self._mean = np.asarray(spec.mean, dtype=np.float32)[:, None, None]
        self._std = np.asarray(spec.std, dtype=np.float32)[:, None, None]
        self._scale = spec.value_scale
        self.stride = bundle.spec.stride
        self.channels = spec.channels

    def normalise(self, image: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """``(C, h, w)`` raw samples -> float32 model input; nodata and NaN become 0."""
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

    @torch.inference_mode()
    def logits(self, batch: list[np.ndarray]) -> list[np.ndarray]:
        """Model logits for same-shape normalised tiles: ``[(C, h, w)] -> [(K, h, w)]``."""
        x = torch.from_numpy(np.stack(batch)).to(self.device)
        x, size = pad_to_multiple(x, self.stride, spatial_dims=2)
        out = self.net(x)
        if isinstance(out, dict):
            out = out["semantic"]
        out = out[..., : size[0], : size[1]]
        return [o.float().cpu().numpy() for o in out]

    def predict(
        self, images: list[np.ndarray], valids: list[np.ndarray], *, nodata: int
    ) -> list[np.ndarray]:
        """Class ids ``(h, w)`` per tile, ``nodata`` where the input is invalid."""
        inputs = [self.normalise(im, va) for im, va in zip(images, valids)]
        labels: list[np.ndarray] = [np.empty(0)] * len(inputs)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, x in enumerate(inputs):
            by_shape.setdefault(x.shape, []).append(i)
        for indices in by_shape.values():
            for i, lg in zip(indices, self.logits([inputs[i] for i in indices])):
                lab = lg.argmax(axis=0).astype(np.uint16 if nodata > 255 else np.uint8)
                lab[~valids[i]] = nodata
                labels[i] = lab
        return labels
