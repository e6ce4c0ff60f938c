"""``--model file.onnx``: an ONNX file described by its own metadata properties.

The keys are those of the QGIS Deepness plugin (its model zoo and many remote-sensing
teams write them into ``metadata_props``); each value is JSON text, and a plain
string is accepted where a string is meant:

=======================  ==========================================  =========================
key                      meaning                                      default when missing
=======================  ==========================================  =========================
``model_type``           ``Segmentor`` (others are refused)           ``Segmentor``
``class_names``          ``{"0": "background", "1": "field"}`` or a   ``class_0``, ``class_1``, ...
                         list in id order (``names`` also read)
``resolution``           ground sample distance, cm/px                not checked
``tiles_size``           window side fed to the model, px             the fixed input size,
                         (``tile_size`` also read)                    else 512
``tiles_overlap``        overlap of neighbouring windows, percent     measured receptive field
                         of ``tiles_size``
``standardization_mean`` per channel, on samples scaled by 1/255      0
``standardization_std``  per channel                                  1
``seg_thresh``           single-channel output: class 1 above it      0.5 (probabilities)
=======================  ==========================================  =========================

Mapping onto :class:`~pipeline.bundle.ModelSpec` (what Deepness does to a tile, done
the same way):

* normalisation: Deepness divides every sample by 255 whatever its type, then
  standardises: ``value_scale`` is ``1/255`` for every sample type, ``mean``/``std``
  the metadata's;
* the window (tile core + 2 halo) is ``tiles_size``; the overlap of two windows is
  ``tiles_overlap`` percent of it (in whole pixels, as Deepness computes it), so the
  halo is half of it (rounded up) and the core ``tiles_size - 2 * halo``. Without ``tiles_overlap`` the
  receptive field is measured by impulse responses
  (:mod:`segcore.receptive_field_impulse`, once per file and process) and the halo is
  the exact one; a global model gets a sixth of the window;
* a model with a fixed input size never sees larger windows: its window is that size
  (smaller edge windows are zero-padded by :class:`~pipeline.model_sources.onnx_network.OnnxNetwork`);
* channels come from the input shape ``(N, C, H, W)`` (2-D) or ``(N, C, D, H, W)`` (3-D);
  classes from the output's channel count (a single channel is a binary model: two
  classes).

Anything malformed is a :class:`~segcore.errors.ModelError` of one line naming the
file, the key, what was expected and what was received.
"""

from __future__ import annotations

import ast
import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pipeline.bundle import InputSpec, ModelBundle, ModelFormat, ModelSpec
from pipeline.bundle_paths import weights_inside
from segcore.errors import ModelError

SEGMENTOR = "Segmentor"
DEFAULT_WINDOW = 512  # px, a dynamic model without tiles_size
DEEPNESS_SCALE = 1.0 / 255.0  # Deepness divides every sample by 255, whatever its type
MIN_CORE = 16  # ModelSpec.tile's lower bound
_SHOWN = 60  # characters of a bad value quoted in an error


@dataclass(frozen=True)
class OnnxSignature:
    """What the file's graph says about its one input and first output.

    ``None`` marks a dynamic axis. ``input_shape`` is ``(N, C, *S)``;
    ``output_shape`` has the output's own rank; ``output_op`` is the operator that
    produces the output (``Sigmoid``, ``Softmax``, ``Conv``, ...).
    """

    input_name: str
    input_shape: tuple[int | None, ...]
    output_shape: tuple[int | None, ...]
    output_op: str
    metadata: dict[str, str]
    external: tuple[str, ...] = ()  # files of externally stored tensors (relative paths)

    @property
    def ndim(self) -> int:
        return len(self.input_shape) - 2

    @property
    def fixed_window(self) -> int | None:
        """The smallest fixed spatial side of the input, or None when all are dynamic."""
        fixed = [s for s in self.input_shape[2:] if s is not None]
        return min(fixed) if fixed else None


def _dims(value_info) -> tuple[int | None, ...]:
    dims = value_info.type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                 for d in dims)


def read_signature(path: Path) -> OnnxSignature:
    """The graph's input and output shapes and the metadata, without external weights.

    Raises
    ------
    ModelError
        When the file is not a readable ONNX model or has not exactly one input.
    """
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelError(f"model '{path}': not a readable ONNX file: "
                         f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                         ) from exc
    graph = model.graph
    weights = {init.name for init in graph.initializer}
    inputs = [i for i in graph.input if i.name not in weights]
    if len(inputs) != 1 or not graph.output:
        raise ModelError(f"model '{path}': expected one input and at least one output, "
                         f"received {len(inputs)} input(s) and {len(graph.output)} output(s)")
    output = graph.output[0]
    producer = next((n.op_type for n in graph.node if output.name in n.output), "")
    external = sorted({e.value for init in graph.initializer
                       if init.data_location == onnx.TensorProto.EXTERNAL
                       for e in init.external_data if e.key == "location"})
    return OnnxSignature(input_name=inputs[0].name, input_shape=_dims(inputs[0]),
                         output_shape=_dims(output), output_op=producer,
                         metadata={p.key: p.value for p in model.metadata_props},
                         external=tuple(external))


def _parsed(raw: str) -> Any:
    """A metadata value: JSON, else a Python literal (Deepness reads both), else the text."""
    try:
        return json.loads(raw)
    except ValueError:
        pass
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return raw


class _Metadata:
    """The metadata properties of one file, read key by key with one-line errors."""

    def __init__(self, path: Path, props: dict[str, str]) -> None:
        self.path, self.props = path, props

    def error(self, key: str, expected: str, raw: Any) -> ModelError:
        shown = repr(raw)
        shown = shown if len(shown) <= _SHOWN else shown[:_SHOWN] + "..."
        return ModelError(f"model '{self.path}': metadata '{key}': expected {expected}, "
                          f"received {shown}")

    def key(self, *names: str) -> str | None:
        return next((n for n in names if n in self.props), None)

    def number(self, key: str, *, integer: bool, low: float, high: float = math.inf,
               open_low: bool = False) -> float | None:
        """A number in ``[low, high)`` (``(low, high)`` when ``open_low``), or None."""
        if key not in self.props:
            return None
        raw = self.props[key]
        value = _parsed(raw)
        kind = "an integer" if integer else "a number"
        bound = f"{'>' if open_low else '>='} {low:g}" + (f" and < {high:g}" if high < math.inf
                                                          else "")
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
              and math.isfinite(value) and (value > low if open_low else value >= low)
              and value < high and (not integer or float(value).is_integer()))
        if not ok:
            raise self.error(key, f"{kind} {bound}", raw)
        return int(value) if integer else float(value)

    def vector(self, key: str, channels: int, *, positive: bool) -> list[float] | None:
        """One number per channel (a single number is repeated), or None."""
        if key not in self.props:
            return None
        raw = self.props[key]
        value = _parsed(raw)
        values = value if isinstance(value, list) else [value]
        ok = (len(values) in (1, channels)
              and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                      and math.isfinite(v) and (v > 0 or not positive) for v in values))
        if not ok:
            what = "positive numbers" if positive else "numbers"
            raise self.error(key, f"a list of {channels} {what} (one per input channel)", raw)
        return [float(v) for v in values] * (channels if len(values) == 1 else 1)

    def class_names(self, count: int) -> list[str] | None:
        """Names in id order for ``count`` classes (dict id -> name, or list), or None."""
        key = self.key("class_names", "names")
        if key is None:
            return None
        raw = self.props[key]
        value = _parsed(raw)
        expected = (f"a JSON object of {count} class ids 0..{count - 1} -> names, or a list "
                    f"of {count} names")
        if isinstance(value, list):
            names = value
        elif isinstance(value, dict):
            try:
                ids = sorted((int(k), v) for k, v in value.items())
            except (TypeError, ValueError):
                raise self.error(key, expected, raw) from None
            if [i for i, _ in ids] != list(range(len(ids))):
                raise self.error(key, expected, raw)
            names = [v for _, v in ids]
        else:
            raise self.error(key, expected, raw)
        if len(names) != count or not all(isinstance(n, str) and n.strip() for n in names):
            raise self.error(key, expected, raw)
        return [n.strip() for n in names]


def _check_shapes(path: Path, sig: OnnxSignature) -> int:
    """Input and output layouts; returns the output's channel count (0: dynamic)."""
    rank = len(sig.input_shape)
    if rank not in (4, 5) or sig.input_shape[1] is None:
        raise ModelError(f"model '{path}': input '{sig.input_name}': expected shape "
                         f"(N, C, H, W) or (N, C, D, H, W) with a fixed channel count C, "
                         f"received {_shape_text(sig.input_shape)}")
    if len(sig.output_shape) != rank:
        raise ModelError(f"model '{path}': output: expected a dense {rank}-D output "
                         f"(N, K, {', '.join('DHW'[5 - rank:])}) like the input, received "
                         f"{_shape_text(sig.output_shape)}")
    for axis, (i, o) in enumerate(zip(sig.input_shape[2:], sig.output_shape[2:])):
        if i is not None and o is not None and i != o:
            raise ModelError(f"model '{path}': output: expected the input's spatial size "
                             f"{_shape_text(sig.input_shape[2:])}, received "
                             f"{_shape_text(sig.output_shape[2:])} (axis {axis + 2})")
    return sig.output_shape[1] or 0


def _shape_text(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("?" if s is None else str(s) for s in shape) + ")"


def _classes(meta: _Metadata, sig: OnnxSignature, outputs: int) -> list[str]:
    """Class names in id order: metadata, else ``class_0..``; a single-channel output is
    a binary model (two classes; one metadata name names the positive class)."""
    key = meta.key("class_names", "names")
    if outputs == 0:
        if key is None:
            raise ModelError(f"model '{meta.path}': output channel count is dynamic "
                             f"{_shape_text(sig.output_shape)}: metadata 'class_names' must "
                             "name the classes")
        value = _parsed(meta.props[key])
        outputs = len(value) if isinstance(value, (list, dict)) else 1
        return meta.class_names(max(outputs, 1)) or []
    if outputs == 1:
        value = _parsed(meta.props[key]) if key else None
        if isinstance(value, (list, dict)) and len(value) == 1:
            return ["background", *(meta.class_names(1) or [])]
        return meta.class_names(2) or ["class_0", "class_1"]
    return meta.class_names(outputs) or [f"class_{i}" for i in range(outputs)]


def _window(meta: _Metadata, sig: OnnxSignature) -> int:
    """Side of the windows fed to the model."""
    fixed = sig.fixed_window
    key = meta.key("tiles_size", "tile_size")
    size = meta.number(key, integer=True, low=MIN_CORE) if key else None
    if size is not None and fixed is not None and size > fixed:
        raise meta.error(key or "tiles_size",
                         f"an integer <= the model's fixed input size {fixed}", meta.props[key])
    return int(size or fixed or DEFAULT_WINDOW)


def _halo(meta: _Metadata, path: Path, sig: OnnxSignature, window: int,
          channels: int) -> tuple[int, int | None]:
    """Halo per side and the measured receptive field (None: not measured or global)."""
    percent = meta.number("tiles_overlap", integer=False, low=0.0, high=100.0)
    if percent is not None:
        overlap = int(window * percent / 100 * 2) // 2  # Deepness's overlap in pixels
        return -(-overlap // 2), None  # half of it per side, rounded up
    rf = measured_receptive_field(path, channels)
    if rf > 0:
        return (rf - 1) // 2 + (rf - 1) % 2, rf
    return window // 6, None  # global: about a quarter of the core


def _spec(path: Path, sig: OnnxSignature) -> ModelSpec:
    meta = _Metadata(path, sig.metadata)
    if "model_type" in meta.props:
        kind = _parsed(meta.props["model_type"])
        if not isinstance(kind, str) or kind.strip().capitalize() != SEGMENTOR:
            raise meta.error("model_type", f"'{SEGMENTOR}' (a segmentation model)",
                             meta.props["model_type"])
    outputs = _check_shapes(path, sig)
    channels = int(sig.input_shape[1] or 0)
    names = _classes(meta, sig, outputs)
    mean = meta.vector("standardization_mean", channels, positive=False)
    std = meta.vector("standardization_std", channels, positive=True)
    if (mean is None) != (std is None):
        missing = "standardization_std" if std is None else "standardization_mean"
        raise meta.error(missing, "a list of numbers given together with "
                         f"'{'standardization_mean' if std is None else 'standardization_std'}'",
                         None)
    resolution = meta.number("resolution", integer=False, low=0.0, open_low=True)
    window = _window(meta, sig)
    halo, rf = _halo(meta, path, sig, window, channels)
    core = window - 2 * halo
    if core < MIN_CORE:
        raise meta.error("tiles_overlap", f"an overlap leaving a tile core of at least "
                         f"{MIN_CORE} px of the {window} px window",
                         meta.props.get("tiles_overlap", f"measured halo {halo}"))
    scale = {dtype: DEEPNESS_SCALE for dtype in InputSpec.model_fields["value_scale"]
             .default_factory()}  # type: ignore[misc]
    from pipeline.prompts import prompt_classes  # a palette colour per class

    try:
        return ModelSpec(
            name=_name(path), format=ModelFormat.ONNX, weights=path.name, ndim=sig.ndim,
            input=InputSpec(channels=channels, mean=mean or [0.0] * channels,
                            std=std or [1.0] * channels, value_scale=scale),
            classes=prompt_classes(names),
            tile=core, overlap=halo if "tiles_overlap" in meta.props or rf is None else None,
            receptive_field=rf, resolution=resolution / 100.0 if resolution else None,
            precision="fp32")
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "spec"
        raise ModelError(f"model '{path}': {where}: {first['msg']}") from exc


def _name(path: Path) -> str:
    return re.sub(r"[^\w.+-]", "_", path.stem) or "onnx-model"


@lru_cache(maxsize=16)
def _measured(path: str, size: int, mtime_ns: int, channels: int) -> int:
    from pipeline.model_sources.onnx_network import impulse_receptive_field_of

    return impulse_receptive_field_of(Path(path), channels)


def measured_receptive_field(path: Path, channels: int) -> int:
    """The file's receptive field by impulse responses (0: global), once per file
    version and process."""
    stat = path.stat()
    return _measured(str(path.resolve()), stat.st_size, stat.st_mtime_ns, channels)


class OnnxFileSource:
    """``--model file.onnx``: the graph and its metadata properties fill the spec."""

    kind = "onnx"

    def claims(self, path: Path) -> bool:
        """A file whose name ends in ``.onnx``."""
        return path.suffix.lower() == ".onnx" and path.is_file()

    def load(self, path: Path) -> ModelBundle:
        """The bundle: the file is the weights (digested once by the resume fingerprint);
        files of externally stored tensors are its descriptors."""
        path = Path(path)
        signature = read_signature(path)
        spec = _spec(path, signature)
        external = tuple(path.parent / name for name in signature.external)
        for name in signature.external:  # tensors stored beside the file: digested too
            if not weights_inside(path.parent, name, model=str(path)).is_file():
                raise ModelError(f"model '{path}': external tensor data: expected the file "
                                 f"{path.parent / name}, which is missing")
        return ModelBundle(path=path, spec=spec, root=path.parent,
                           descriptors=(path, *external), kind=self.kind)
