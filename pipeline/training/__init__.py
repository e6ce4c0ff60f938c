"""Training of segmentation networks and their model bundles (``segpipe train``).

Entry points: :class:`TrainConfig` (the YAML config), :func:`load_train_config` and
:func:`train_bundle`. Modules, one concept each:

- :mod:`~pipeline.training.config`: the training config and its one-line errors;
- :mod:`~pipeline.training.data`: the data kinds, each loading itself;
- :mod:`~pipeline.training.scenes`: in-memory scenes, augmented crops, normalisation;
- :mod:`~pipeline.training.networks`: the network and what its bundle records;
- :mod:`~pipeline.training.steps`: one training step per supervision kind;
- :mod:`~pipeline.training.optimiser`: optimiser and learning-rate schedule;
- :mod:`~pipeline.training.loop`: :func:`train_bundle`, the orchestration and step loop;
- :mod:`~pipeline.training.evaluate`: held-out figures;
- :mod:`~pipeline.training.spec`: the bundle's ``model.yaml`` and weights;
- :mod:`~pipeline.training.checkpoints`: checkpoints, resume, exported programs;
- :mod:`~pipeline.training.losses`, :mod:`~pipeline.training.points`,
  :mod:`~pipeline.training.attention`: optional loss terms, point supervision, the
  attention report;
- :mod:`~pipeline.training.openvocab`: open-vocabulary training from Python.
"""

from pipeline.training.config import TrainConfig, load_train_config
from pipeline.training.loop import train_bundle

__all__ = ["TrainConfig", "load_train_config", "train_bundle"]
