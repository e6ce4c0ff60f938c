"""The bundle of a trained network: its ``model.yaml`` and its weights.

:func:`bundle_spec` assembles the :class:`~pipeline.bundle.ModelSpec` (architecture and
parameters, input normalisation, classes, receptive field, 3-D spacing, instance
grouping, open-vocabulary prompts, the training record); :func:`write_bundle` writes
it with safetensors weights or, with ``export``, as a TorchScript or ``torch.export``
program whose receptive field is measured (the pipeline does not know its structure).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.bundle import (
    InputSpec,
    ModelBundle,
    ModelFormat,
    ModelSpec,
    save_bundle,
    write_spec,
)
from pipeline.training.checkpoints import export_network
from pipeline.training.config import TrainConfig
from pipeline.training.networks import Trainee
from segcore.receptive_field import measure

_VALUE_SCALES = InputSpec.model_fields["value_scale"].get_default(call_default_factory=True)


def receptive_field(trainee: Trainee) -> int:
    """The declared receptive field (0: global, as attention models say), else measured."""
    declared = getattr(trainee.net, "receptive_field", None)
    if declared is not None:
        return int(declared)
    return measure(trainee.net, trainee.channels, ndim=trainee.ndim)


def _input(cfg: TrainConfig, trainee: Trainee) -> InputSpec:
    """Channels, normalisation, default bands; value scale 1.0 for physical units."""
    extra: dict[str, Any] = {}
    if cfg.data.physical_units:
        extra["value_scale"] = {dtype: 1.0 for dtype in _VALUE_SCALES}
    return InputSpec(**extra, channels=trainee.channels, mean=trainee.norm.mean,
                     std=trainee.norm.std, bands=cfg.data.input_bands)


def _optional_fields(cfg: TrainConfig, trainee: Trainee, spacing: tuple) -> dict[str, Any]:
    """``ndim``, ``spacing``, ``heads``/``instances`` and ``prompts`` where they apply."""
    fields: dict[str, Any] = {}
    if trainee.ndim == 3:
        fields["ndim"] = 3
    if cfg.data.physical_units:
        fields["spacing"] = [float(v) for v in spacing]
    if cfg.instance_head:
        fields["heads"] = ["semantic", "instance"]
        fields["instances"] = cfg.grouping  # the grouping inference uses
    if cfg.data.vocabulary is not None:
        fields["prompts"] = cfg.data.vocabulary
    return fields


def bundle_spec(cfg: TrainConfig, trainee: Trainee, *, spacing: tuple, heldout: dict[str, Any],
                final_loss: float, seconds: float) -> ModelSpec:
    """The ``model.yaml`` of a state-dict bundle of ``trainee``.

    Parameters
    ----------
    spacing : tuple of float
        Voxel size of the training data, recorded with physical units.
    heldout : dict
        The held-out figures (``training.heldout``).
    final_loss, seconds : float
        Loss of the last step and training time.
    """
    rf = receptive_field(trainee)
    return ModelSpec(
        **_optional_fields(cfg, trainee, spacing),
        name=cfg.name, architecture=cfg.architecture, params=trainee.params,
        weights="model.safetensors", input=_input(cfg, trainee), classes=trainee.classes,
        tile=cfg.tile, receptive_field=rf or None, stride=trainee.stride,
        training=cfg.data.training_record(cfg, final_loss=final_loss, seconds=seconds,
                                          heldout=heldout),
    )


def write_bundle(out: Path, spec: ModelSpec, trainee: Trainee, *, export: str) -> ModelBundle:
    """Write ``spec`` and the weights (``state_dict``) or the program (``torchscript``,
    ``export``, with the receptive field measured unless global) into ``out``."""
    net = trainee.net.eval()
    if export == "state_dict":
        return save_bundle(out, spec, net.state_dict())
    weights = export_network(net, out, fmt=export, in_channels=trainee.channels,
                             ndim=trainee.ndim, stride=trainee.stride)
    rf = measure(net, trainee.channels, ndim=trainee.ndim) if spec.receptive_field else None
    return write_spec(out, spec.model_copy(update={"format": ModelFormat(export),
                                                   "weights": weights, "receptive_field": rf}))
