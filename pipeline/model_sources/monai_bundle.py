"""MONAI bundles: ``configs/metadata.json``, ``configs/inference.json``, ``models/model.ts``.

* ``metadata.json`` ``network_data_format``: the input (``image``: ``num_channels``,
  ``spatial_shape``) and output (``pred``: ``num_channels``, ``channel_def`` -> the class
  names, ids 0..K-1). A ``spatial_shape`` entry ``"16*n"`` is the model's stride (16).
* ``inference.json`` (or ``.yaml``): the ``preprocessing`` transforms, mapped onto
  segpipe's input policy by :mod:`~pipeline.model_sources.monai_transforms`; the
  ``postprocessing`` transforms (those segpipe's own outputs replace are accepted); the
  ``inferer``'s ``roi_size``, which becomes the bundle's ``tile``.
* ``models/model.ts``: the TorchScript network (required). It is run once on a small
  window when the bundle is loaded, so a network whose channels do not match the
  metadata is refused before any scene is read.

Security: the configs are read with MONAI's :class:`monai.bundle.ConfigParser` only to
resolve ``%`` macros and relative ids; ``@`` references are followed here, in the config
dicts. Nothing is evaluated or instantiated: a ``$`` expression or a ``_target_`` outside
MONAI's transforms is arbitrary Python, and a bundle made elsewhere is refused with one
line naming it instead.

The halo is what the planner finds for any TorchScript model (the measured receptive
field, then the effective halo for 3-D models); the inferer's ``overlap`` is not used
(segpipe's windows overlap by their halo and keep only their cores).
"""

from __future__ import annotations

import json
import math
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pipeline.bundle import MODEL_FILE, InputSpec, ModelBundle, ModelFormat, ModelSpec
from pipeline.model_sources.monai_transforms import (
    POSTPROCESSING,
    PREPROCESSING,
    InputPolicy,
    TransformError,
    check_postprocessing,
    transform_name,
)
from segcore.errors import ModelError

METADATA = "configs/metadata.json"
INFERENCE = ("configs/inference.json", "configs/inference.yaml", "configs/inference.yml")
WEIGHTS = "models/model.ts"
SLIDING = ("SlidingWindowInferer", "SlidingWindowInfererAdapt")
# MONAI reads every volume as float32: one scale for every sample type
_VALUE_SCALE = {t: 1.0 for t in ("uint8", "int8", "uint16", "int16", "uint32", "int32",
                                 "uint64", "int64", "float16", "float32", "float64")}
_MAX_STRIDE = 32  # a concrete spatial_shape: its largest power-of-two divisor, at most this
_SPACING_TOLERANCE = 0.01  # MONAI resamples whenever pixdim differs: stay close to that


class MonaiBundleSource:
    """A MONAI bundle directory (``configs/metadata.json``, no ``model.yaml``)."""

    kind = "monai"

    def claims(self, path: Path) -> bool:
        return path.is_dir() and (path / METADATA).is_file() and not (path / MODEL_FILE).exists()

    def load(self, path: Path) -> ModelBundle:
        return load_monai_bundle(path)


def _fail(path: Path, reason: str) -> ModelError:
    return ModelError(f"model '{path}': {reason}")


# --- metadata.json -----------------------------------------------------------------------


def _read_json(path: Path, name: str) -> dict[str, Any]:
    try:
        data = json.loads((path / name).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(path, f"cannot read {name}: {exc}") from exc
    if not isinstance(data, dict):
        raise _fail(path, f"{name} must hold a JSON object, got {type(data).__name__}")
    return data


def _entry(path: Path, section: dict[str, Any], kind: str, preferred: str) -> dict[str, Any]:
    """``network_data_format.<kind>.<preferred>`` (or its only entry)."""
    entries = section.get(kind)
    where = f"{METADATA} network_data_format.{kind}"
    if not isinstance(entries, dict) or not entries:
        raise _fail(path, f"{where} must describe the model's {kind}, got {entries!r}")
    key = preferred if preferred in entries else next(iter(entries))
    if len(entries) > 1 and preferred not in entries:
        raise _fail(path, f"{where} has {sorted(entries)}; expected one named '{preferred}'")
    entry = entries[key]
    if not isinstance(entry, dict):
        raise _fail(path, f"{where}.{key} must be an object, got {entry!r}")
    return entry


def _count(path: Path, entry: dict[str, Any], where: str, minimum: int) -> int:
    value = entry.get("num_channels")
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(path, f"{METADATA} {where}.num_channels must be an integer >= {minimum}, "
                          f"got {value!r}")
    return value


def _stride_of(shape: Any) -> tuple[int, tuple[int, ...] | None]:
    """The stride a ``spatial_shape`` implies and its concrete size (None when symbolic).

    Examples
    --------
    >>> _stride_of(["16*n", "16*n", "16*n"]), _stride_of([96, 96, 64])
    ((16, None), (32, (96, 96, 64)))
    """
    strides, concrete = [], []
    for item in shape:
        if isinstance(item, int) and not isinstance(item, bool) and item > 0:
            strides.append(min(item & -item, _MAX_STRIDE))
            concrete.append(item)
        elif isinstance(item, str) and (m := re.fullmatch(r"\s*(\d+)\s*\*\s*n\s*", item)):
            strides.append(max(1, int(m.group(1))))
        else:
            strides.append(1)
    size = tuple(concrete) if len(concrete) == len(shape) else None
    return math.lcm(*strides), size


def read_metadata(path: Path) -> tuple[int, list[str], int, tuple[int, ...] | None]:
    """``(input channels, class names, stride, concrete input shape or None)``."""
    meta = _read_json(path, METADATA)
    section = meta.get("network_data_format")
    if not isinstance(section, dict):
        raise _fail(path, f"{METADATA} has no network_data_format object")
    image, pred = _entry(path, section, "inputs", "image"), _entry(path, section, "outputs",
                                                                    "pred")
    channels = _count(path, image, "inputs.image", 1)
    classes = _count(path, pred, "outputs.pred", 2)
    shape = image.get("spatial_shape")
    if not isinstance(shape, list) or len(shape) != 3:
        raise _fail(path, f"{METADATA} inputs.image.spatial_shape must list 3 axes (segpipe "
                          f"runs 3-D MONAI bundles), got {shape!r}")
    return (channels, _class_names(path, pred.get("channel_def"), classes), *_stride_of(shape))


def _class_names(path: Path, channel_def: Any, classes: int) -> list[str]:
    """Class names by id from ``channel_def`` (``{"0": "background", ...}``)."""
    if channel_def is None:
        return [f"class_{i}" for i in range(classes)]
    where = f"{METADATA} outputs.pred.channel_def"
    if not isinstance(channel_def, dict):
        raise _fail(path, f"{where} must map channel ids to names, got {channel_def!r}")
    if sorted(channel_def, key=str) != sorted(map(str, range(classes)), key=str):
        raise _fail(path, f"{where} names channels {sorted(channel_def)} but outputs.pred."
                          f"num_channels is {classes} (expected ids 0..{classes - 1})")
    names = [channel_def[str(i)] for i in range(classes)]
    if not all(isinstance(n, str) and n.strip() for n in names):
        raise _fail(path, f"{where} names must be non-empty strings, got {names}")
    return [n.strip() for n in names]


# --- inference.json ----------------------------------------------------------------------


class BundleConfig:
    """``inference.json`` as plain config dicts: ``%`` macros and relative ids resolved by
    MONAI's parser, ``@`` references followed here, ``$`` expressions refused."""

    def __init__(self, path: Path) -> None:
        from monai.bundle import ConfigParser

        self.path = path
        found = [name for name in INFERENCE if (path / name).is_file()]
        if not found:
            raise _fail(path, f"has no {INFERENCE[0]} (the bundle's inference config)")
        self.name = found[0]
        self.parser = ConfigParser()
        try:
            self.parser.read_config(str(path / self.name))
            self.parser.resolve_macro_and_relative_ids()
        except Exception as exc:  # any parse failure is one line
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise _fail(path, f"cannot read {self.name}: {first}") from exc
        if not isinstance(self.parser.get(), dict):
            raise _fail(path, f"{self.name} must hold an object")

    def value(self, key: str) -> Any:
        """The config at ``key`` (MONAI id), references followed; None when absent."""
        return self._resolve(self.parser.get(key), key, depth=0)

    def _resolve(self, value: Any, where: str, depth: int) -> Any:
        if depth > 32:
            raise _fail(self.path, f"{self.name} {where}: references nest too deep")
        if isinstance(value, str) and value.startswith("$"):
            raise _fail(self.path, f"{self.name} {where} is a Python expression ({value!r}); "
                                   "segpipe does not evaluate expressions of a bundle made "
                                   "elsewhere: write the value itself")
        if isinstance(value, str) and value.startswith("@"):
            target = self.parser.get(value[1:], default=_MISSING)
            if target is _MISSING:
                raise _fail(self.path, f"{self.name} {where}: reference {value!r} names "
                                       "nothing in the config")
            return self._resolve(target, value[1:], depth + 1)
        if isinstance(value, dict):
            return {k: self._resolve(v, f"{where}#{k}", depth) for k, v in value.items()}
        if isinstance(value, list):
            return [self._resolve(v, f"{where}#{i}", depth) for i, v in enumerate(value)]
        return value


_MISSING = object()


def _transforms(config: BundleConfig, key: str) -> list[tuple[str, str, dict[str, Any]]]:
    """``(id, transform name, params)`` of a ``Compose`` (or a plain list) at ``key``;
    disabled ones left out; a ``_target_`` that is not a MONAI name is refused."""
    compose = config.value(key)
    if compose is None:
        return []
    if isinstance(compose, dict):
        if transform_name(compose.get("_target_")) != "Compose":
            raise _fail(config.path, f"{config.name} {key} must be a Compose of transforms, "
                                     f"got _target_ {compose.get('_target_')!r}")
        items, base = compose.get("transforms"), f"{key}#transforms"
    else:
        items, base = compose, key
    if not isinstance(items, list):
        raise _fail(config.path, f"{config.name} {base} must list transforms, got {items!r}")
    out = []
    for i, item in enumerate(items):
        where = f"{base}#{i}"
        if not isinstance(item, dict) or "_target_" not in item:
            raise _fail(config.path, f"{config.name} {where} must be a transform with a "
                                     f"_target_, got {item!r}")
        if item.get("_disabled_") in (True, "true", "True"):
            continue
        name = transform_name(item["_target_"]) or str(item["_target_"])
        out.append((where, name, item))
    return out


def _unsupported(config: BundleConfig, name: str, supported: list[str] | tuple[str, ...],
                 what: str = "transform") -> ModelError:
    training = " (a training transform)" if name.startswith("Rand") else ""
    return _fail(config.path, f"MONAI {what} '{name}' in {config.name} is not supported"
                              f"{training} (supported: {', '.join(supported)})")


def input_policy(config: BundleConfig, channels: int) -> InputPolicy:
    """The preprocessing mapped onto segpipe's input policy (one line for the first
    transform that cannot be)."""
    policy = InputPolicy(channels)
    for where, name, params in _transforms(config, "preprocessing"):
        step = PREPROCESSING.get(name)
        if step is None:
            raise _unsupported(config, name, list(PREPROCESSING))
        try:
            policy = step(policy, params)
        except TransformError as exc:
            raise _fail(config.path, f"MONAI transform '{name}' in {config.name} ({where}): "
                                     f"{exc}") from exc
    for where, name, params in _transforms(config, "postprocessing"):
        if name not in POSTPROCESSING:
            raise _unsupported(config, name, POSTPROCESSING, "postprocessing transform")
        try:
            check_postprocessing(name, params)
        except TransformError as exc:
            raise _fail(config.path, f"MONAI postprocessing transform '{name}' in "
                                     f"{config.name} ({where}): {exc}") from exc
    return policy


def roi_size(config: BundleConfig, concrete: tuple[int, ...] | None) -> tuple[int, ...]:
    """The sliding-window inferer's ``roi_size`` (a ``SimpleInferer``: the metadata's
    concrete ``spatial_shape``)."""
    inferer = config.value("inferer")
    name = transform_name(inferer.get("_target_")) if isinstance(inferer, dict) else None
    if name in SLIDING:
        roi = inferer.get("roi_size")
        roi = [roi] * 3 if isinstance(roi, int) and not isinstance(roi, bool) else roi
        if (isinstance(roi, list) and len(roi) == 3
                and all(isinstance(r, int) and not isinstance(r, bool) and r > 0 for r in roi)):
            return tuple(roi)
        raise _fail(config.path, f"{config.name} inferer#roi_size must be 3 positive sizes, "
                                 f"got {roi!r}")
    if name == "SimpleInferer" and concrete is not None:
        return concrete
    raise _fail(config.path, f"{config.name} inferer must be a SlidingWindowInferer with "
                             f"roi_size (or a SimpleInferer with a concrete spatial_shape), "
                             f"got {inferer.get('_target_') if isinstance(inferer, dict) else inferer!r}")


# --- the bundle --------------------------------------------------------------------------


def _name(path: Path) -> str:
    name = path.resolve().name
    return name if name not in ("", ".", "..") else "monai-bundle"


def load_monai_bundle(path: Path) -> ModelBundle:
    """The validated bundle of a MONAI bundle directory (module docstring)."""
    path = Path(path)
    channels, names, stride, concrete = read_metadata(path)
    config = BundleConfig(path)
    policy = input_policy(config, channels)
    roi = roi_size(config, concrete)
    if not (path / WEIGHTS).is_file():
        raise _fail(path, f"has no {WEIGHTS} (segpipe runs the bundle's TorchScript network; "
                          "export one with monai.bundle ckpt_export)")
    from pipeline.prompts import prompt_classes

    try:
        spec = ModelSpec(
            name=_name(path), format=ModelFormat.TORCHSCRIPT, weights=WEIGHTS, ndim=3,
            input=InputSpec(channels=channels, mean=list(policy.mean), std=list(policy.std),
                            value_scale=dict(_VALUE_SCALE), clip=policy.clip,
                            keep_zero=policy.keep_zero, axcodes=policy.axcodes,
                            scene=policy.scene),
            classes=prompt_classes(names), tile=-(-max(roi) // stride) * stride, stride=stride,
            spacing=list(policy.spacing) if policy.spacing else None,
            spacing_tolerance=_SPACING_TOLERANCE,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise _fail(path, f"cannot be used: {where}: {first['msg']}") from exc
    config_file = path / config.name
    bundle = ModelBundle(path=path, spec=spec, root=path, kind="monai",
                         descriptors=(path / METADATA, config_file))
    weights = bundle.weights_path
    check_network(str(path), str(weights), weights.stat().st_mtime_ns, channels,
                  len(names), stride, roi)
    return bundle


@lru_cache(maxsize=16)
def check_network(path: str, weights: str, mtime_ns: int, channels: int, classes: int,
                  stride: int, roi: tuple[int, ...]) -> None:
    """Run the network once on a small zero window; one line when it does not take
    ``channels`` input channels or does not give ``classes`` output channels."""
    import torch

    try:
        net = torch.jit.load(weights, map_location="cpu").eval()
    except Exception as exc:  # any loader failure is one line
        raise ModelError(f"model '{path}': cannot load {WEIGHTS}: "
                         f"{(str(exc).strip().splitlines() or [''])[0]}") from exc
    side = -(-16 // stride) * stride
    out, error = None, None
    for shape in ((side,) * 3, roi):
        try:
            with torch.inference_mode():
                out = net(torch.zeros(1, channels, *shape))
            break
        except Exception as exc:  # noqa: BLE001 - try the inferer's own window next
            error = exc
    if out is None:
        first = (str(error).strip().splitlines() or [type(error).__name__])[-1]
        raise ModelError(f"model '{path}': {WEIGHTS} does not run on a {channels}-channel "
                         f"window as {METADATA} declares: {first}")
    got = out.shape[1] if isinstance(out, torch.Tensor) and out.ndim == 5 else None
    if got != classes:
        what = f"{got} output channels" if got is not None else \
            f"an output of type {type(out).__name__}"
        raise ModelError(f"model '{path}': {WEIGHTS} gives {what} but {METADATA} "
                         f"outputs.pred declares {classes} (num_channels / channel_def)")
