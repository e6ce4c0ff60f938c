"""What a run will do with a model, told before any run (``segpipe models inspect``).

:func:`inspect_model` loads the model as ``--model`` does (a bundled name, a bundle
directory, an ``.onnx`` file, a MONAI bundle, a STAC MLM item) and describes it as a
:class:`ModelInspection`: where it comes from, its format, inputs and bands, the
normalisation, the class table, the heads, the tile and halo the planner
(:mod:`pipeline.run.plan`) chooses with default options, the receptive field and how it
is known, the resolution or spacing, and the device and precision. :func:`render`
prints it as aligned text; ``ModelInspection.model_dump_json`` is the ``--json`` form.
Nothing here starts Ray or Prefect.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from pipeline.bundle import ModelBundle, ModelFormat, load_bundle
from pipeline.options import RunOptions

PLAN_SIDE_TILES = 4  # a nominal 2-D scene of this many default tiles a side to plan on


class InputInfo(BaseModel):
    """The model's input: channels, bands and how they are chosen by default."""

    model_config = ConfigDict(frozen=True)

    channels: int
    bands: list[int] | list[str] | None  # declared bands (indices or names); None: default
    default: str  # which bands a run feeds without --bands


class NormalisationInfo(BaseModel):
    """``x_model = (x * value_scale[dtype] - mean) / std`` per channel."""

    model_config = ConfigDict(frozen=True)

    value_scale: dict[str, float]
    mean: list[float]
    std: list[float]
    clip: list[float] | None = None  # (low, high) when the model clips its input


class ClassInfo(BaseModel):
    """One class of the table."""

    model_config = ConfigDict(frozen=True)

    id: int
    name: str
    thing: bool
    color: tuple[int, int, int]


class TilingInfo(BaseModel):
    """The tile core and halo the planner chooses with default options."""

    model_config = ConfigDict(frozen=True)

    tile: int | None  # None: chosen per volume from the memory budget (3-D)
    halo: int
    halo_mode: str  # exact, effective, given or quarter-tile
    note: str = ""
    halo_exact: int | None = None  # effective: the exact halo, the most a run may grow it to


class ReceptiveFieldInfo(BaseModel):
    """The receptive field in pixels and how it is known."""

    model_config = ConfigDict(frozen=True)

    pixels: int | None  # None: unknown or global (the halo is then a quarter tile)
    how: str  # declared, analytic, measured or none


class DeviceInfo(BaseModel):
    """Where and at which precision the model runs here."""

    model_config = ConfigDict(frozen=True)

    device: str  # cuda or cpu
    precision: str  # the bundle's setting (auto, fp32, bf16, fp16)
    compute: str  # what runs: fp32, bf16 or fp16 (autocast on a GPU only)
    provider: str | None = None  # ONNX: the onnxruntime execution provider


class ModelInspection(BaseModel):
    """Everything ``segpipe models inspect`` prints."""

    model_config = ConfigDict(frozen=True)

    name: str
    kind: str  # bundle, onnx, monai, mlm
    path: str
    descriptors: list[str]
    weights: str
    format: str
    architecture: str | None
    ndim: int
    input: InputInfo
    normalisation: NormalisationInfo
    classes: list[ClassInfo]
    heads: list[str]
    tiling: TilingInfo
    receptive_field: ReceptiveFieldInfo
    resolution_m: float | None  # 2-D: metres per pixel the model expects
    spacing_mm: list[float] | None  # 3-D: (z, y, x) voxel size the model expects
    device: DeviceInfo
    source: dict[str, Any] | None  # provenance the source declares (e.g. MLM fields)


def inspect_model(model: str | Path) -> ModelInspection:
    """Describe ``model`` as a run would use it.

    Raises
    ------
    ModelError
        When the model cannot be located, validated or loaded (one line).
    """
    bundle = load_bundle(model)
    net = bundle.build()  # an unloadable model fails here, as `segpipe run` does first
    spec = bundle.spec
    with warnings.catch_warnings():  # the receptive-field probe's autograd chatter
        warnings.simplefilter("ignore", UserWarning)
        tiling, receptive_field = _tiling(bundle), _receptive_field(bundle)
    return ModelInspection(
        name=spec.name, kind=bundle.kind, path=str(bundle.path.absolute()),
        descriptors=[str(p.absolute()) for p in bundle.descriptor_files],
        weights=str(bundle.weights_path.absolute()), format=spec.format.value,
        architecture=spec.architecture, ndim=spec.ndim, input=_input(bundle),
        normalisation=NormalisationInfo(
            value_scale=dict(spec.input.value_scale), mean=list(spec.input.mean),
            std=list(spec.input.std), clip=_clip(spec.input)),
        classes=[ClassInfo(id=c.id, name=c.name, thing=c.isthing, color=c.color)
                 for c in sorted(spec.classes, key=lambda c: c.id)],
        heads=list(spec.heads), tiling=tiling, receptive_field=receptive_field,
        resolution_m=spec.resolution if spec.ndim == 2 else None,
        spacing_mm=list(spec.spacing) if spec.spacing is not None else None,
        device=_device(bundle, net), source=spec.training if _provenance(spec.training) else None)


def _clip(input_spec: Any) -> list[float] | None:
    clip = getattr(input_spec, "clip", None)  # only where the bundle format has one
    return list(clip) if clip is not None else None


def _provenance(training: dict[str, Any] | None) -> bool:
    """Whether ``training`` holds what a source declared (not a segpipe training run)."""
    return bool(training) and "source" in training


def _input(bundle: ModelBundle) -> InputInfo:
    spec = bundle.spec.input
    if spec.bands is not None:
        kind = "names (STAC eo:bands common names)" if isinstance(spec.bands[0], str) \
            else "1-based band numbers"
        default = f"the declared bands, as {kind}"
    elif spec.channels == 3:
        default = "bands 1-3 (a STAC item: red, green, blue)"
    else:
        default = f"bands 1-{spec.channels}" if spec.channels > 1 else "band 1"
    return InputInfo(channels=spec.channels, bands=spec.bands, default=default)


def _tiling(bundle: ModelBundle) -> TilingInfo:
    """The planner's choice with default options: on a nominal scene for 2-D models;
    for 3-D models the tile depends on each volume and the memory budget, and the
    effective halo is the probe's (a run checks it for its split)."""
    from pipeline.run.plan import effective_probe, halo_mode_of, plan_tiles, receptive_field_of
    from segcore.receptive_field import halo_for

    spec, options = bundle.spec, RunOptions()
    if spec.ndim == 2:
        side = PLAN_SIDE_TILES * spec.tile
        plan = plan_tiles((side, side), bundle, options)
        return TilingInfo(tile=plan.tile, halo=plan.halo, halo_mode=plan.halo_mode)
    mode = halo_mode_of(bundle, options)
    rf = receptive_field_of(bundle) if mode != "given" else 0
    if mode == "given":
        halo = spec.overlap or 0
    elif rf > 0:
        halo = halo_for(rf, spec.stride)
    else:
        halo, mode = -1, "quarter-tile"
    note = "tile chosen per volume to fit the memory budget"
    exact = None
    if mode == "effective":
        if (probed := effective_probe(bundle, halo)) is None:
            mode = "exact"  # as a run does
        else:
            exact, halo = halo, probed
            note += (f"; halo: the probed effective halo, which a run checks against "
                     f"whole-volume inference for its split and grows by the stride where "
                     f"needed (at most the exact {exact}); a volume computed as one window "
                     f"needs none")
    return TilingInfo(tile=None, halo=halo, halo_mode=mode, note=note, halo_exact=exact)


def _receptive_field(bundle: ModelBundle) -> ReceptiveFieldInfo:
    from pipeline.run.plan import receptive_field_of

    spec = bundle.spec
    if spec.receptive_field is not None:  # ONNX sources measure it by impulse responses
        measured = spec.format is ModelFormat.ONNX and bundle.kind != "bundle"
        return ReceptiveFieldInfo(pixels=spec.receptive_field,
                                  how="measured" if measured else "declared")
    pixels = receptive_field_of(bundle)
    if pixels <= 0:
        return ReceptiveFieldInfo(pixels=None, how="none")
    how = "analytic" if spec.format is ModelFormat.STATE_DICT else "measured"
    return ReceptiveFieldInfo(pixels=pixels, how=how)


def _device(bundle: ModelBundle, net: Any) -> DeviceInfo:
    import torch

    from pipeline.inference.predictor import autocast_dtype

    device = "cuda" if torch.cuda.is_available() else "cpu"
    precision = bundle.spec.precision
    if bundle.spec.format is ModelFormat.ONNX:  # the provider the network picks for device
        provider = net.to(device).providers[0]
        return DeviceInfo(device=device, precision=precision, compute="as stored in the file",
                          provider=provider)
    dtype = autocast_dtype(torch.device(device), precision)
    compute = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")
    return DeviceInfo(device=device, precision=precision, compute=compute)


# --------------------------------------------------------------------------- text

def _numbers(values: list[float]) -> str:
    return ", ".join(f"{v:.6g}" for v in values)


def rows(info: ModelInspection) -> list[tuple[str, str]]:
    """``(field, value)`` lines of the text form (the class table follows them)."""
    inp, norm, tiling, rf, dev = (info.input, info.normalisation, info.tiling,
                                  info.receptive_field, info.device)
    scales = ", ".join(f"{k} {v:.6g}" for k, v in norm.value_scale.items())
    bands = ", ".join(map(str, inp.bands)) if inp.bands is not None else "not declared"
    out = [
        ("model", info.name),
        ("source", info.kind),
        ("path", info.path),
        ("descriptors", ", ".join(info.descriptors)),
        ("weights", info.weights),
        ("format", info.format + (f" ({info.architecture})" if info.architecture else "")),
        ("ndim", str(info.ndim)),
        ("channels", str(inp.channels)),
        ("bands", f"{bands}; a run without --bands feeds {inp.default}"),
        ("value_scale", scales),
        ("mean", _numbers(norm.mean)),
        ("std", _numbers(norm.std)),
    ]
    if norm.clip is not None:
        out.append(("clip", _numbers(norm.clip)))
    tile = str(tiling.tile) if tiling.tile is not None else "auto"
    halo = "tile/4" if tiling.halo < 0 else str(tiling.halo)
    out += [
        ("heads", ", ".join(info.heads)),
        ("tile", tile),
        ("halo", f"{halo} ({tiling.halo_mode})" + (f"; {tiling.note}" if tiling.note else "")),
        ("receptive field", f"{rf.pixels} ({rf.how})" if rf.pixels else "none: global or "
                                                                         "unknown"),
    ]
    if info.ndim == 2:
        out.append(("resolution", f"{info.resolution_m:g} m/px" if info.resolution_m
                    else "not declared"))
    else:
        out.append(("spacing", f"{_numbers(info.spacing_mm)} mm (z, y, x)"
                    if info.spacing_mm else "not declared"))
    out += [("device", dev.device + (f" ({dev.provider})" if dev.provider else "")),
            ("precision", f"{dev.precision} -> {dev.compute}")]
    for key, value in (info.source or {}).items():
        if key != "source" and value is not None:
            out.append((key.replace("_", " "), str(value)))
    return out


def render(info: ModelInspection, console) -> None:
    """Print ``info`` on a rich ``console`` as two aligned tables (plain text when not
    a terminal)."""
    from rich.table import Table

    fields = Table(box=None, show_header=False, pad_edge=False)
    fields.add_column("field", style="bold", no_wrap=True)
    fields.add_column("value", overflow="fold")
    for name, value in rows(info):
        fields.add_row(name, value)
    console.print(fields)
    classes = Table(title="classes", title_justify="left", box=None, pad_edge=False)
    for column in ("id", "name", "thing", "color"):
        classes.add_column(column, no_wrap=column != "name")
    for c in info.classes:
        classes.add_row(str(c.id), c.name, "yes" if c.thing else "no",
                        "#{:02x}{:02x}{:02x}".format(*c.color))
    console.print(classes)
