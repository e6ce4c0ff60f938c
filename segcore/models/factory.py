"""Model factory: an explicit registry of architecture name -> constructor."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from segcore.errors import ConfigError, ModelError
from segcore.hints import did_you_mean
from segcore.models.deeplab import DeepLabASPP
from segcore.models.set_prediction import QueryMaskModel
from segcore.models.unet import UNet2d, UNet3d
from segcore.models.vit import ViTSegmenter

__all__ = ["ARCHITECTURES", "build_model"]

ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "unet2d": UNet2d,
    "unet3d": UNet3d,
    "deeplab": DeepLabASPP,
    "vit": ViTSegmenter,
    "queries": QueryMaskModel,
}
"""Built-in architectures by name (the names model bundles and configs use)."""


def _check_params(architecture: str, ctor: Callable[..., nn.Module], params: dict[str, Any]) -> None:
    signature = inspect.signature(ctor)
    accepted = [
        name
        for name, p in signature.parameters.items()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    if not takes_any:
        for name in params:
            if name not in accepted:
                raise ModelError(
                    f"architecture '{architecture}': unknown parameter '{name}'"
                    f"{did_you_mean(name, accepted)}; expected some of {accepted}"
                )
    missing = [
        name
        for name, p in signature.parameters.items()
        if p.default is p.empty
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        and name not in params
    ]
    if missing:
        raise ModelError(
            f"architecture '{architecture}': missing required parameter(s) {missing}"
        )


def build_model(architecture: str, **params: Any) -> nn.Module:
    """Build a built-in architecture by name.

    Parameters
    ----------
    architecture : str
        A key of :data:`ARCHITECTURES`: ``"unet2d"``, ``"unet3d"``,
        ``"deeplab"`` (:class:`~segcore.models.deeplab.DeepLabASPP`), ``"vit"``
        (:class:`~segcore.models.vit.ViTSegmenter`) or ``"queries"``
        (:class:`~segcore.models.set_prediction.QueryMaskModel`).
    **params
        Keyword arguments of the constructor.

    Returns
    -------
    nn.Module
        A freshly initialised model (training mode).

    Raises
    ------
    ModelError
        On an unknown architecture (with a "did you mean" hint), an unknown
        or missing parameter, or a parameter value the constructor rejects.

    Examples
    --------
    >>> model = build_model("unet2d", in_channels=3, num_classes=2, depth=2)
    >>> type(model).__name__, model.stride
    ('UNet2d', 4)
    >>> build_model("unet2", in_channels=3, num_classes=2)
    Traceback (most recent call last):
    ...
    segcore.errors.ModelError: architecture: expected one of ['deeplab', 'queries', 'unet2d', 'unet3d', 'vit'], received 'unet2' (did you mean 'unet2d'?)
    """
    ctor = ARCHITECTURES.get(architecture) if isinstance(architecture, str) else None
    if ctor is None:
        names = sorted(ARCHITECTURES)
        raise ModelError(
            f"architecture: expected one of {names}, received {architecture!r}"
            + did_you_mean(str(architecture), names)
        )
    _check_params(architecture, ctor, params)
    try:
        return ctor(**params)
    except (ConfigError, TypeError) as err:
        raise ModelError(f"architecture '{architecture}': {err}") from err
