"""Held-out attention report for attention models (ViT): where they look vs where they err.

For a model with ``attention_maps(x) -> (N, heads, h, w)`` (``segcore.models.vit``), each
held-out scene is cut into windows, and per window the class-token attention (mean over
heads) is correlated with the per-patch error (fraction of the patch's labelled pixels
that are misclassified) by :func:`segcore.models.vit.attention_error_correlation`.
The mean and spread of those correlations go to ``training.heldout.attention``: a
positive value means the model attends where it is wrong.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from segcore.models.vit import attention_error_correlation


@torch.inference_mode()
def attention_report(net: torch.nn.Module, images: list[np.ndarray], labels: list[np.ndarray],
                     *, mean: list[float], std: list[float], scale: float, window: int = 128,
                     ignore: int = 255) -> dict:
    """Correlation of class-token attention with per-patch error over held-out windows.

    Parameters
    ----------
    net : nn.Module
        With ``stride`` (the patch side) and ``attention_maps(x) -> (N, heads, h, w)``.
    images : list of (C, H, W) ndarray
    labels : list of (H, W) ndarray of int
        ``ignore`` where unlabelled.
    mean, std : list of float
        Input normalisation per channel, after ``scale``.
    scale : float
        Value scale of the images' sample type.
    window : int
        Window side, rounded down to a multiple of the patch side.
    ignore : int
        Unlabelled value.

    Returns
    -------
    dict
        ``correlation_mean``, ``correlation_std`` (None without any window with a
        finite correlation) and ``windows`` (how many counted).
    """
    patch = int(net.stride)
    window = max(patch, window // patch * patch)
    m = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    s = torch.tensor(std, dtype=torch.float32)[:, None, None]
    values = []
    for image, lab in zip(images, labels):
        for r in range(0, image.shape[1] - window + 1, window):
            for c in range(0, image.shape[2] - window + 1, window):
                x = (torch.from_numpy(image[:, r:r + window, c:c + window].astype(np.float32))
                     * scale - m) / s
                truth = lab[r:r + window, c:c + window]
                out = net(x[None])
                logits = out["semantic"] if isinstance(out, dict) else out
                wrong = (logits[0].argmax(0).numpy() != truth) & (truth != ignore)
                known = truth != ignore
                h, w = window // patch, window // patch
                err = wrong.reshape(h, patch, w, patch).sum(axis=(1, 3)) / np.maximum(
                    known.reshape(h, patch, w, patch).sum(axis=(1, 3)), 1)
                attn = net.attention_maps(x[None])[0].mean(0).numpy()
                r_value = attention_error_correlation(attn, err)
                if math.isfinite(r_value):
                    values.append(r_value)
    if not values:
        return {"correlation_mean": None, "correlation_std": None, "windows": 0}
    return {"correlation_mean": float(np.mean(values)), "correlation_std": float(np.std(values)),
            "windows": len(values)}
