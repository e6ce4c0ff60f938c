"""Streaming semantic metrics: confusion matrices that add up across tiles.

A confusion matrix is a sum over pixels, so the matrix of a scene is the sum
of the matrices of its tile cores: workers return small ``(K, K)`` matrices
and the driver adds them, then derives IoU and Dice with
:meth:`SemanticScores.from_confusion`.

Correspondence with torchmetrics 1.9 (checked in the tests)
-----------------------------------------------------------
For ``preds``/``target`` index tensors with ``ignore_index=255``:

* ``per_class_iou[c]`` equals
  ``MulticlassJaccardIndex(num_classes=K, average=None, ignore_index=255)[c]``
  for every class present in truth or prediction; torchmetrics returns 0 for
  an absent class (its ``zero_division``), we return NaN.
* ``miou`` equals ``MulticlassJaccardIndex(num_classes=K, average="macro",
  ignore_index=255)``: both average over classes whose union is non-empty.
* ``per_class_dice[c]`` and ``dice`` equal
  ``MulticlassF1Score(num_classes=K, average=None / "macro",
  ignore_index=255)`` (absent classes: 0 there, NaN here; the macro mean
  skips them in both), and equal ``DiceScore(num_classes=K,
  average="none" / "macro", input_format="index", aggregation_level="global")``
  on the valid pixels (DiceScore has no ``ignore_index``; it also gives NaN
  for absent classes and averages with ``nanmean``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from segcore.errors import ConfigError

__all__ = ["SemanticScores", "confusion_matrix"]


def confusion_matrix(
    pred: np.ndarray,
    target: np.ndarray,
    num_classes: int,
    *,
    ignore_index: int | None = 255,
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """Confusion matrix of integer label arrays, rows = truth, cols = prediction.

    Pixels are left out where ``target == ignore_index``, where ``valid`` is
    False, and where ``pred`` is outside ``[0, K)`` (e.g. a 255 nodata value
    in the prediction).

    Parameters
    ----------
    pred : (*shape) ndarray of int
        Predicted class ids.
    target : (*shape) ndarray of int
        True class ids in ``[0, K)`` or ``ignore_index``.
    num_classes : int
        ``K >= 1``.
    ignore_index : int or None, default 255
        Target value to leave out; ``None`` leaves nothing out.
    valid : (*shape) ndarray of bool, optional
        Extra mask of pixels to count (e.g. the scene's data mask).

    Returns
    -------
    (K, K) ndarray of int64

    Raises
    ------
    ConfigError
        On mismatched shapes, non-integer labels, or target values outside
        ``[0, K)`` other than ``ignore_index`` (the message lists them).

    Examples
    --------
    >>> confusion_matrix(np.array([0, 1, 1, 255]), np.array([0, 1, 0, 1]), 2)
    array([[1, 1],
           [0, 1]])
    """
    pred, target = np.asarray(pred), np.asarray(target)
    _check_labels(pred, target, num_classes, valid)
    keep = (pred >= 0) & (pred < num_classes)
    if ignore_index is not None:
        keep &= target != ignore_index
    if valid is not None:
        keep &= np.asarray(valid, dtype=bool)
    t = target[keep].astype(np.int64)
    bad = (t < 0) | (t >= num_classes)
    if bad.any():
        values = np.unique(t[bad])[:5].tolist()
        raise ConfigError(
            f"target: expected class ids in [0, {num_classes}) or ignore_index="
            f"{ignore_index}, received {values}"
        )
    flat = t * num_classes + pred[keep].astype(np.int64)
    counts = np.bincount(flat, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64)


def _check_labels(
    pred: np.ndarray, target: np.ndarray, num_classes: int, valid: np.ndarray | None
) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ConfigError(f"num_classes: expected an integer >= 1, received {num_classes!r}")
    for name, arr in (("pred", pred), ("target", target)):
        if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
            raise ConfigError(f"{name}: expected an integer array, received dtype {arr.dtype}")
    if pred.shape != target.shape:
        raise ConfigError(
            f"pred: expected the shape of target {target.shape}, received {pred.shape}"
        )
    if valid is not None and np.shape(valid) != target.shape:
        raise ConfigError(
            f"valid: expected the shape of target {target.shape}, received {np.shape(valid)}"
        )


def _nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else math.nan


@dataclass(frozen=True)
class SemanticScores:
    """Per-class and mean IoU and Dice from a confusion matrix.

    Parameters
    ----------
    per_class_iou : dict of str to float
        ``TP / (TP + FP + FN)`` per class; NaN when the class is absent from
        both truth and prediction (empty union).
    per_class_dice : dict of str to float
        ``2 TP / (2 TP + FP + FN)`` per class; NaN likewise.
    miou : float
        Mean of the non-NaN per-class IoUs (NaN if all are NaN).
    dice : float
        Mean of the non-NaN per-class Dice scores.

    Examples
    --------
    >>> cm = np.array([[3, 1, 0], [0, 2, 0], [0, 0, 0]])
    >>> s = SemanticScores.from_confusion(cm, ["bg", "road", "water"])
    >>> round(s.miou, 4), round(s.per_class_iou["road"], 4), s.per_class_iou["water"]
    (0.7083, 0.6667, nan)
    >>> s.to_dict()["per_class"]["water"]
    {'iou': None, 'dice': None}
    """

    per_class_iou: dict[str, float]
    per_class_dice: dict[str, float]
    miou: float
    dice: float

    def __post_init__(self) -> None:
        if list(self.per_class_iou) != list(self.per_class_dice):
            raise ConfigError(
                f"per_class_dice: expected the classes of per_class_iou "
                f"{list(self.per_class_iou)}, received {list(self.per_class_dice)}"
            )

    @classmethod
    def from_confusion(cls, cm: np.ndarray, class_names: Sequence[str]) -> SemanticScores:
        """Scores from a ``(K, K)`` confusion matrix (rows truth, cols prediction).

        Parameters
        ----------
        cm : (K, K) ndarray of int
        class_names : sequence of str
            ``K`` distinct names.
        """
        cm = np.asarray(cm)
        names = [str(n) for n in class_names]
        if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] != len(names):
            raise ConfigError(
                f"cm: expected a square ({len(names)}, {len(names)}) matrix for "
                f"{len(names)} class names, received shape {cm.shape}"
            )
        if len(set(names)) != len(names):
            raise ConfigError(f"class_names: expected distinct names, received {names}")
        cm = cm.astype(np.float64)
        tp = np.diag(cm)
        union = cm.sum(0) + cm.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, tp / union, np.nan)
            dice = np.where(union > 0, 2 * tp / (union + tp), np.nan)
        return cls(
            per_class_iou=dict(zip(names, iou.tolist())),
            per_class_dice=dict(zip(names, dice.tolist())),
            miou=_nanmean(iou),
            dice=_nanmean(dice),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict: ``{"miou", "dice", "per_class": {name: {"iou", "dice"}}}``, NaN as None."""
        return {
            "miou": _nan_to_none(self.miou),
            "dice": _nan_to_none(self.dice),
            "per_class": {
                name: {
                    "iou": _nan_to_none(self.per_class_iou[name]),
                    "dice": _nan_to_none(self.per_class_dice[name]),
                }
                for name in self.per_class_iou
            },
        }
