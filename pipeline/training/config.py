"""The training config (``segpipe train --config``): a frozen pydantic model read from YAML.

See ``configs/demo-satellite.yaml`` (2-D, instance head), ``configs/demo-medical.yaml``
(3-D phantoms) and ``configs/demo-openvocab.yaml`` (open vocabulary). Errors are one
line naming the field, e.g. ``--config train.yaml: data.kind: expected one of [...],
received 'satelite' (did you mean 'synthetic-satellite'?)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from pipeline.bundle import OPENVOCAB_ARCHITECTURE, InstanceSpec
from pipeline.bundle_paths import check_name
from pipeline.training.data import DATA_KINDS, DataConfig
from pipeline.training.points import PointSupervision
from segcore.errors import ConfigError
from segcore.hints import did_you_mean

_KINDS = {kind.model_fields["kind"].default: kind for kind in DATA_KINDS}
_TAGS = list(_KINDS)


class TrainConfig(BaseModel):
    """A training run (YAML, see ``configs/demo-satellite.yaml``).

    The optional loss terms (``focal_weight``, ``boundary_weight``, ``edge_weight``)
    are described in :mod:`pipeline.training.losses`, ``point_supervision`` in
    :mod:`pipeline.training.points`; the instance-head terms (``center_*``,
    ``offset_weight``, ``grouping``) apply with ``params: {instance_head: true}``.
    ``warmup`` is the warm-up fraction of the one-cycle learning rate; unset, it is
    10 % of the steps (at least 2.5) and runs under 10 steps keep a constant rate.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    architecture: str = "unet2d"
    params: dict[str, Any] = Field(default_factory=dict)
    data: DataConfig
    steps: int = Field(default=1500, ge=1)
    batch_size: int = Field(default=8, ge=1)
    crop: int = Field(default=128, ge=16)
    lr: float = Field(default=3e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    # unset: left out of dumps, so configs without it keep their digest and record
    warmup: float | None = Field(default=None, gt=0, lt=1, exclude_if=lambda v: v is None)
    ce_weight: float = Field(default=1.0, ge=0)
    dice_weight: float = Field(default=1.0, ge=0)
    # optional terms (pipeline.training.losses): focal, boundary-weighted CE, auxiliary edge head
    focal_weight: float = Field(default=0.0, ge=0)
    focal_gamma: float = Field(default=2.0, ge=0)
    boundary_weight: float = Field(default=0.0, ge=0)
    edge_map_weight: float = Field(default=5.0, ge=0)
    edge_weight: float = Field(default=0.0, ge=0)
    # weak supervision: train from sampled clicks instead of full masks (pipeline.training.points)
    point_supervision: PointSupervision | None = None
    # instance head (only used with params.instance_head: true)
    center_sigma: float = Field(default=4.0, gt=0)  # Gaussian of the centre targets, pixels
    center_weight: float = Field(default=200.0, ge=0)  # Panoptic-DeepLab
    offset_weight: float = Field(default=0.1, ge=0)  # 10x Panoptic-DeepLab: small buildings
    grouping: InstanceSpec = Field(default_factory=InstanceSpec)
    seed: int = 0
    threads: int = Field(default=2, ge=1)
    tile: int = Field(default=512, ge=16)
    checkpoint_every: int = Field(default=100, ge=0)  # steps; 0 = no checkpoints
    export: Literal["state_dict", "torchscript", "export"] = "state_dict"

    @property
    def instance_head(self) -> bool:
        """Whether the network has an instance head (``params.instance_head``)."""
        return bool(self.params.get("instance_head", False))

    _check_name = field_validator("name")(check_name)  # the bundle's name, checked up front

    @model_validator(mode="after")
    def _vocabulary_fits_the_architecture(self) -> TrainConfig:
        prompts = self.data.vocabulary is not None
        if prompts and self.architecture != OPENVOCAB_ARCHITECTURE:
            raise ValueError(f"architecture: data.kind '{self.data.kind}' labels pixels with "
                             f"prompts and needs '{OPENVOCAB_ARCHITECTURE}', received "
                             f"'{self.architecture}'")
        if not prompts and self.architecture == OPENVOCAB_ARCHITECTURE:
            raise ValueError(f"data.kind: architecture '{OPENVOCAB_ARCHITECTURE}' trains on "
                             f"prompts and needs 'synthetic-attributes', received "
                             f"'{self.data.kind}'")
        extras = [name for name in ("focal_weight", "boundary_weight", "edge_weight")
                  if getattr(self, name)]
        extras += ["point_supervision"] * (self.point_supervision is not None)
        extras += ["params.instance_head"] * self.instance_head
        if prompts and extras:
            raise ValueError(f"{extras[0]}: open-vocabulary training uses the prompt loss "
                             f"only; remove {', '.join(extras)}")
        return self


def _known_fields(loc: tuple) -> list[str]:
    """The settings beside the unknown one at ``loc`` (raw location, union tag included)."""
    nested = {"grouping": InstanceSpec, "point_supervision": PointSupervision}
    if len(loc) == 1:
        return list(TrainConfig.model_fields)
    if len(loc) == 3 and loc[0] == "data" and loc[1] in _KINDS:
        return list(_KINDS[loc[1]].model_fields)
    if len(loc) == 2 and loc[0] in nested:
        return list(nested[loc[0]].model_fields)
    return []


def describe(exc: ValidationError) -> str:
    """The first error of a validation as one line: ``field.path: message``.

    Data kinds are named by their field path (``data.scenes``, not the union tag);
    an unknown ``data.kind`` lists the kinds, an unknown setting gets a "did you
    mean" hint.
    """
    first = exc.errors()[0]
    if first["type"] == "extra_forbidden":
        fields = _known_fields(first["loc"])
        hint = did_you_mean(str(first["loc"][-1]), fields) or (
            f"; expected some of {fields}" if fields else "")
        first = {**first, "msg": f"unknown setting{hint}"}
    loc = [str(p) for p in first["loc"]]
    if loc[:1] == ["data"] and len(loc) > 1 and loc[1] in _TAGS:
        del loc[1]
    if first["type"] == "union_tag_invalid" and loc == ["data"]:
        tag = str(first["ctx"]["tag"])
        return f"data.kind: expected one of {_TAGS}, received {tag!r}{did_you_mean(tag, _TAGS)}"
    if first["type"] == "union_tag_not_found" and loc == ["data"]:
        return f"data.kind: missing; expected one of {_TAGS}"
    msg = str(first["ctx"]["error"]) if first["type"] == "value_error" else first["msg"]
    where = ".".join(loc)
    return f"{where}: {msg}" if where else msg


def validate_train_config(raw: dict[str, Any], *, source: str) -> TrainConfig:
    """:class:`TrainConfig` from plain data, or one :class:`ConfigError` line prefixed ``source``."""
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe(exc)}") from None


def load_train_config(path: Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read and validate a training YAML; ``overrides`` (not None values) win.

    Raises
    ------
    ConfigError
        One line naming the file and the field, e.g. ``--config t.yaml: steps: ...``.
    """
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"--config {path}: cannot read: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"--config {path}: expected a mapping of settings, received "
                          f"{type(raw).__name__}")
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return validate_train_config(raw, source=f"--config {path}")
