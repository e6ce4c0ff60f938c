"""Voxel spacing: does a volume match the spacing its model expects?

A 3-D bundle states the spacing it was trained at (``spacing: [z, y, x]`` mm,
canonical axis order). A volume whose spacing differs by more than the
bundle's ``spacing_tolerance`` (relative, per axis) is, as configured
(``--spacing`` / ``RunOptions.spacing``):

* ``resample`` (default): resampled to the model's spacing (image: linear,
  valid mask: nearest), segmented there, and the labels resampled back to the
  input's own grid with nearest neighbour; every output is on the input grid.
* ``refuse``: the scene fails with a clear reason naming both spacings.
* ``ignore``: run at the input's spacing as it is (for models that do not care).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from segcore.errors import InputError


class SpacingPolicy(str, Enum):
    """What to do when a volume's spacing differs from the model's."""

    RESAMPLE = "resample"
    REFUSE = "refuse"
    IGNORE = "ignore"


@dataclass(frozen=True)
class SpacingDecision:
    """The spacing inference runs at, and whether that needs resampling."""

    source: tuple[float, ...]
    target: tuple[float, ...]

    @property
    def resample(self) -> bool:
        return self.source != self.target


def matches(source: Sequence[float], target: Sequence[float], tolerance: float) -> bool:
    """True when every axis differs by at most ``tolerance`` relative to the target.

    Examples
    --------
    >>> matches((1.0, 0.98, 1.0), (1.0, 1.0, 1.0), 0.05), matches((3.0, 1, 1), (1, 1, 1), 0.05)
    (True, False)
    """
    return all(abs(s - t) <= tolerance * t for s, t in zip(source, target))


def decide_spacing(path: str, source: Sequence[float], model: Sequence[float] | None, *,
                   policy: SpacingPolicy, tolerance: float, model_name: str) -> SpacingDecision:
    """Pick the inference spacing for a volume (see the module docstring).

    Examples
    --------
    >>> d = decide_spacing("a.nii", (3.0, 1.0, 1.0), (2.0, 2.0, 2.0),
    ...                    policy=SpacingPolicy.RESAMPLE, tolerance=0.05, model_name="m")
    >>> d.target, d.resample
    ((2.0, 2.0, 2.0), True)
    """
    src = tuple(float(s) for s in source)
    if model is None or policy is SpacingPolicy.IGNORE or matches(src, model, tolerance):
        return SpacingDecision(src, src)
    want = tuple(float(m) for m in model)
    if policy is SpacingPolicy.REFUSE:
        fmt = " x ".join
        raise InputError(
            path,
            f"voxel spacing {fmt(f'{s:g}' for s in src)} mm (z, y, x) differs from the "
            f"{fmt(f'{m:g}' for m in want)} mm model '{model_name}' expects "
            f"(tolerance {tolerance:.0%}); use --spacing resample to resample it",
        )
    return SpacingDecision(src, want)
