"""One-to-one set matching for set-prediction training.

``hungarian_match`` solves the linear assignment problem (minimum total cost,
one-to-one, rectangular allowed) with the shortest-augmenting-path form of the
Hungarian / Jonker-Volgenant algorithm, O(n^2 m) for an ``(n, m)`` matrix with
``n <= m``. ``set_prediction_cost`` builds the DETR-style pairwise cost
between N predictions and M ground-truth objects.

Pure numpy / torch: no scipy at run time (scipy is only a test oracle).
"""

from __future__ import annotations

from typing import Union

import numpy as np
import torch
import torch.nn.functional as F

from segcore.errors import ConfigError

__all__ = ["hungarian_match", "set_prediction_cost", "match_cost", "pairwise_box_iou"]

ArrayLike = Union[torch.Tensor, np.ndarray]


def _as_cost_array(cost: ArrayLike) -> np.ndarray:
    if isinstance(cost, torch.Tensor):
        arr = cost.detach().cpu().to(torch.float64).numpy()
    else:
        try:
            arr = np.asarray(cost, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"cost: expected a real-valued (N, M) matrix, got {type(cost).__name__}") from exc
    if arr.ndim != 2:
        raise ConfigError(f"cost: expected a 2-D (N, M) matrix, got shape {tuple(arr.shape)}")
    if arr.size and not np.isfinite(arr).all():
        n_nan = int(np.isnan(arr).sum())
        n_inf = int(np.isinf(arr).sum())
        raise ConfigError(
            f"cost: every entry must be finite, got {n_nan} NaN and {n_inf} infinite entries "
            "(use a large finite value to forbid a pair)"
        )
    return arr


def _solve(c: np.ndarray) -> np.ndarray:
    """Shortest augmenting paths for ``c`` of shape (n, m), n <= m.

    Returns ``col_of_row`` (n,), the column assigned to each row.
    """
    n, m = c.shape
    # 1-based potentials / bookkeeping; column 0 is the virtual source column.
    u = np.zeros(n + 1)
    v = np.zeros(m + 1)
    p = np.zeros(m + 1, dtype=np.int64)  # p[j] = row (1-based) matched to column j, 0 = free
    way = np.zeros(m + 1, dtype=np.int64)
    for i in range(1, n + 1):
        p[0] = i
        j0 = 0
        minv = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = p[j0]
            free = ~used
            free[0] = False
            cur = c[i0 - 1] - u[i0] - v[1:]
            better = free[1:] & (cur < minv[1:])
            minv[1:][better] = cur[better]
            way[1:][better] = j0
            cand = np.where(free[1:], minv[1:], np.inf)
            j1 = int(np.argmin(cand)) + 1
            delta = cand[j1 - 1]
            u[p[used]] += delta
            v[used] -= delta
            minv[free] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
    col_of_row = np.empty(n, dtype=np.int64)
    cols = np.nonzero(p[1:])[0]
    col_of_row[p[1:][cols] - 1] = cols
    return col_of_row


def hungarian_match(cost: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimum-cost one-to-one assignment (linear sum assignment).

    Parameters
    ----------
    cost : torch.Tensor or numpy.ndarray, shape (N, M)
        Real, finite pairwise costs; ``cost[i, j]`` is the cost of assigning
        row (prediction) ``i`` to column (ground truth) ``j``. Rectangular
        matrices are allowed in either orientation.

    Returns
    -------
    row_idx, col_idx : torch.Tensor, shape (min(N, M),), int64
        The assigned pairs ``(row_idx[k], col_idx[k])``, sorted by row, each
        row and each column used at most once, minimising
        ``cost[row_idx, col_idx].sum()``. Same convention as
        ``scipy.optimize.linear_sum_assignment``. With ties any optimal
        assignment may be returned.

    Raises
    ------
    ConfigError
        If ``cost`` is not 2-D or holds NaN or infinite entries.

    Notes
    -----
    Shortest-augmenting-path Hungarian (Jonker-Volgenant style) with dual
    potentials, O(n^2 m) for n = min(N, M), m = max(N, M); the inner loop is
    vectorised over columns in numpy (float64).

    Examples
    --------
    >>> import torch
    >>> cost = torch.tensor([[4.0, 1.0, 3.0], [2.0, 0.0, 5.0], [3.0, 2.0, 2.0]])
    >>> rows, cols = hungarian_match(cost)
    >>> rows.tolist(), cols.tolist()
    ([0, 1, 2], [1, 0, 2])
    >>> hungarian_match(torch.zeros(0, 3))[0].shape
    torch.Size([0])
    >>> rows, cols = hungarian_match([[1.0, 0.0, 9.0]])
    >>> rows.tolist(), cols.tolist()
    ([0], [1])
    """
    c = _as_cost_array(cost)
    n, m = c.shape
    if n == 0 or m == 0:
        empty = torch.zeros(0, dtype=torch.int64)
        return empty, empty.clone()
    if n <= m:
        rows = np.arange(n, dtype=np.int64)
        cols = _solve(c)
    else:
        col_rows = _solve(c.T)  # for each column j (as a row of c.T) its row in c
        order = np.argsort(col_rows, kind="stable")
        rows = col_rows[order]
        cols = order.astype(np.int64)
    return torch.from_numpy(rows.copy()), torch.from_numpy(cols.copy())


def pairwise_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of xyxy boxes.

    Parameters
    ----------
    boxes1 : torch.Tensor, shape (N, 4)
    boxes2 : torch.Tensor, shape (M, 4)
        Boxes as x1, y1, x2, y2 with x2 >= x1, y2 >= y1.

    Returns
    -------
    torch.Tensor, shape (N, M)
        Intersection over union; 0 where the union is empty.

    Examples
    --------
    >>> import torch
    >>> pairwise_box_iou(torch.tensor([[0.0, 0, 2, 2]]), torch.tensor([[1.0, 0, 3, 2]]))
    tensor([[0.3333]])
    """
    area1 = (boxes1[:, 2] - boxes1[:, 0]).clamp(min=0) * (boxes1[:, 3] - boxes1[:, 1]).clamp(min=0)
    area2 = (boxes2[:, 2] - boxes2[:, 0]).clamp(min=0) * (boxes2[:, 3] - boxes2[:, 1]).clamp(min=0)
    lt = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[:, None] + area2[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(union.dtype).tiny), torch.zeros_like(inter))


def set_prediction_cost(
    class_logprob: torch.Tensor,
    boxes_pred: torch.Tensor,
    mask_pred: torch.Tensor | None,
    gt_classes: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_masks: torch.Tensor | None,
    *,
    w_cls: float,
    w_l1: float,
    w_iou: float,
    w_dice: float = 0.0,
    w_focal: float = 0.0,
    focal_alpha: float = 0.25,
    focal_gamma: float = 2.0,
) -> torch.Tensor:
    r"""DETR-style pairwise matching cost between N predictions and M targets.

    .. math::

        c_{ij} = w_{cls}\,(-\log p_i(c_j)) + w_{L1}\,\lVert b_i - b_j \rVert_1
               + w_{IoU}\,(1 - \mathrm{IoU}(b_i, b_j))
               + w_{dice}\,D_{ij} + w_{focal}\,F_{ij}

    Parameters
    ----------
    class_logprob : torch.Tensor, shape (N, K)
        Log class probabilities of each prediction (e.g. ``log_softmax``),
        including any "no object" column.
    boxes_pred : torch.Tensor, shape (N, 4)
        Predicted boxes, xyxy.
    mask_pred : torch.Tensor, shape (N, \*S), or None
        Predicted mask **logits** (probabilities are ``sigmoid(mask_pred)``);
        any spatial shape S, flattened. Needed only when ``w_dice`` or
        ``w_focal`` is non-zero.
    gt_classes : torch.Tensor, shape (M,), int
        Ground-truth class index of each target, in ``[0, K)``.
    gt_boxes : torch.Tensor, shape (M, 4)
        Ground-truth boxes, xyxy.
    gt_masks : torch.Tensor, shape (M, \*S), or None
        Binary (or soft) ground-truth masks, same S as ``mask_pred``.
    w_cls, w_l1, w_iou, w_dice, w_focal : float
        Non-negative term weights.
    focal_alpha, focal_gamma : float
        Focal-loss parameters (defaults 0.25 and 2).

    Returns
    -------
    torch.Tensor, shape (N, M)
        The cost matrix (same floating dtype as ``boxes_pred``), suitable for
        :func:`hungarian_match`. Differentiable, though matching usually runs
        under ``torch.no_grad()``.

    Notes
    -----
    With p = sigmoid(mask logits) and t the target mask, both flattened:

    - Dice: :math:`D_{ij} = 1 - (2\,p_i \cdot t_j + 1) / (\sum p_i + \sum t_j + 1)`.
    - Focal (mean over pixels):
      :math:`F_{ij} = \frac{1}{|S|}\sum_s [t\,\alpha (1-p)^\gamma (-\log p)
      + (1-t)(1-\alpha) p^\gamma (-\log(1-p))]`.

    Raises
    ------
    ConfigError
        On inconsistent shapes, negative weights, class indices out of
        range, or mask weights without masks.

    Examples
    --------
    >>> import torch
    >>> logp = torch.log(torch.tensor([[0.5, 0.5], [0.9, 0.1]]))
    >>> boxes = torch.tensor([[0.0, 0, 2, 2], [5.0, 5, 6, 6]])
    >>> cost = set_prediction_cost(logp, boxes, None, torch.tensor([0]),
    ...                            torch.tensor([[0.0, 0, 2, 2]]), None,
    ...                            w_cls=1.0, w_l1=1.0, w_iou=1.0)
    >>> cost.shape
    torch.Size([2, 1])
    >>> round(float(cost[0, 0]), 4)  # -log 0.5, boxes equal
    0.6931
    """
    for name, w in (("w_cls", w_cls), ("w_l1", w_l1), ("w_iou", w_iou), ("w_dice", w_dice), ("w_focal", w_focal)):
        if not np.isfinite(w) or w < 0:
            raise ConfigError(f"{name}: expected a finite non-negative weight, got {w}")
    if class_logprob.ndim != 2:
        raise ConfigError(f"class_logprob: expected shape (N, K), got {tuple(class_logprob.shape)}")
    n, k = class_logprob.shape
    if boxes_pred.shape != (n, 4):
        raise ConfigError(f"boxes_pred: expected shape ({n}, 4), got {tuple(boxes_pred.shape)}")
    if gt_classes.ndim != 1:
        raise ConfigError(f"gt_classes: expected shape (M,), got {tuple(gt_classes.shape)}")
    m = gt_classes.shape[0]
    if gt_boxes.shape != (m, 4):
        raise ConfigError(f"gt_boxes: expected shape ({m}, 4), got {tuple(gt_boxes.shape)}")
    gt_classes = gt_classes.long()
    if m and (int(gt_classes.min()) < 0 or int(gt_classes.max()) >= k):
        raise ConfigError(f"gt_classes: expected indices in [0, {k}), got range "
                          f"[{int(gt_classes.min())}, {int(gt_classes.max())}]")
    dtype = boxes_pred.dtype if boxes_pred.is_floating_point() else torch.float32
    boxes_pred = boxes_pred.to(dtype)
    gt_boxes = gt_boxes.to(dtype)
    cost = torch.zeros(n, m, dtype=dtype, device=boxes_pred.device)
    if w_cls:
        cost = cost + w_cls * (-class_logprob.to(dtype)[:, gt_classes])
    if w_l1:
        cost = cost + w_l1 * torch.cdist(boxes_pred, gt_boxes, p=1) if n and m else cost
    if w_iou:
        cost = cost + w_iou * (1.0 - pairwise_box_iou(boxes_pred, gt_boxes))
    if w_dice or w_focal:
        if mask_pred is None or gt_masks is None:
            raise ConfigError("mask_pred, gt_masks: required when w_dice or w_focal is non-zero, got None")
        if mask_pred.shape[0] != n or gt_masks.shape[0] != m or mask_pred.shape[1:] != gt_masks.shape[1:]:
            raise ConfigError(f"mask_pred, gt_masks: expected shapes (N, *S) and (M, *S) with N={n}, M={m}, "
                              f"got {tuple(mask_pred.shape)} and {tuple(gt_masks.shape)}")
        x = mask_pred.reshape(n, -1).to(dtype)
        t = gt_masks.reshape(m, -1).to(dtype)
        s = x.shape[1]
        p = torch.sigmoid(x)
        if w_dice:
            num = 2.0 * p @ t.T + 1.0
            den = p.sum(1)[:, None] + t.sum(1)[None, :] + 1.0
            cost = cost + w_dice * (1.0 - num / den)
        if w_focal:
            pos = focal_alpha * (1 - p) ** focal_gamma * F.softplus(-x)  # -log p
            neg = (1 - focal_alpha) * p ** focal_gamma * F.softplus(x)   # -log(1 - p)
            cost = cost + w_focal * (pos @ t.T + neg @ (1 - t).T) / max(s, 1)
    return cost


#: Alias of :func:`set_prediction_cost`.
match_cost = set_prediction_cost
