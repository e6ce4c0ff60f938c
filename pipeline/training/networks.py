"""The network a training run builds, with what its bundle records about it.

Built-in closed-vocabulary architectures come from ``segcore.models.factory``
(constructor parameters ``in_channels`` and ``num_classes`` from the data, the rest
from ``params``); ``openvocab2d`` is :class:`segcore.openvocab.OpenVocabSegmenter`,
whose classes are prompts and so not part of its parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from pipeline.bundle import OPENVOCAB_ARCHITECTURE, ClassSpec
from pipeline.training.scenes import Normalisation
from segcore.errors import ConfigError
from segcore.models.factory import build_model

Builder = Callable[[str, int, int, dict[str, Any]], tuple[nn.Module, dict[str, Any]]]


@dataclass(frozen=True)
class Trainee:
    """The network being trained and what the bundle records about its input and output.

    Attributes
    ----------
    net : nn.Module
    params : dict
        Constructor parameters as the bundle records them.
    classes : list of ClassSpec
    norm : Normalisation
        The input normalisation measured on (or declared by) the training data.
    channels : int
        Input channels ``C``.
    """

    net: nn.Module
    params: dict[str, Any]
    classes: list[ClassSpec]
    norm: Normalisation
    channels: int

    @property
    def ndim(self) -> int:
        """Spatial dimensions of the network's input (2 or 3)."""
        return int(getattr(self.net, "ndim", 2))

    @property
    def stride(self) -> int:
        """Input sides must be multiples of it."""
        return int(getattr(self.net, "stride", 1))


def _built_in(architecture: str, channels: int, num_classes: int,
              params: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    full = {"in_channels": channels, "num_classes": num_classes, **params}
    return build_model(architecture, **full), full


def _open_vocabulary(architecture: str, channels: int, num_classes: int,
                     params: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    from segcore.openvocab import OpenVocabSegmenter

    try:
        net = OpenVocabSegmenter(in_channels=channels, **params)
    except TypeError as exc:
        raise ConfigError(f"params: architecture '{architecture}' expects some of dim, width, "
                          f"buckets, scale: {exc}") from None
    return net, {"in_channels": channels, **params, "buckets": net.text_encoder.buckets,
                 "scale": net.scale}


BUILDERS: dict[str, Builder] = {OPENVOCAB_ARCHITECTURE: _open_vocabulary}
"""Architectures built here rather than by ``segcore.models.factory.build_model``."""


def build_network(architecture: str, *, channels: int, num_classes: int,
                  params: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    """A freshly initialised network and the parameters its bundle records.

    Raises
    ------
    ModelError
        On an unknown architecture or parameter of the built-in factory.
    ConfigError
        On a parameter ``openvocab2d`` does not take.
    """
    builder = BUILDERS.get(architecture, _built_in)
    return builder(architecture, channels, num_classes, params)


def check_dimensions(trainee_ndim: int, data_ndim: int, *, kind: str, architecture: str) -> None:
    """A 2-D network for 2-D data, a 3-D one for volumes, or one clear :class:`ConfigError`."""
    if trainee_ndim != data_ndim:
        raise ConfigError(f"data.kind {kind}: expected a {data_ndim}-D architecture "
                          f"(unet{data_ndim}d), received '{architecture}' with ndim {trainee_ndim}")
