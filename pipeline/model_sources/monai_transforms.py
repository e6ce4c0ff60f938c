"""MONAI bundle transforms mapped onto segpipe's own input policy.

A MONAI bundle's ``configs/inference.json`` lists its preprocessing as transform configs
(``{"_target_": "Orientationd", "axcodes": "RAS", ...}``). segpipe never instantiates them
(a ``_target_`` from a bundle made elsewhere is arbitrary Python); each supported transform
is a small pure function of its parameters that updates an :class:`InputPolicy`, and
:data:`PREPROCESSING` is the table of them. Anything else is refused with one line.

* ``LoadImaged``, ``EnsureChannelFirstd``, ``EnsureTyped``, ``ToTensord``, ``AddChanneld``,
  ``CastToTyped`` (to a float type): nothing to do (segpipe reads the volume channel-first
  as float32 itself).
* ``Orientationd(axcodes)``: the model sees each window in that orientation
  (:class:`~pipeline.model_sources.oriented_network.OrientedNetwork` permutes/flips the
  canonical (S, A, R) window and the output back).
* ``Spacingd(pixdim)``: the model's voxel spacing, in canonical (z, y, x) order.
* ``ScaleIntensityRanged``: a fixed linear map (mean/std), and its ``clip``.
* ``NormalizeIntensityd`` / ``ScaleIntensityd``: fixed values where given, else the
  scene's own statistics (:class:`~pipeline.bundle.SceneStatistics`).

The postprocessing transforms segpipe's own outputs replace are accepted
(:data:`POSTPROCESSING`), the others refused.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pipeline.bundle import SceneStatistics
from segcore.errors import ModelError

CANONICAL = ("S", "A", "R")  # segpipe's window axes (z, y, x)
_OPPOSITE = {"L": "R", "R": "L", "A": "P", "P": "A", "S": "I", "I": "S"}
INTENSITY = ("ScaleIntensityRanged", "ScaleIntensityd", "NormalizeIntensityd")


class TransformError(ModelError):
    """A transform the mapping cannot express (its caller adds the model and file)."""


@dataclass(frozen=True)
class InputPolicy:
    """What the preprocessing asks of segpipe's input handling so far.

    ``mean``/``std`` are per channel (``x_model = (x - mean) / std``); ``pixdim`` is in
    the model's axis order (after ``Orientationd``), ``spacing`` in canonical (z, y, x).
    """

    channels: int
    axcodes: str | None = None
    spacing: tuple[float, float, float] | None = None
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    clip: tuple[float, float] | None = None
    keep_zero: bool = False
    scene: SceneStatistics | None = None
    intensity: str | None = None  # the intensity transform already applied
    steps: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.mean:
            object.__setattr__(self, "mean", (0.0,) * self.channels)
            object.__setattr__(self, "std", (1.0,) * self.channels)


def axis_map(axcodes: str) -> tuple[tuple[int, ...], tuple[bool, ...]]:
    """For each model axis: the canonical (S, A, R) axis it runs along and whether it is
    flipped.

    Examples
    --------
    >>> axis_map("RAS")
    ((2, 1, 0), (False, False, False))
    >>> axis_map("LPS")
    ((2, 1, 0), (True, True, False))
    """
    codes = str(axcodes).upper()
    if len(codes) != 3 or any(c not in _OPPOSITE for c in codes):
        raise TransformError(f"Orientationd axcodes must be three of L/R, A/P, S/I, got "
                             f"{axcodes!r}")
    axes, flips = [], []
    for code in codes:
        j = next(j for j, c in enumerate(CANONICAL) if code in (c, _OPPOSITE[c]))
        axes.append(j)
        flips.append(code != CANONICAL[j])
    if sorted(axes) != [0, 1, 2]:
        raise TransformError(f"Orientationd axcodes must name each of L/R, A/P, S/I once, "
                             f"got {axcodes!r}")
    return tuple(axes), tuple(flips)


# --- parameters ------------------------------------------------------------------------


def _number(params: Mapping[str, Any], name: str, default: Any = ...) -> float | None:
    value = params.get(name, default)
    if value is ...:
        raise TransformError(f"parameter '{name}' is required")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TransformError(f"parameter '{name}' must be a number, got {value!r}")
    return float(value)


def _flag(params: Mapping[str, Any], name: str, default: bool = False) -> bool:
    value = params.get(name, default)
    if not isinstance(value, bool):
        raise TransformError(f"parameter '{name}' must be true or false, got {value!r}")
    return value


def _per_channel(params: Mapping[str, Any], name: str, channels: int,
                 channel_wise: bool) -> tuple[float, ...] | None:
    """A fixed ``subtrahend``/``divisor``: one number, or one per channel when
    ``channel_wise``."""
    value = params.get(name)
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (float(value),) * channels
    if (channel_wise and isinstance(value, list) and len(value) == channels
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        return tuple(float(v) for v in value)
    want = f"one number or {channels} (channel_wise)" if channel_wise else "one number"
    raise TransformError(f"parameter '{name}' must be {want}, got {value!r}")


def _only(params: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    """Refuse parameters this mapping does not express (nothing silently ignored)."""
    common = ("keys", "allow_missing_keys", "meta_keys", "meta_key_postfix", "dtype")
    extra = sorted(k for k in params if k not in allowed + common and not k.startswith("_"))
    if extra:
        raise TransformError(f"parameter(s) {', '.join(extra)} not supported "
                             f"(supported: {', '.join(allowed) or 'none'})")


# --- preprocessing ---------------------------------------------------------------------


def no_op(policy: InputPolicy, params: Mapping[str, Any]) -> InputPolicy:
    """Loading, channel-first, typing: segpipe reads float32 channel-first windows itself."""
    return policy


def cast_to_type(policy: InputPolicy, params: Mapping[str, Any]) -> InputPolicy:
    """``CastToTyped`` to a float type is a no-op; to anything else it is refused."""
    dtype = str(params.get("dtype", "float32")).rsplit(".", 1)[-1]
    if dtype not in ("float32", "float", "float64", "double"):
        raise TransformError(f"CastToTyped to {dtype!r} is not supported (float only)")
    return policy


def orientation(policy: InputPolicy, params: Mapping[str, Any]) -> InputPolicy:
    """``Orientationd(axcodes)``: the model's axis order (windows are turned into it)."""
    _only(params, ("axcodes", "labels", "as_closest_canonical"))
    if params.get("as_closest_canonical"):
        axcodes = "RAS"
    else:
        axcodes = params.get("axcodes")
        if not isinstance(axcodes, str):
            raise TransformError(f"Orientationd needs axcodes (e.g. 'RAS'), got {axcodes!r}")
    if params.get("labels") not in (None, [["L", "R"], ["P", "A"], ["I", "S"]],
                                    (("L", "R"), ("P", "A"), ("I", "S"))):
        raise TransformError("Orientationd labels other than the default are not supported")
    if policy.spacing is not None and len(set(policy.spacing)) > 1:
        raise TransformError("Orientationd after an anisotropic Spacingd is not supported "
                             "(pixdim would be in the file's own axis order)")
    axis_map(axcodes)
    return replace(policy, axcodes=axcodes.upper())


def spacing(policy: InputPolicy, params: Mapping[str, Any]) -> InputPolicy:
    """``Spacingd(pixdim)``: the model's voxel size in canonical (z, y, x) order.

    ``pixdim`` is in the model's axis order (after ``Orientationd``); without one it
    must be isotropic. segpipe resamples linearly (``mode`` bilinear).
    """
    _only(params, ("pixdim", "mode", "padding_mode", "align_corners", "diagonal", "scale_extent",
                   "recompute_affine", "min_pixdim", "max_pixdim", "ensure_same_shape"))
    pixdim = params.get("pixdim")
    if isinstance(pixdim, (int, float)) and not isinstance(pixdim, bool):
        pixdim = [pixdim] * 3
    if (not isinstance(pixdim, list) or len(pixdim) != 3
            or not all(isinstance(p, (int, float)) and p > 0 for p in pixdim)):
        raise TransformError(f"Spacingd pixdim must be 3 positive voxel sizes (mm), got "
                             f"{pixdim!r}")
    modes = params.get("mode", "bilinear")
    modes = modes if isinstance(modes, list) else [modes]
    if str(modes[0]).lower() not in ("bilinear", "linear", "trilinear", "1"):
        raise TransformError(f"Spacingd mode {modes[0]!r} is not supported (segpipe resamples "
                             "images linearly: bilinear)")
    if params.get("diagonal") or params.get("min_pixdim") or params.get("max_pixdim"):
        raise TransformError("Spacingd diagonal/min_pixdim/max_pixdim are not supported")
    if policy.axcodes is None:
        if len({float(p) for p in pixdim}) > 1:
            raise TransformError("an anisotropic Spacingd needs an Orientationd before it "
                                 "(its pixdim is in the model's axis order)")
        canonical = tuple(float(p) for p in pixdim)
    else:
        axes, _ = axis_map(policy.axcodes)
        canonical = tuple(float(pixdim[axes.index(j)]) for j in range(3))
    return replace(policy, spacing=canonical)  # type: ignore[arg-type]


def _one_intensity(policy: InputPolicy, name: str) -> None:
    if policy.intensity is not None:
        raise TransformError(f"{name} after {policy.intensity}: one intensity transform only")


def scale_intensity_range(policy: InputPolicy, params: Mapping[str, Any]) -> InputPolicy:
    """``ScaleIntensityRanged``: ``(x - a_min) / (a_max - a_min) * (b_max - b_min) + b_min``,
    i.e. ``mean = a_min - b_min * s``, ``std = s = (a_max - a_min) / (b_max - b_min)``, then
    ``clip`` to ``[b_min, b_max]``.

    Examples
    --------
    >>> p = scale_intensity_range(InputPolicy(1), {"a_min": -57, "a_max": 164, "b_min": 0,
    ...                                            "b_max": 1, "clip": True})
    >>> p.mean, p.std, p.clip
    ((-57.0,), (221.0,), (0.0, 1.0))
    """
    _only(params, ("a_min", "a_max", "b_min", "b_max", "clip"))
    _one_intensity(policy, "ScaleIntensityRanged")
    a_min, a_max = _number(params, "a_min"), _number(params, "a_max")
    b_min, b_max = _number(params, "b_min", None), _number(params, "b_max", None)
    if b_min is None or b_max is None:
        b_min, b_max = 0.0, 1.0  # MONAI: (x - a_min) / (a_max - a_min)
        if params.get("clip"):
            raise TransformError("ScaleIntensityRanged clip needs b_min and b_max")
    scale = (a_max - a_min) / (b_max - b_min)  # type: ignore[operator]
    if not scale > 0:
        raise TransformError(f"ScaleIntensityRanged needs a_max > a_min and b_max > b_min, "
                             f"got a {a_min}..{a_max}, b {b_min}..{b_max}")
    mean = a_min - b_min * scale  # type: ignore[operator]
    clip = (b_min, b_max) if _flag(params, "clip") else None
    return replace(policy, mean=(mean,) * policy.channels, std=(scale,) * policy.channels,
                   clip=clip, intensity="ScaleIntensityRanged")


def normalize_intensity(policy: InputPolicy, params: Mapping[str, Any]) -> InputPolicy:
    """``NormalizeIntensityd``: ``(x - subtrahend) / divisor`` with fixed values, or the
    scene's mean / standard deviation (over its non-zero samples with ``nonzero``, per
    channel with ``channel_wise``) where a value is not given; ``nonzero`` keeps zeros."""
    _only(params, ("subtrahend", "divisor", "nonzero", "channel_wise"))
    _one_intensity(policy, "NormalizeIntensityd")
    nonzero, channel_wise = _flag(params, "nonzero"), _flag(params, "channel_wise")
    sub = _per_channel(params, "subtrahend", policy.channels, channel_wise)
    div = _per_channel(params, "divisor", policy.channels, channel_wise)
    done = replace(policy, keep_zero=nonzero, intensity="NormalizeIntensityd")
    if sub is not None and div is not None:
        return replace(done, mean=sub, std=tuple(d if d != 0 else 1.0 for d in div))
    return replace(done, scene=SceneStatistics(
        statistic="mean_std", nonzero=nonzero, channel_wise=channel_wise,
        subtrahend=list(sub) if sub else None, divisor=list(div) if div else None))


def scale_intensity(policy: InputPolicy, params: Mapping[str, Any]) -> InputPolicy:
    """``ScaleIntensityd``: the scene's minimum and maximum (per channel with
    ``channel_wise``) mapped to ``minv``/``maxv``; or, with both None, ``x * (1 + factor)``."""
    _only(params, ("minv", "maxv", "factor", "channel_wise"))
    _one_intensity(policy, "ScaleIntensityd")
    minv, maxv = _number(params, "minv", 0.0), _number(params, "maxv", 1.0)
    done = replace(policy, intensity="ScaleIntensityd")
    if minv is None and maxv is None:
        factor = _number(params, "factor", None)
        scale = 1.0 + (factor or 0.0)
        if not scale > 0:
            raise TransformError(f"ScaleIntensityd factor must be > -1, got {factor}")
        return replace(done, std=(1.0 / scale,) * policy.channels)
    if minv is None or maxv is None or minv == maxv:
        raise TransformError(f"ScaleIntensityd needs two different minv and maxv (or both "
                             f"null with factor), got {minv}, {maxv}")
    return replace(done, scene=SceneStatistics(
        statistic="min_max", channel_wise=_flag(params, "channel_wise"), minv=minv, maxv=maxv))


PREPROCESSING: dict[str, Callable[[InputPolicy, Mapping[str, Any]], InputPolicy]] = {
    "LoadImaged": no_op,
    "EnsureChannelFirstd": no_op,
    "AddChanneld": no_op,
    "EnsureTyped": no_op,
    "ToTensord": no_op,
    "CastToTyped": cast_to_type,
    "Orientationd": orientation,
    "Spacingd": spacing,
    "ScaleIntensityRanged": scale_intensity_range,
    "NormalizeIntensityd": normalize_intensity,
    "ScaleIntensityd": scale_intensity,
}

# segpipe writes its own outputs (argmax class ids on the input grid): these change nothing
POSTPROCESSING = ("Activationsd", "AsDiscreted", "Invertd", "SaveImaged", "EnsureTyped",
                  "ToTensord", "CopyItemsd")


def check_postprocessing(name: str, params: Mapping[str, Any]) -> None:
    """Refuse postprocessing segpipe would not reproduce (``AsDiscreted`` without argmax,
    ``Activationsd`` other than softmax/sigmoid: both keep the argmax)."""
    argmax = params.get("argmax", False)
    if name == "AsDiscreted" and not (argmax[0] if isinstance(argmax, list) and argmax
                                      else argmax):
        raise TransformError("AsDiscreted without argmax=true is not supported "
                             "(segpipe takes the argmax of the output channels)")
    if name == "AsDiscreted" and params.get("threshold") is not None:
        raise TransformError("AsDiscreted threshold is not supported (argmax only)")
    if name == "Activationsd" and params.get("other") is not None:
        raise TransformError("Activationsd 'other' is not supported (softmax/sigmoid only)")


def transform_name(target: Any) -> str | None:
    """A MONAI transform's class name from ``_target_``: bare (``Spacingd``) or under
    ``monai.`` (``monai.transforms.Spacingd``); None for anything else."""
    if not isinstance(target, str) or target.startswith("$"):
        return None
    if "." not in target:
        return target
    return target.rsplit(".", 1)[-1] if target.startswith("monai.") else None
