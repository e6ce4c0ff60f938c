"""Model bundles: a directory with ``model.yaml`` and a weights file.

A bundle says everything the pipeline needs to run a model without guessing:
the architecture (or a TorchScript / ``torch.export`` program), the input bands
and their normalisation, the class table with ``isthing`` flags, the output
heads, the default tile size and halo, and (for 3-D models) the spacing.

Bundled models live in ``pipeline/models/<name>/`` and are produced by
``segpipe train`` from a documented command (see the README).

Normalisation applied to every input pixel of band ``i``::

    x_model = (x * value_scale[dtype] - mean[i]) / std[i]

``value_scale`` maps the input's sample type to a common range (uint8 / 255,
uint16 / 65535, floats as given), so the same model runs on 8-bit, 16-bit and
reflectance products of the same sensor. Nodata pixels are set to 0 after
normalisation (the training mean) and masked in every output.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from pipeline.atomic import atomic_path, write_text_atomic
from pipeline.bundle_paths import check_name, check_weights, weights_inside
from segcore.classes import ClassRow
from segcore.errors import ModelError
from segcore.hints import did_you_mean

if TYPE_CHECKING:  # torch loads only where a model is built: block tasks never need it
    import torch

BUNDLED_DIR = Path(__file__).parent / "models"
MODEL_FILE = "model.yaml"

_DEFAULT_VALUE_SCALE = {
    "uint8": 1.0 / 255.0,
    "uint16": 1.0 / 65535.0,
    "int16": 1.0 / 32767.0,
    "uint32": 1.0 / 4294967295.0,
    "int32": 1.0 / 2147483647.0,
    "float32": 1.0,
    "float64": 1.0,
}


class ModelFormat(str, Enum):
    """How the weights file is stored."""

    STATE_DICT = "state_dict"  # built-in architecture + .safetensors / .pt weights
    TORCHSCRIPT = "torchscript"  # torch.jit.save file
    EXPORT = "export"  # torch.export.save program (.pt2)
    ONNX = "onnx"  # an ONNX file run by onnxruntime (pipeline.model_sources.onnx_network)


class CodeSpec(BaseModel):
    """A coded concept (e.g. SNOMED CT: ``value: "10200004"``, ``scheme: SCT``,
    ``meaning: Liver``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    value: str = Field(min_length=1)
    scheme: str = Field(min_length=1)
    meaning: str = Field(min_length=1)


class DicomClassSpec(BaseModel):
    """A class's DICOM-SEG codes: segmented property category and type (None: a
    generic default, see docs/dicom.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    category: CodeSpec | None = None
    type: CodeSpec | None = None


class ClassSpec(BaseModel):
    """One row of the class table."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: int = Field(ge=0, le=65534)
    name: str = Field(min_length=1)
    isthing: bool = False
    color: tuple[int, int, int] = (128, 128, 128)
    dicom: DicomClassSpec | None = None  # DICOM-SEG coded concepts (DICOM series only)

    @model_serializer(mode="wrap")
    def _omit_no_dicom(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Without codes, dumps (model.yaml, store attrs) stay as they were."""
        data = handler(self)
        if data.get("dicom") is None:
            data.pop("dicom", None)
        return data


class SceneStatistics(BaseModel):
    """Normalisation from each scene's own intensities (MONAI ``NormalizeIntensityd`` /
    ``ScaleIntensityd`` without fixed values), computed once per scene over its valid
    samples (:mod:`pipeline.inference.scene_intensity`); replaces ``input.mean/std``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    statistic: Literal["mean_std", "min_max"]
    channel_wise: bool = False  # one statistic per channel (else over every channel)
    nonzero: bool = False  # mean_std: over the non-zero samples only
    subtrahend: list[float] | None = None  # mean_std: fixed per-channel mean (None: scene's)
    divisor: list[float] | None = None  # mean_std: fixed per-channel std (None: scene's)
    minv: float = 0.0  # min_max: the scene's minimum becomes minv, its maximum maxv
    maxv: float = 1.0


_INPUT_EXTRAS = {"clip": None, "keep_zero": False, "axcodes": None, "scene": None}


class InputSpec(BaseModel):
    """The model's input: channels, default bands, normalisation."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    channels: int = Field(ge=1)
    # 1-based GDAL band indices, or band names (STAC eo:bands common names, e.g. red);
    # None = first `channels`
    bands: list[int] | list[str] | None = None
    mean: list[float]
    std: list[float]
    value_scale: dict[str, float] = Field(default_factory=lambda: dict(_DEFAULT_VALUE_SCALE))
    clip: tuple[float, float] | None = None  # after normalisation: [lo, hi]
    keep_zero: bool = False  # samples equal to 0 stay 0 (MONAI nonzero=True)
    # 3-D: the model's axis codes (e.g. RAS: the first axis runs towards R); windows are
    # turned into it and the outputs back (None: canonical (S, A, R))
    axcodes: str | None = Field(default=None, pattern="^[LRAPSI]{3}$")
    scene: SceneStatistics | None = None  # per-scene mean/std (replaces mean/std)

    @model_serializer(mode="wrap")
    def _omit_defaults(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Without these options, dumps (model.yaml, store attrs) stay as they were."""
        data = handler(self)
        for key, default in _INPUT_EXTRAS.items():
            if data.get(key, default) == default:
                data.pop(key, None)
        return data

    @model_validator(mode="after")
    def _check_lengths(self) -> InputSpec:
        for field in ("mean", "std"):
            values = getattr(self, field)
            if len(values) != self.channels:
                raise ValueError(
                    f"input.{field} has {len(values)} values, expected one per channel "
                    f"({self.channels})"
                )
        if any(s <= 0 for s in self.std):
            raise ValueError(f"input.std must be > 0, got {self.std}")
        named = self.bands is not None and all(isinstance(b, str) for b in self.bands)
        if self.bands is not None and (
            len(self.bands) != self.channels or (not named and min(self.bands) < 1)
        ):
            raise ValueError(
                f"input.bands must list {self.channels} 1-based band indices or band names, "
                f"got {self.bands}"
            )
        return self


class InstanceSpec(BaseModel):
    """Grouping of the instance head's centre heatmap and offsets (Panoptic-DeepLab)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    threshold: float = Field(default=0.1, ge=0.0)
    nms_kernel: int = Field(default=7, ge=1)
    top_k: int | None = Field(default=None, ge=1)


class ModelSpec(BaseModel):
    """The validated content of ``model.yaml``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    format: ModelFormat = ModelFormat.STATE_DICT
    architecture: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    weights: str
    ndim: int = Field(default=2, ge=2, le=3)
    input: InputSpec
    classes: list[ClassSpec]
    heads: list[str] = Field(default_factory=lambda: ["semantic"])
    instances: InstanceSpec = Field(default_factory=InstanceSpec)
    min_stuff_area: int = Field(default=0, ge=0)  # panoptic: smaller stuff segments -> void
    tile: int = Field(default=512, ge=16)
    overlap: int | None = Field(default=None, ge=0)  # halo in pixels; None = from the RF
    receptive_field: int | None = Field(default=None, ge=1)
    stride: int = Field(default=1, ge=1)  # window sizes/origins must be multiples of it
    spacing: list[float] | None = None  # 3-D: expected voxel size (z, y, x) mm, canonical order
    spacing_tolerance: float = Field(default=0.05, ge=0.0)  # relative, per axis
    # 2-D: the ground sample distance the model was trained at (metres per pixel)
    resolution: float | None = Field(default=None, gt=0.0)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # GPU autocast; CPU: fp32
    training: dict[str, Any] | None = None  # provenance and held-out figures
    # open-vocabulary models (architecture 'openvocab2d'): the text prompts, one per class in
    # id order; `segpipe run --prompts` replaces them (and the class table) per run
    prompts: list[str] | None = None

    _check_name = field_validator("name")(check_name)  # becomes a path component
    _check_weights = field_validator("weights")(check_weights)  # read from the bundle dir

    @model_validator(mode="after")
    def _check(self) -> ModelSpec:
        if self.format is ModelFormat.STATE_DICT and not self.architecture:
            raise ValueError("architecture is required when format is 'state_dict'")
        ids = [c.id for c in self.classes]
        if sorted(ids) != list(range(len(ids))):
            raise ValueError(f"class ids must be 0..{len(ids) - 1} without gaps, got {ids}")
        if not self.classes:
            raise ValueError("classes must not be empty")
        if self.prompts is not None and self.prompts != self.class_names:
            raise ValueError(f"prompts must equal the class names in id order "
                             f"({self.class_names}), got {self.prompts}")
        if self.spacing is not None and (len(self.spacing) != self.ndim or min(self.spacing) <= 0):
            raise ValueError(f"spacing must list {self.ndim} positive voxel sizes (mm), "
                             f"got {self.spacing}")
        return self

    @property
    def class_names(self) -> list[str]:
        """Class names ordered by id."""
        return [c.name for c in sorted(self.classes, key=lambda c: c.id)]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def class_rows(self) -> list[ClassRow]:
        """The class table ordered by id, as ``(id, name, isthing)`` rows."""
        return [ClassRow(c.id, c.name, c.isthing) for c in sorted(self.classes, key=lambda c: c.id)]

    @property
    def colors(self) -> list[tuple[int, int, int]]:
        """Class colours ordered by id."""
        return [c.color for c in sorted(self.classes, key=lambda c: c.id)]


@dataclass(frozen=True)
class ModelBundle:
    """A located, validated model; ``build()`` loads the network.

    ``path`` is what :func:`load_bundle` accepts again (workers reload the model from
    it): a bundle directory, or for a model made elsewhere its file or directory (an
    ``.onnx`` file, a MONAI bundle, a STAC MLM item; :mod:`pipeline.model_sources`).
    ``root`` is the directory ``spec.weights`` is relative to (``path`` when None), and
    ``descriptors`` the files that describe the model besides its weights (what the
    resume fingerprint digests; ``model.yaml`` when empty). ``kind`` names the source.
    """

    path: Path
    spec: ModelSpec
    root: Path | None = None
    descriptors: tuple[Path, ...] = ()
    kind: str = "bundle"

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def weights_path(self) -> Path:
        return (self.root or self.path) / self.spec.weights

    @property
    def descriptor_files(self) -> tuple[Path, ...]:
        """The files that describe the model besides its weights (sorted, no duplicates)."""
        files = self.descriptors or (self.path / MODEL_FILE,)
        return tuple(sorted({f for f in files if f != self.weights_path}))

    def build(self) -> torch.nn.Module:
        """Instantiate the network in eval mode with its weights (CPU)."""
        return load_network(self)

    def default_bands(self, band_count: int) -> list[int]:
        """Bands fed to the model when ``--bands`` is not given (1-based)."""
        if self.spec.input.bands is not None:
            return list(self.spec.input.bands)
        return list(range(1, min(self.spec.input.channels, band_count) + 1))


def bundled_models() -> dict[str, Path]:
    """Names and directories of the models shipped with the package."""
    if not BUNDLED_DIR.is_dir():
        return {}
    return {
        p.name: p for p in sorted(BUNDLED_DIR.iterdir()) if (p / MODEL_FILE).is_file()
    }


def resolve_bundle_path(model: str | Path) -> Path:
    """Turn a bundled model name or a path into a bundle directory.

    Raises
    ------
    ModelError
        When ``model`` is neither a bundled name nor a directory holding ``model.yaml``.
    """
    candidate = Path(model)
    if candidate.is_dir():
        if not (candidate / MODEL_FILE).is_file():
            raise ModelError(f"model '{model}': directory has no {MODEL_FILE}")
        return candidate
    if candidate.is_file() and candidate.name == MODEL_FILE:
        return candidate.parent
    bundled = bundled_models()
    if str(model) in bundled:
        return bundled[str(model)]
    known = ", ".join(bundled) or "none"
    raise ModelError(
        f"unknown model '{model}': not a bundled model ({known}) nor a bundle directory"
        f"{did_you_mean(str(model), bundled)}"
    )


def load_bundle(model: str | Path) -> ModelBundle:
    """Locate and validate a model (does not load the weights).

    ``model`` is a bundled model's name, a bundle directory (``model.yaml``) or a model
    made elsewhere that :mod:`pipeline.model_sources` recognises.
    """
    from pipeline.model_sources import external_bundle

    external = external_bundle(model)
    if external is not None:
        return external
    path = resolve_bundle_path(model)
    try:
        raw = yaml.safe_load((path / MODEL_FILE).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ModelError(f"model '{model}': cannot read {path / MODEL_FILE}: {exc}") from exc
    try:
        spec = ModelSpec.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "model.yaml"
        raise ModelError(
            f"model '{model}': invalid {MODEL_FILE}: {where}: {first['msg']}"
        ) from exc
    bundle = ModelBundle(path=path, spec=spec)
    weights_inside(path, spec.weights, model=str(model))  # no link out of the bundle
    if not bundle.weights_path.is_file():
        raise ModelError(f"model '{model}': weights file {bundle.weights_path} is missing")
    return bundle


def load_network(bundle: ModelBundle) -> torch.nn.Module:
    """Load the network of a bundle on the CPU, in eval mode."""
    import torch

    spec = bundle.spec
    try:
        if spec.format is ModelFormat.ONNX:
            from pipeline.model_sources.onnx_network import OnnxNetwork

            net = OnnxNetwork(bundle)
        elif spec.format is ModelFormat.TORCHSCRIPT:
            net = torch.jit.load(str(bundle.weights_path), map_location="cpu")
        elif spec.format is ModelFormat.EXPORT:
            net = torch.export.load(str(bundle.weights_path)).module()
        elif spec.prompts is not None:
            net = _build_openvocab(spec)
            net.load_state_dict(_read_state_dict(bundle.weights_path))
        else:
            from segcore.models.factory import build_model

            net = build_model(spec.architecture or "", **spec.params)
            net.load_state_dict(_read_state_dict(bundle.weights_path))
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - any loader failure is one clear line
        raise ModelError(
            f"model '{spec.name}': cannot load {bundle.weights_path.name}: {exc}"
        ) from exc
    if spec.input.axcodes:  # the model's own axis order (MONAI Orientationd)
        from pipeline.model_sources.oriented_network import OrientedNetwork

        net = OrientedNetwork(net, spec.input.axcodes)
    if hasattr(net, "eval") and spec.format not in (ModelFormat.EXPORT, ModelFormat.ONNX):
        net.eval()  # an exported program is already traced in eval mode (and refuses .eval())
    return net


OPENVOCAB_ARCHITECTURE = "openvocab2d"


def _build_openvocab(spec: ModelSpec) -> torch.nn.Module:
    """An open-vocabulary network prompted with the bundle's prompts (weights not loaded)."""
    from segcore.openvocab import OpenVocabSegmenter

    if spec.architecture != OPENVOCAB_ARCHITECTURE:
        raise ModelError(f"model '{spec.name}': a bundle with prompts needs architecture "
                         f"'{OPENVOCAB_ARCHITECTURE}', got '{spec.architecture}'")
    return OpenVocabSegmenter(**spec.params, prompts=list(spec.prompts or []))


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    import torch

    return torch.load(str(path), map_location="cpu", weights_only=True)


def save_bundle(
    directory: Path, spec: ModelSpec, state_dict: dict[str, torch.Tensor]
) -> ModelBundle:
    """Write ``model.yaml`` and safetensors weights into ``directory``."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(directory / spec.weights) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in state_dict.items()}, str(tmp))
    return write_spec(directory, spec)


def write_spec(directory: Path, spec: ModelSpec) -> ModelBundle:
    """Write ``model.yaml`` for weights already in ``directory`` (e.g. an exported program)."""
    directory.mkdir(parents=True, exist_ok=True)
    data = json.loads(spec.model_dump_json())
    write_text_atomic(directory / MODEL_FILE, yaml.safe_dump(data, sort_keys=False))
    return ModelBundle(path=directory, spec=spec)
