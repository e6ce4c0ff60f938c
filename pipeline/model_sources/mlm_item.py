"""A STAC Item with the Machine Learning Model (MLM) extension as a model descriptor.

The Item (``--model item.json``) describes the model; its asset with the role
``mlm:model`` holds the weights, a TorchScript or ``torch.export`` program or an ONNX
file (``mlm:artifact_type``: ``torch.jit.script``, ``torch.jit.trace``,
``torch.jit.save``, ``torch.export``, ``onnx``). The fields map onto a
:class:`~pipeline.bundle.ModelSpec`:

* ``mlm:name`` -> ``name`` (the Item id when absent);
* ``mlm:input[0]``: ``bands`` -> ``input.bands`` as names (a band's ``common_name``
  where the model asset or the Item declares one, so a STAC input picks it by the
  same name), ``input.shape`` / ``dim_order`` -> channels and, when height and width
  are fixed, the tile; ``value_scaling`` (MLM 1.4) or ``norm_type`` + ``statistics``
  (MLM 1.0-1.3) -> ``mean`` / ``std`` applied to the samples as stored
  (``value_scale`` 1 for every sample type): ``z-score`` (mean, stddev), ``min-max``
  (minimum, maximum), ``offset``, ``scale``; clipping, custom processing and any
  ``resize_type`` are refused;
* ``mlm:output[0]``: ``tasks`` must include ``semantic-segmentation`` (or
  ``segmentation``); ``classification:classes`` (``value``, ``name``,
  ``color_hint``) -> the class table, values 0..K-1;
* ``gsd`` -> ``resolution``; ``mlm:architecture``, ``mlm:framework``,
  ``mlm:accelerator`` and ``mlm:total_parameters`` are kept for ``segpipe models
  inspect`` (under ``training``).

The weights are read from local files only, relative to the Item (an ``s3://`` or
``http(s)://`` href is refused for now), and must lie inside the Item's folder tree.
Anything that cannot be run as described is one :class:`~segcore.errors.ModelError`
line naming the Item and the field.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from pydantic import ValidationError

from pipeline.bundle import ClassSpec, InputSpec, ModelBundle, ModelFormat, ModelSpec
from pipeline.bundle_paths import check_weights, weights_inside
from segcore.errors import ModelError

MLM_SCHEMAS = ("https://stac-extensions.github.io/mlm/", "https://crim-ca.github.io/mlm-extension/")
MAX_ITEM_BYTES = 16 * 2**20
MIN_TILE = 16  # ModelSpec.tile's lower bound
SEGMENTATION_TASKS = ("semantic-segmentation", "segmentation")
ARTIFACT_FORMATS = {
    "torch.jit.script": ModelFormat.TORCHSCRIPT,
    "torch.jit.trace": ModelFormat.TORCHSCRIPT,
    "torch.jit.save": ModelFormat.TORCHSCRIPT,
    "torch.jit": ModelFormat.TORCHSCRIPT,
    "torch.export": ModelFormat.EXPORT,
    "torch.export.save": ModelFormat.EXPORT,
    "onnx": ModelFormat.ONNX,
}
_DIMS = {"batch": "batch", "channel": "channel", "channels": "channel", "band": "channel",
         "bands": "channel", "height": "height", "y": "height", "width": "width", "x": "width"}
CLIP_TYPES = ("clip", "clip-min", "clip-max")
UNBOUNDED = 3.0e38  # a one-sided clip's open end (finite: it is stored as JSON)
_RAW_SCALE = {dtype: 1.0 for dtype in InputSpec.model_fields["value_scale"].default_factory()}


class MlmItemSource:
    """``--model item.json``: a STAC Item whose ``stac_extensions`` include MLM."""

    kind = "mlm"

    def claims(self, path: Path) -> bool:
        """A ``.json`` file under :data:`MAX_ITEM_BYTES` that names the MLM schema."""
        try:
            if path.suffix.lower() != ".json" or not path.is_file() \
                    or path.stat().st_size > MAX_ITEM_BYTES:
                return False
            text = path.read_bytes()
        except OSError:
            return False
        return any(schema.encode() in text for schema in MLM_SCHEMAS)

    def load(self, path: Path) -> ModelBundle:
        """The bundle the Item describes (weights checked to exist, not loaded)."""
        item = _read_item(path)
        props = item.get("properties") or {}
        key, asset = _model_asset(item, path)
        fields = _MlmFields(path, props, asset, key)
        weights, model_format, model_input = _weights(path, asset, key), fields.format(), \
            fields.input_spec()
        tiling = {"tile": fields.tile()}
        if model_format is ModelFormat.ONNX:
            tiling = _onnx_tiling(path, path.parent / weights, model_input.channels,
                                  tiling["tile"])
        spec = _spec(path, name=fields.name(item), format=model_format, weights=weights,
                     input=model_input, classes=fields.classes(), **tiling,
                     resolution=_positive(props.get("gsd")), training=fields.provenance(item))
        return ModelBundle(path=path, spec=spec, root=path.parent, descriptors=(path,),
                           kind=self.kind)


def _fail(path: Path, message: str) -> ModelError:
    return ModelError(f"model '{path}': {message}")


def _read_item(path: Path) -> dict[str, Any]:
    try:
        item = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(path, f"cannot read the STAC item: {exc}") from exc
    if not isinstance(item, dict) or item.get("type") != "Feature":
        kind = item.get("type") if isinstance(item, dict) else type(item).__name__
        raise _fail(path, f"expected a STAC Item (\"type\": \"Feature\") with the MLM "
                          f"extension, got type {kind!r}")
    extensions = item.get("stac_extensions") or []
    if not any(str(e).startswith(MLM_SCHEMAS) for e in extensions):
        raise _fail(path, f"stac_extensions: expected the MLM schema ({MLM_SCHEMAS[0]}...), "
                          f"got {extensions}")
    return item


def _model_asset(item: dict[str, Any], path: Path) -> tuple[str, dict[str, Any]]:
    """The first asset with the role ``mlm:model``."""
    for key, asset in (item.get("assets") or {}).items():
        if isinstance(asset, dict) and "mlm:model" in (asset.get("roles") or []):
            return key, asset
    raise _fail(path, "assets: expected an asset with the role 'mlm:model' (the weights), "
                      f"got {sorted(item.get('assets') or {})}")


def _weights(path: Path, asset: dict[str, Any], key: str) -> str:
    """The model asset's href as a path relative to the Item's folder (checked inside)."""
    href = str(asset.get("href") or "")
    where = f"assets.{key}.href"
    url = urlparse(href)
    if url.scheme not in ("", "file") and not re.fullmatch(r"[A-Za-z]", url.scheme):
        raise _fail(path, f"{where}: {href!r} is not a local file; segpipe reads MLM model "
                          "assets from local files for now (copy the weights beside the item)")
    local = Path(unquote(url.path)) if url.scheme == "file" else Path(href)
    if not href or not local.name:
        raise _fail(path, f"{where}: expected the weights file, got {href!r}")
    full = Path(os.path.normpath(local if local.is_absolute() else path.parent / local))
    relative = os.path.relpath(full, path.parent)
    try:
        check_weights(relative.replace(os.sep, "/"))
    except ValueError:
        raise _fail(path, f"{where}: expected a file inside the item's folder "
                          f"{path.parent}, got {href!r}, which leads to {full}") from None
    weights_inside(path.parent, relative, model=str(path))
    if not full.is_file():
        raise _fail(path, f"{where}: weights file {full} is missing")
    return relative


def _onnx_tiling(path: Path, weights: Path, channels: int, tile: int) -> dict[str, Any]:
    """An ONNX model's receptive field by impulse responses and, for a fixed input size,
    windows of exactly that size, as for an ``.onnx`` file
    (:mod:`pipeline.model_sources.onnx_file`)."""
    from pipeline.model_sources.onnx_file import (
        measured_receptive_field,
        read_signature,
    )
    from segcore.receptive_field import halo_for

    window = read_signature(weights).fixed_window
    rf = measured_receptive_field(weights, channels)
    if window is None:
        return {"tile": tile, "receptive_field": rf or None}
    halo = halo_for(rf, 1) if rf > 0 else window // 6  # a global model: a sixth
    if window - 2 * halo < MIN_TILE:
        raise _fail(path, f"the ONNX model's fixed {window} px input leaves a tile core of "
                          f"{window - 2 * halo} px beside its {halo} px halo; expected at "
                          f"least {MIN_TILE}")
    return {"tile": window - 2 * halo, "overlap": halo, "receptive_field": rf or None}


def _positive(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and value > 0 else None


def _spec(path: Path, **fields: Any) -> ModelSpec:
    try:
        return ModelSpec(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "spec"
        raise _fail(path, f"the MLM fields give an invalid model: {where}: {first['msg']}") \
            from None


class _MlmFields:
    """Reads and checks the MLM fields of one Item (``properties``, then the model asset)."""

    def __init__(self, path: Path, props: dict[str, Any], asset: dict[str, Any],
                 key: str) -> None:
        self.path, self.props, self.asset, self.key = path, props, asset, key
        self.inp = self._first("mlm:input")
        self.out = self._first("mlm:output")

    def _get(self, name: str) -> Any:
        return self.asset.get(name, self.props.get(name))

    def _first(self, name: str) -> dict[str, Any]:
        value = self.props.get(name, self.asset.get(name))
        if not isinstance(value, list) or not value or not isinstance(value[0], dict):
            raise self._fail(f"{name}: expected a list of {name[4:]} objects, got {value!r}")
        return value[0]

    def _fail(self, message: str) -> ModelError:
        return _fail(self.path, message)

    # ---------------------------------------------------------------- model and format

    def name(self, item: dict[str, Any]) -> str:
        name = str(self.props.get("mlm:name") or item.get("id") or self.path.stem)
        return re.sub(r"[/\\\x00-\x1f\x7f]", "-", name).strip() or self.path.stem

    def format(self) -> ModelFormat:
        artifact = self.asset.get("mlm:artifact_type")
        where = f"assets.{self.key}.mlm:artifact_type"
        if artifact is None:
            framework = str(self._get("mlm:framework") or "").lower()
            if framework == "onnx" or str(self.asset.get("href", "")).lower().endswith(".onnx"):
                return ModelFormat.ONNX
            raise self._fail(f"{where}: missing; expected one of {sorted(ARTIFACT_FORMATS)}")
        found = ARTIFACT_FORMATS.get(str(artifact).lower())
        if found is None:
            raise self._fail(f"{where}: expected one of {sorted(ARTIFACT_FORMATS)} (a "
                             f"program segpipe can load without its source code), got "
                             f"{artifact!r}")
        return found

    def provenance(self, item: dict[str, Any]) -> dict[str, Any]:
        """What the Item says about the model that does not change a run."""
        info = {"source": "stac-mlm", "item": item.get("id")}
        for field in ("architecture", "framework", "framework_version", "accelerator",
                      "accelerator_constrained", "total_parameters", "memory_size"):
            if (value := self._get(f"mlm:{field}")) is not None:
                info[field] = value
        return info

    # ---------------------------------------------------------------- input

    def _dims(self) -> dict[str, int]:
        """Input size per dimension kind (``-1`` variable)."""
        structure = self.inp.get("input") or {}
        shape, order = structure.get("shape"), structure.get("dim_order")
        where = "mlm:input[0].input"
        if not isinstance(shape, list) or not isinstance(order, list) or len(shape) != len(order):
            raise self._fail(f"{where}: expected shape and dim_order of the same length, "
                             f"got shape {shape!r}, dim_order {order!r}")
        kinds = [_DIMS.get(str(d).lower()) for d in order]
        if None in kinds or "height" not in kinds or "width" not in kinds \
                or len(set(kinds)) != len(kinds):
            raise self._fail(f"{where}.dim_order: segpipe runs 2-D models on (batch, channel, "
                             f"height, width) input, got {order}")
        if not all(isinstance(n, int) and (n > 0 or n == -1) for n in shape):
            raise self._fail(f"{where}.shape: expected sizes > 0 or -1, got {shape}")
        return dict(zip(kinds, shape, strict=True))

    def _band_names(self) -> list[str]:
        bands = self.inp.get("bands")
        if bands is None:
            return []
        if not isinstance(bands, list):
            raise self._fail(f"mlm:input[0].bands: expected a list, got {bands!r}")
        names = []
        for band in bands:
            if isinstance(band, dict) and (band.get("expression") or band.get("format")):
                raise self._fail(f"mlm:input[0].bands: derived band {band.get('name')!r} "
                                 "(format/expression) is not supported; list stored bands")
            name = band.get("name") if isinstance(band, dict) else band
            if not isinstance(name, str) or not name:
                raise self._fail(f"mlm:input[0].bands: expected band names, got {band!r}")
            names.append(self._common_names().get(name, name))
        return names

    def _common_names(self) -> dict[str, str]:
        """Band name -> common name, from the model asset's or the Item's band lists."""
        found: dict[str, str] = {}
        for holder in (self.props, self.asset):
            for field in ("eo:bands", "bands", "raster:bands"):
                for band in holder.get(field) or []:
                    if not isinstance(band, dict) or not band.get("name"):
                        continue
                    common = band.get("common_name") or band.get("eo:common_name")
                    if common:
                        found[str(band["name"])] = str(common)
        return found

    def channels(self) -> tuple[int, list[str] | None]:
        dims, names = self._dims(), self._band_names()
        declared = dims.get("channel", -1)
        if declared == -1 and not names:
            raise self._fail("mlm:input[0]: expected a channel size in input.shape or the "
                             "band names in bands, got neither")
        if declared != -1 and names and declared != len(names):
            raise self._fail(f"mlm:input[0]: input.shape has {declared} channels but bands "
                             f"lists {len(names)} ({', '.join(names)})")
        return (declared if declared != -1 else len(names)), (names or None)

    def tile(self) -> int:
        """The fixed input height/width when both are given, else the default tile."""
        dims = self._dims()
        height, width = dims["height"], dims["width"]
        if height > 0 and width > 0:
            return min(height, width)
        return ModelSpec.model_fields["tile"].default

    def input_spec(self) -> InputSpec:
        for field in ("resize_type", "pre_processing_function"):
            if self.inp.get(field) is not None:
                raise self._fail(f"mlm:input[0].{field}: expected null (segpipe feeds "
                                 f"tiles as read), got {self.inp[field]!r}")
        if self.out.get("post_processing_function") is not None:
            raise self._fail("mlm:output[0].post_processing_function: expected null (segpipe "
                             "takes the class of highest score), got "
                             f"{self.out['post_processing_function']!r}")
        channels, names = self.channels()
        mean, std, clip = self._scaling(channels)
        try:
            return InputSpec(channels=channels, bands=names, mean=mean, std=std,
                             value_scale=dict(_RAW_SCALE), clip=clip)
        except ValidationError as exc:
            raise self._fail(f"mlm:input[0]: {exc.errors()[0]['msg']}") from None

    def _scaling(self, channels: int) -> tuple[list[float], list[float],
                                                tuple[float, float] | None]:
        """Per-channel ``(mean, std)`` and the clip range with
        ``x_model = clip((x - mean) / std)``."""
        clip = None
        if "value_scaling" in self.inp:
            objects = self.inp["value_scaling"]
            where = "mlm:input[0].value_scaling"
            if objects is None:
                return [0.0] * channels, [1.0] * channels, None
            objects = self._per_channel(objects, channels, where)
            if any(isinstance(o, dict) and o.get("type") in CLIP_TYPES for o in objects):
                steps, clip = [(0.0, 1.0)] * channels, self._same_clip(objects, where)
            else:
                steps = [self._value_scaling(o, f"{where}[{i}]") for i, o in enumerate(objects)]
        else:
            steps, clip = self._legacy(channels)
        mean, std = [m for m, _ in steps], [s for _, s in steps]
        if any(not s > 0 for s in std):
            raise self._fail(f"mlm:input[0]: the scaling divides by {std}; expected > 0")
        return mean, std, clip

    def _same_clip(self, objects: list[Any], where: str) -> tuple[float, float]:
        """The one clip range of every channel (segpipe clips all channels alike)."""
        first = objects[0]
        if any(o != first for o in objects) or first.get("type") not in CLIP_TYPES:
            raise self._fail(f"{where}: clipping some channels, or channels differently, is "
                             "not representable: segpipe clips every channel alike after "
                             "normalisation; expected the same clip object for every channel")
        needs = {"clip": ("minimum", "maximum"), "clip-min": ("minimum",),
                 "clip-max": ("maximum",)}[first["type"]]
        if not all(_number(first.get(k)) for k in needs):
            raise self._fail(f"{where}[0]: type {first['type']} needs numbers {list(needs)}, "
                             f"got {first!r}")
        return (float(first.get("minimum", -UNBOUNDED)), float(first.get("maximum", UNBOUNDED)))

    def _per_channel(self, objects: Any, channels: int, where: str) -> list[Any]:
        if not isinstance(objects, list) or len(objects) not in (1, channels):
            count = len(objects) if isinstance(objects, list) else objects
            raise self._fail(f"{where}: expected one entry or one per channel ({channels}), "
                             f"got {count}")
        return objects * channels if len(objects) == 1 else objects

    def _value_scaling(self, scaling: Any, where: str) -> tuple[float, float]:
        """One MLM 1.4 value scaling object -> ``(mean, std)``."""
        if scaling is None:
            return 0.0, 1.0
        if not isinstance(scaling, dict):
            raise self._fail(f"{where}: expected a value scaling object, got {scaling!r}")
        if (kind := scaling.get("type")) is None:
            return 0.0, 1.0
        needs = {"z-score": ("mean", "stddev"), "min-max": ("minimum", "maximum"),
                 "offset": ("value",), "scale": ("value",)}
        if kind not in needs:
            raise self._fail(f"{where}.type: {kind!r} is not representable as segpipe's "
                             "(x - mean) / std normalisation (no custom processing); "
                             f"expected one of {sorted(needs | dict.fromkeys(CLIP_TYPES))} "
                             "or null")
        values = [scaling.get(k) for k in needs[kind]]
        if not all(_number(v) for v in values):
            raise self._fail(f"{where}: type {kind} needs numbers {list(needs[kind])}, got "
                             f"{dict(zip(needs[kind], values, strict=True))}")
        return _mean_std(kind, *map(float, values))

    def _legacy(self, channels: int) -> tuple[list[tuple[float, float]],
                                              tuple[float, float] | None]:
        """MLM 1.0-1.3: ``norm_type`` with ``statistics``, or ``clip`` with ``norm_clip``
        (divide each band by its value, then clip to 0..1)."""
        kind = self.inp.get("norm_type")
        if kind is None:
            return [(0.0, 1.0)] * channels, None
        if kind == "clip":
            values = self._per_channel(self.inp.get("norm_clip"), channels,
                                       "mlm:input[0].norm_clip")
            if not all(_number(v) and v > 0 for v in values):
                raise self._fail(f"mlm:input[0].norm_clip: expected divisors > 0, got {values}")
            return [(0.0, float(v)) for v in values], (0.0, 1.0)
        if kind not in ("z-score", "min-max"):
            raise self._fail(f"mlm:input[0].norm_type: {kind!r} is not representable as "
                             "segpipe's (x - mean) / std normalisation (no custom "
                             "processing); expected z-score, min-max, clip or null")
        stats = self._per_channel(self.inp.get("statistics"), channels,
                                  "mlm:input[0].statistics")
        keys = ("mean", "stddev") if kind == "z-score" else ("minimum", "maximum")
        steps = []
        for i, stat in enumerate(stats):
            values = [stat.get(k) if isinstance(stat, dict) else None for k in keys]
            if not all(_number(v) for v in values):
                raise self._fail(f"mlm:input[0].statistics[{i}]: norm_type {kind} needs "
                                 f"{list(keys)}, got {stat!r}")
            steps.append(_mean_std(kind, *map(float, values)))
        return steps, None

    # ---------------------------------------------------------------- output

    def classes(self) -> list[ClassSpec]:
        tasks = self.out.get("tasks") or self.props.get("mlm:tasks") or []
        if not any(t in SEGMENTATION_TASKS for t in tasks):
            raise self._fail(f"mlm:output[0].tasks: segpipe runs {SEGMENTATION_TASKS[0]} "
                             f"models, got {tasks}")
        rows = self.out.get("classification:classes")
        where = "mlm:output[0].classification:classes"
        if not isinstance(rows, list) or not rows:
            raise self._fail(f"{where}: expected the class list (value, name), got {rows!r}")
        classes = [self._class(row, f"{where}[{i}]") for i, row in enumerate(rows)]
        ids = sorted(c.id for c in classes)
        if ids != list(range(len(ids))):
            raise self._fail(f"{where}: values must be 0..{len(ids) - 1} without gaps or "
                             f"repeats (the model's output channels), got {ids}")
        self._check_result(len(classes))
        return sorted(classes, key=lambda c: c.id)

    def _class(self, row: Any, where: str) -> ClassSpec:
        if not isinstance(row, dict) or not isinstance(row.get("value"), int) \
                or not row.get("name"):
            raise self._fail(f"{where}: expected value (integer) and name, got {row!r}")
        color = row.get("color_hint")
        if color is not None and not re.fullmatch(r"[0-9A-Fa-f]{6}", str(color)):
            raise self._fail(f"{where}.color_hint: expected RRGGBB hex, got {color!r}")
        rgb = tuple(int(str(color)[i:i + 2], 16) for i in (0, 2, 4)) if color else None
        try:
            return ClassSpec(id=row["value"], name=str(row["name"]),
                             **({"color": rgb} if rgb else {}))
        except ValidationError as exc:
            raise self._fail(f"{where}: {exc.errors()[0]['msg']}") from None

    def _check_result(self, num_classes: int) -> None:
        """A fixed class dimension of the result must equal the number of classes."""
        result = self.out.get("result") or {}
        shape, order = result.get("shape") or [], result.get("dim_order") or []
        for size, dim in zip(shape, order, strict=False):
            if str(dim).lower() in ("class", "classes", "channel") and size not in (-1,
                                                                                    num_classes):
                raise self._fail(f"mlm:output[0].result.shape: {size} {dim} values but "
                                 f"classification:classes lists {num_classes}")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _mean_std(kind: str, a: float, b: float | None = None) -> tuple[float, float]:
    """``(mean, std)`` of one scaling: z-score (mean, stddev), min-max (minimum, maximum),
    offset (value), scale (value).

    Examples
    --------
    >>> _mean_std("min-max", 0.0, 4000.0), _mean_std("offset", 5.0), _mean_std("scale", 2.0)
    ((0.0, 4000.0), (5.0, 1.0), (0.0, 2.0))
    """
    if kind == "z-score":
        return a, float(b)
    if kind == "min-max":
        return a, float(b) - a
    return (a, 1.0) if kind == "offset" else (0.0, a)
