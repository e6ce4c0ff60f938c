"""Cross-entropy plus multi-class soft Dice, the default training loss."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from segcore.errors import ConfigError

__all__ = ["SegmentationLoss"]


def _weight(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
        math.isfinite(value) and value >= 0
    ):
        raise ConfigError(
            f"SegmentationLoss {name}: expected a finite number >= 0, received {value!r}"
        )
    return float(value)


class SegmentationLoss(nn.Module):
    """``ce_weight * CE + dice_weight * soft Dice loss`` for dense logits.

    * CE: cross-entropy averaged over valid pixels (``target != ignore_index``);
      0 when no pixel is valid (where ``torch`` would give NaN).
    * Dice: softmax probabilities ``p`` against one-hot targets ``y``, both
      zeroed at ignored pixels; per class ``1 - 2 S_py / (S_p + S_y)`` summed
      over the batch and spatial axes. The mean runs over the classes
      **present**: in the valid target, or the arg-max prediction of some
      valid pixel. A class absent from both is left out (it would be 0/0 or a
      meaningless constant), so a batch with no foreground of a class gives no
      NaN and the same value a batch without that class would. With no valid
      pixel at all the Dice term is 0.

    Parameters
    ----------
    ce_weight : float, default 1.0
    dice_weight : float, default 1.0
    ignore_index : int, default 255
        Target value excluded from both terms.

    Examples
    --------
    >>> loss = SegmentationLoss()
    >>> logits = torch.zeros(1, 2, 2, 2)
    >>> target = torch.tensor([[[0, 1], [1, 255]]])
    >>> loss(logits, target)
    tensor(1.2074)
    """

    def __init__(
        self, *, ce_weight: float = 1.0, dice_weight: float = 1.0, ignore_index: int = 255
    ) -> None:
        super().__init__()
        self.ce_weight = _weight("ce_weight", ce_weight)
        self.dice_weight = _weight("dice_weight", dice_weight)
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
            raise ConfigError(
                f"SegmentationLoss ignore_index: expected an int, received {ignore_index!r}"
            )
        self.ignore_index = ignore_index

    def _check(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.ndim < 2 or not logits.is_floating_point():
            raise ConfigError(
                f"logits: expected a float tensor (N, K, *spatial), received "
                f"{logits.dtype} of shape {tuple(logits.shape)}"
            )
        expected = (logits.shape[0],) + tuple(logits.shape[2:])
        if tuple(target.shape) != expected or target.is_floating_point():
            raise ConfigError(
                f"target: expected an integer tensor of shape {expected}, received "
                f"{target.dtype} of shape {tuple(target.shape)}"
            )
        valid = target != self.ignore_index
        k = logits.shape[1]
        bad = valid & ((target < 0) | (target >= k))
        if bool(bad.any()):
            values = sorted(set(target[bad].unique().tolist()))[:5]
            raise ConfigError(
                f"target: expected class ids in [0, {k}) or ignore_index="
                f"{self.ignore_index}, received {values}"
            )
        return valid

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scalar loss for ``(N, K, *spatial)`` logits and ``(N, *spatial)`` int64 targets."""
        valid = self._check(logits, target)
        target = target.long()
        n_valid = valid.sum()
        ce = F.cross_entropy(logits, target, ignore_index=self.ignore_index, reduction="sum")
        ce = ce / n_valid.clamp(min=1)
        return self.ce_weight * ce + self.dice_weight * self._dice(logits, target, valid)

    def _dice(self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        k = logits.shape[1]
        mask = valid.unsqueeze(1).to(logits.dtype)
        p = torch.softmax(logits, dim=1) * mask
        y = F.one_hot(torch.where(valid, target, 0), k).movedim(-1, 1).to(logits.dtype) * mask
        dims = [0] + list(range(2, logits.ndim))
        s_p, s_y, s_py = p.sum(dims), y.sum(dims), (p * y).sum(dims)
        predicted = torch.bincount(logits.argmax(1)[valid], minlength=k) > 0
        present = (s_y > 0) | predicted
        if not bool(present.any()):
            return logits.sum() * 0.0  # nothing valid: 0, graph kept
        den = torch.where(present, s_p + s_y, torch.ones_like(s_p))
        per_class = 1.0 - 2.0 * s_py / den
        return per_class[present].mean()
