"""Run options: what a user sets on the command line or in ``--config run.yaml``.

Frozen pydantic models that round-trip through YAML/JSON. Values left ``None``
come from the model bundle (tile, halo, bands) or the machine (workers).
"""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline.spacing import SpacingPolicy
from segcore.errors import ConfigError, InputError
from segcore.hints import parse_choice


class HaloMode(str, Enum):
    """How the tile halo is sized when ``overlap`` is not given."""

    EXACT = "exact"
    """Half the analytic receptive field: tiled output equals whole-scene output."""
    EFFECTIVE = "effective"
    """Measured where the output stops depending on more context, then checked
    against whole-scene inference (labels agree on >= 99.99 % of a check scene)."""


class Executor(str, Enum):
    """Where the model and the block passes run."""

    AUTO = "auto"
    """In this process for small inputs, else Ray (``pipeline.executor``)."""
    LOCAL = "local"
    """In this process: one model on every core, block passes on threads; no Ray."""
    RAY = "ray"
    """Model actors and block tasks on a Ray runtime (local, or ``ray_address``)."""


_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 10**3, "kib": 2**10, "m": 2**20, "mb": 10**6,
          "mib": 2**20, "g": 2**30, "gb": 10**9, "gib": 2**30, "t": 2**40, "tb": 10**12,
          "tib": 2**40}


def parse_bytes(text: str | int) -> int:
    """``"4GiB"`` -> bytes; plain numbers are bytes.

    Examples
    --------
    >>> parse_bytes("4GiB"), parse_bytes("512 MB"), parse_bytes(1024)
    (4294967296, 512000000, 1024)
    """
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise ValueError(f"expected a size such as 4GiB, 512MiB or a number of bytes, "
                         f"got '{text}'")
    return int(float(match.group(1)) * _UNITS[unit])


class RunOptions(BaseModel):
    """Options of one ``segpipe run``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tile: int | None = Field(default=None, ge=1, description="tile core size in pixels")
    overlap: int | None = Field(default=None, ge=0, description="halo in pixels per side")
    halo_mode: HaloMode | None = Field(
        default=None, description="halo when overlap is not given: exact or effective "
        "(default: effective for 3-D models, exact for 2-D ones)")
    memory_budget: int | None = Field(
        default=None, ge=1, description="bytes one model window may take (default: half of "
        "a worker's share of the memory); sizes such as 4GiB are accepted")
    batch_size: int = Field(default=4, ge=1)
    workers: int | None = Field(default=None, ge=1)
    gpus_per_worker: float = Field(default=0.0, ge=0.0)
    bands: list[int] | list[str] | None = Field(
        default=None, description="1-based band numbers, or band names (STAC eo:bands common "
        "names such as red,green,blue)")
    ray_address: str | None = None
    executor: Executor = Field(default=Executor.AUTO, description="where the work runs: auto "
                               "(in this process for small inputs, else Ray), local or ray")
    resume: bool = True
    image_chunk: int = Field(default=512, ge=16, description="chunk size of scene.zarr/image")
    volume_chunk: int = Field(default=64, ge=8, description="chunk side of 3-D image arrays")
    spacing: SpacingPolicy = Field(default=SpacingPolicy.RESAMPLE,
                                   description="volumes whose spacing differs from the model's")
    scenes_in_flight: int = Field(default=2, ge=1,
                                  description="scenes processed at once (keeps workers busy)")
    quicklook_size: int = Field(default=1024, ge=64)
    prompts: list[str] | None = Field(
        default=None, description="open-vocabulary models: text prompts that become the classes")

    @field_validator("memory_budget", mode="before")
    @classmethod
    def _budget_bytes(cls, v: object) -> object:
        return parse_bytes(v) if isinstance(v, str) else v

    @field_validator("executor", mode="before")
    @classmethod
    def _executor_hint(cls, v: object) -> object:
        return v if isinstance(v, Executor) else parse_choice(Executor, v, name="executor")

    @field_validator("halo_mode", mode="before")
    @classmethod
    def _halo_mode_hint(cls, v: object) -> object:
        if v is None or isinstance(v, HaloMode):
            return v
        return parse_choice(HaloMode, v, name="halo_mode")

    @field_validator("bands")
    @classmethod
    def _bands_positive(cls, v: list[int] | list[str] | None) -> list[int] | list[str] | None:
        if v is not None and v and all(isinstance(b, str) for b in v):
            return v  # band names (STAC items)
        if v is not None and (not v or min(v) < 1):
            raise ValueError(f"bands are 1-based indices (GDAL order), got {v}")
        return v

    @field_validator("prompts")
    @classmethod
    def _prompts_distinct(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        v = [p.strip() for p in v]
        if not v or not all(v):
            raise ValueError("prompts must be non-empty text, e.g. water,road,building")
        if len(set(v)) != len(v):
            raise ValueError(f"prompts must be distinct, got {v}")
        return v


def parse_prompts(text: str | None) -> list[str] | None:
    """``"water, road,building"`` -> ``["water", "road", "building"]``.

    Examples
    --------
    >>> parse_prompts(" blue striped ,red smooth")
    ['blue striped', 'red smooth']
    """
    if text is None or not text.strip():
        return None
    prompts = [part.strip() for part in text.split(",")]
    if not all(prompts):
        raise ConfigError(f"--prompts expects comma-separated text prompts such as "
                          f"water,road,building; got '{text}'")
    if len(set(prompts)) != len(prompts):
        raise ConfigError(f"--prompts must be distinct; got '{text}'")
    return prompts


def parse_bands(text: str | None) -> list[int] | list[str] | None:
    """``"1,2,3"`` -> ``[1, 2, 3]``; names (STAC ``eo:bands`` common names) stay names.

    Examples
    --------
    >>> parse_bands("4, 3,2"), parse_bands("red, green,blue")
    ([4, 3, 2], ['red', 'green', 'blue'])
    """
    if text is None or not text.strip():
        return None
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if parts and all(re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]*", p) for p in parts):
        return parts
    try:
        bands = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(
            f"--bands expects comma-separated 1-based band numbers such as 1,2,3 or band "
            f"names such as red,green,blue (not both); got '{text}'"
        ) from None
    if not bands or min(bands) < 1:
        raise ConfigError(f"--bands expects 1-based band numbers (>= 1); got '{text}'")
    return bands


def band_numbers(bands: list[int] | list[str], *, path: str, noun: str) -> list[int]:
    """``bands`` when they are numbers; InputError naming ``path`` for band names, which
    only STAC items have (``noun``: "a GeoTIFF", "a NIfTI volume")."""
    names = [b for b in bands if isinstance(b, str)]
    if names:
        raise InputError(path, f"band names ({','.join(names)}) select bands of STAC items "
                         f"by eo:bands common name; {noun} takes 1-based band numbers "
                         "such as --bands 1,2,3")
    return list(bands)  # type: ignore[arg-type]


def load_run_options(path: Path | None, overrides: dict[str, Any]) -> RunOptions:
    """Merge a YAML/JSON config file with command-line overrides (which win)."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"--config {path}: cannot read: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"--config {path}: expected a mapping of options, got {type(loaded).__name__}")
        data.update({k.replace("-", "_"): v for k, v in loaded.items()})
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return RunOptions.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        source = f"--config {path}" if path else "options"
        raise ConfigError(f"{source}: {where}: {first['msg']}") from None
