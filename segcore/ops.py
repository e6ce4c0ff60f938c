"""Proposal-based detection ops in pure torch: ROIAlign, box IoU, NMS.

Same semantics as ``torchvision.ops.roi_align`` / ``box_iou`` / ``nms``
(torchvision is not a dependency of segcore). Everything is vectorised torch
and ``roi_align`` is differentiable with respect to the features.
"""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import torch

from segcore.errors import ConfigError

__all__ = ["roi_align", "box_iou", "nms", "bilinear_gradient_ratio"]

Number = Union[float, np.ndarray, torch.Tensor]


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        out = (size, size)
    else:
        out = tuple(int(s) for s in size)  # type: ignore[assignment]
        if len(out) != 2:
            raise ConfigError(f"output_size: expected an int or (height, width), got {size!r}")
    if out[0] < 1 or out[1] < 1:
        raise ConfigError(f"output_size: expected positive sizes, got {size!r}")
    return out  # type: ignore[return-value]


def _rois(boxes: torch.Tensor | Sequence[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    if isinstance(boxes, (list, tuple)):
        parts = []
        for i, b in enumerate(boxes):
            b = torch.as_tensor(b, dtype=like.dtype, device=like.device)
            if b.ndim != 2 or b.shape[1] != 4:
                raise ConfigError(f"boxes[{i}]: expected shape (L, 4), got {tuple(b.shape)}")
            parts.append(torch.cat([torch.full_like(b[:, :1], i), b], 1))
        return torch.cat(parts, 0) if parts else like.new_zeros(0, 5)
    if boxes.ndim != 2 or boxes.shape[1] != 5:
        raise ConfigError(f"boxes: expected shape (K, 5) = (batch index, x1, y1, x2, y2), got {tuple(boxes.shape)}")
    return boxes.to(dtype=like.dtype, device=like.device)


def _axis_samples(start: torch.Tensor, size: torch.Tensor, bins: int, grid: torch.Tensor, g_max: int,
                  limit: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample positions along one axis for every roi.

    Returns, each of shape (K, bins * g_max): low index, high index, low weight,
    high weight (weights already zero for out-of-range or unused samples).
    """
    k = start.shape[0]
    bin_size = size / bins  # (K,)
    p = torch.arange(bins, device=start.device, dtype=start.dtype)
    g = torch.arange(g_max, device=start.device, dtype=start.dtype)
    gridf = grid.to(start.dtype).clamp(min=1)
    # coord[k, p, g] = start + p * bin + (g + 0.5) * bin / grid
    coord = (start[:, None, None] + p[None, :, None] * bin_size[:, None, None]
             + (g[None, None, :] + 0.5) * (bin_size / gridf)[:, None, None])
    used = (g[None, None, :] < grid[:, None, None].to(start.dtype))
    inside = (coord >= -1.0) & (coord <= float(limit))
    c = coord.clamp(min=0.0)
    low = c.detach().floor().long()
    at_edge = low >= limit - 1
    low = torch.where(at_edge, torch.full_like(low, limit - 1), low)
    high = torch.where(at_edge, low, low + 1)
    c = torch.where(at_edge, low.to(c.dtype), c)
    frac_high = c - low.to(c.dtype)
    keep = (inside & used).to(c.dtype)
    w_low = (1.0 - frac_high) * keep
    w_high = frac_high * keep
    shape = (k, bins * g_max)
    return low.reshape(shape), high.reshape(shape), w_low.reshape(shape), w_high.reshape(shape)


def roi_align(
    features: torch.Tensor,
    boxes: torch.Tensor | Sequence[torch.Tensor],
    output_size: int | Sequence[int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = True,
) -> torch.Tensor:
    """ROIAlign: pool each box to a fixed grid by bilinear sampling, no rounding.

    Same semantics as ``torchvision.ops.roi_align``. Each output bin averages
    ``grid_h * grid_w`` regularly spaced samples; each sample is bilinearly
    interpolated: in the cell with corners A (top left), B (top right),
    C (bottom left), D (bottom right) and fractional offsets (a, b),
    ``f = A(1-a)(1-b) + B a(1-b) + C (1-a) b + D a b``.

    Parameters
    ----------
    features : torch.Tensor, shape (N, C, H, W)
        Floating feature maps.
    boxes : torch.Tensor, shape (K, 5), or list of N tensors of shape (L_i, 4)
        Rows ``(batch_index, x1, y1, x2, y2)`` in input-image coordinates
        (the list form gives the batch index by position, as in torchvision).
    output_size : int or (int, int)
        Pooled size ``(oh, ow)``.
    spatial_scale : float, default 1.0
        Multiplies box coordinates to map them onto the feature map
        (e.g. 1/16 for a stride-16 map).
    sampling_ratio : int, default -1
        Samples per bin along each axis; ``<= 0`` means adaptive,
        ``ceil(roi_size / output_size)`` per axis and per roi.
    aligned : bool, default True
        If True, shift box coordinates by -0.5 pixel so that pixel centres
        sit at integer + 0.5 (the correct alignment); if False, the legacy
        Mask R-CNN behaviour, where rois are also forced to be at least
        1 x 1.

    Returns
    -------
    torch.Tensor, shape (K, C, oh, ow)
        Pooled features, same dtype and device as ``features``;
        differentiable with respect to ``features``.

    Notes
    -----
    Boundary rules follow torchvision: a sample with ``y < -1``, ``y > H``,
    ``x < -1`` or ``x > W`` contributes zero (but still counts in the
    average); otherwise coordinates are clamped to ``[0, H - 1]`` /
    ``[0, W - 1]`` before interpolation. Fully vectorised: with the adaptive
    ratio every roi is sampled on the largest grid among the rois and unused
    samples are masked out, so memory is ``O(K * C * oh * ow * G^2)`` with
    ``G`` the largest grid.

    Examples
    --------
    >>> import torch
    >>> x = torch.arange(16.0).reshape(1, 1, 4, 4)
    >>> rois = torch.tensor([[0.0, 0.0, 0.0, 4.0, 4.0]])
    >>> roi_align(x, rois, output_size=2, aligned=True)
    tensor([[[[ 2.5000,  4.5000],
              [10.5000, 12.5000]]]])
    >>> roi_align(x, rois, (1, 1), sampling_ratio=1).item()  # one sample at the centre (1.5, 1.5)
    7.5
    """
    if features.ndim != 4:
        raise ConfigError(f"features: expected shape (N, C, H, W), got {tuple(features.shape)}")
    if not features.is_floating_point():
        raise ConfigError(f"features: expected a floating dtype, got {features.dtype}")
    oh, ow = _pair(output_size)
    rois = _rois(boxes, features)
    n, c, h, w = features.shape
    k = rois.shape[0]
    if k == 0:
        return features.new_zeros(0, c, oh, ow)
    batch = rois[:, 0].detach().long()
    if int(batch.min()) < 0 or int(batch.max()) >= n:
        raise ConfigError(f"boxes: batch indices must lie in [0, {n}), got range "
                          f"[{int(batch.min())}, {int(batch.max())}]")
    offset = 0.5 if aligned else 0.0
    x1 = rois[:, 1] * spatial_scale - offset
    y1 = rois[:, 2] * spatial_scale - offset
    roi_w = rois[:, 3] * spatial_scale - offset - x1
    roi_h = rois[:, 4] * spatial_scale - offset - y1
    if not aligned:
        roi_w = roi_w.clamp(min=1.0)
        roi_h = roi_h.clamp(min=1.0)
    if sampling_ratio > 0:
        grid_h = torch.full((k,), sampling_ratio, dtype=torch.long, device=features.device)
        grid_w = grid_h.clone()
    else:
        grid_h = torch.ceil(roi_h.detach() / oh).long().clamp(min=0)
        grid_w = torch.ceil(roi_w.detach() / ow).long().clamp(min=0)
    gh_max = max(int(grid_h.max()), 1)
    gw_max = max(int(grid_w.max()), 1)
    count = (grid_h * grid_w).clamp(min=1).to(features.dtype)  # (K,)

    y_lo, y_hi, wy_lo, wy_hi = _axis_samples(y1, roi_h, oh, grid_h, gh_max, h)  # (K, Y)
    x_lo, x_hi, wx_lo, wx_hi = _axis_samples(x1, roi_w, ow, grid_w, gw_max, w)  # (K, X)

    flat = features.permute(0, 2, 3, 1).reshape(n, h * w, c)
    bidx = batch[:, None]
    out = None
    for yi, wy in ((y_lo, wy_lo), (y_hi, wy_hi)):
        for xi, wx in ((x_lo, wx_lo), (x_hi, wx_hi)):
            idx = (yi[:, :, None] * w + xi[:, None, :]).reshape(k, -1)  # (K, Y*X)
            weight = (wy[:, :, None] * wx[:, None, :]).reshape(k, -1, 1)
            term = flat[bidx, idx] * weight  # (K, Y*X, C)
            out = term if out is None else out + term
    assert out is not None
    out = out.reshape(k, oh, gh_max, ow, gw_max, c).sum(dim=(2, 4)) / count[:, None, None, None]
    return out.permute(0, 3, 1, 2).contiguous()


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of xyxy boxes, as ``torchvision.ops.box_iou``.

    Parameters
    ----------
    boxes1 : torch.Tensor, shape (N, 4)
    boxes2 : torch.Tensor, shape (M, 4)
        Boxes ``(x1, y1, x2, y2)`` with ``x1 <= x2`` and ``y1 <= y2``.

    Returns
    -------
    torch.Tensor, shape (N, M)
        ``inter / union``; as in torchvision, a pair of empty boxes gives NaN.

    Examples
    --------
    >>> import torch
    >>> box_iou(torch.tensor([[0.0, 0, 2, 2]]), torch.tensor([[1.0, 1, 3, 3], [0.0, 0, 2, 2]]))
    tensor([[0.1429, 1.0000]])
    """
    if boxes1.ndim != 2 or boxes1.shape[-1] != 4 or boxes2.ndim != 2 or boxes2.shape[-1] != 4:
        raise ConfigError(f"boxes1, boxes2: expected shapes (N, 4) and (M, 4), got "
                          f"{tuple(boxes1.shape)} and {tuple(boxes2.shape)}")
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    lt = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area1[:, None] + area2[None, :] - inter)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression, as ``torchvision.ops.nms``.

    Boxes are visited by decreasing score (ties: lower index first); a box is
    kept unless a kept box overlaps it with IoU strictly greater than
    ``iou_threshold``.

    Parameters
    ----------
    boxes : torch.Tensor, shape (K, 4)
        Boxes ``(x1, y1, x2, y2)``.
    scores : torch.Tensor, shape (K,)
        Scores (higher is better).
    iou_threshold : float
        Discard boxes with IoU > ``iou_threshold`` against a kept box.

    Returns
    -------
    torch.Tensor, shape (L,), int64
        Indices into ``boxes`` of the kept boxes, by decreasing score.

    Examples
    --------
    >>> import torch
    >>> b = torch.tensor([[0.0, 0, 10, 10], [1.0, 1, 11, 11], [20.0, 20, 30, 30]])
    >>> nms(b, torch.tensor([0.9, 0.8, 0.7]), 0.5)
    tensor([0, 2])
    >>> nms(b, torch.tensor([0.9, 0.8, 0.7]), 0.7)
    tensor([0, 1, 2])
    """
    if boxes.ndim != 2 or boxes.shape[-1] != 4:
        raise ConfigError(f"boxes: expected shape (K, 4), got {tuple(boxes.shape)}")
    if scores.ndim != 1 or scores.shape[0] != boxes.shape[0]:
        raise ConfigError(f"scores: expected shape ({boxes.shape[0]},), got {tuple(scores.shape)}")
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    order = torch.sort(scores.detach(), descending=True, stable=True).indices
    b = boxes.detach()[order]
    over = (box_iou(b, b) > iou_threshold).cpu().numpy()
    k = b.shape[0]
    suppressed = np.zeros(k, dtype=bool)
    keep = []
    for i in range(k):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed[i + 1:] |= over[i, i + 1:]
    return order[torch.as_tensor(keep, dtype=torch.int64, device=order.device)]


def bilinear_gradient_ratio(a: Number, b: Number) -> Number:
    """Squared gradient norm of bilinear over nearest-neighbour sampling.

    A sample at ``(i + a, j + b)`` with upstream gradient ``delta`` sends
    ``delta * (1-a)(1-b)``, ``delta * a(1-b)``, ``delta * (1-a) b`` and
    ``delta * a b`` to its four corners under bilinear interpolation, but all
    of ``delta`` to one pixel under nearest-neighbour sampling. The ratio of
    squared gradient norms is

    ``R(a, b) = ((1-a)^2 + a^2) ((1-b)^2 + b^2) = (2a^2 - 2a + 1)(2b^2 - 2b + 1)``,

    which is at most 1 (equality at the corners, minimum 1/4 at the cell
    centre a = b = 1/2): bilinear spreads the gradient more smoothly.

    Parameters
    ----------
    a, b : float, numpy.ndarray or torch.Tensor
        Fractional offsets in ``[0, 1]`` (broadcastable).

    Returns
    -------
    float, numpy.ndarray or torch.Tensor
        ``R(a, b)``, broadcast shape of the inputs.

    Examples
    --------
    >>> bilinear_gradient_ratio(0.5, 0.5)
    0.25
    >>> bilinear_gradient_ratio(0.0, 1.0)
    1.0
    """
    return (2 * a * a - 2 * a + 1) * (2 * b * b - 2 * b + 1)
