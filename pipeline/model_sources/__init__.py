"""Models made elsewhere: files and folders that describe a model in another tool's terms.

Each source implements :class:`ModelSource`: it recognises its kind of path and turns it
into a :class:`~pipeline.bundle.ModelBundle` whose :class:`~pipeline.bundle.ModelSpec` is
filled from the model's own metadata (classes, bands, normalisation, tile, halo):

* :mod:`~pipeline.model_sources.onnx_file`: an ``.onnx`` file with metadata properties
  (the QGIS Deepness keys ``model_type``, ``class_names``, ``resolution``, ...);
* :mod:`~pipeline.model_sources.monai_bundle`: a MONAI bundle directory
  (``configs/metadata.json``, ``configs/inference.json``, ``models/model.ts``);
* :mod:`~pipeline.model_sources.mlm_item`: a STAC Item with the Machine Learning Model
  (MLM) extension, whose model asset is TorchScript or ONNX.

:func:`~pipeline.bundle.load_bundle` asks :func:`external_bundle` first, so every place
that takes ``--model`` (and every worker that reloads the model from ``bundle.path``)
accepts these as well.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from pipeline.bundle import ModelBundle


class ModelSource(Protocol):
    """One kind of model made elsewhere."""

    kind: str  # short name shown by `segpipe models inspect` ("onnx", "monai", "mlm")

    def claims(self, path: Path) -> bool:
        """Whether ``path`` is this kind of model (cheap: names and small files only)."""
        ...

    def load(self, path: Path) -> ModelBundle:
        """The validated bundle; :class:`~segcore.errors.ModelError` (one line naming
        ``path`` and the reason) when the model cannot be used."""
        ...


def sources() -> list[ModelSource]:
    """The registered sources, in the order they are asked."""
    from pipeline.model_sources.mlm_item import MlmItemSource
    from pipeline.model_sources.monai_bundle import MonaiBundleSource
    from pipeline.model_sources.onnx_file import OnnxFileSource

    return [OnnxFileSource(), MonaiBundleSource(), MlmItemSource()]


def external_bundle(model: str | Path) -> ModelBundle | None:
    """The bundle of a model made elsewhere, or None when no source claims ``model``."""
    path = Path(model)
    if not path.exists():
        return None
    for source in sources():
        if source.claims(path):
            return source.load(path)
    return None
