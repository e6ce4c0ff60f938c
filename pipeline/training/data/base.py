"""The interface every ``data:`` kind of a training config implements.

A data kind is a frozen pydantic model (one ``kind:`` tag in the YAML) that loads
itself: the training loop asks it for scenes, classes and what the bundle records,
never which kind it is.

- :meth:`DataKind.load` gives the training or held-out :class:`~pipeline.training.scenes.Scenes`
  (with instance maps when the network has an instance head); the loaded scenes
  carry the voxel ``spacing`` of user volumes.
- :meth:`DataKind.class_table` gives the bundle's classes.
- :attr:`DataKind.physical_units`: intensities are physical (MR/CT): normalised
  in raw units, the bundle's ``input.value_scale`` is 1.0 for every sample type
  and it records the training ``spacing``.
- :attr:`DataKind.input_bands`: the bands the bundle feeds by default (None: the
  first ``channels``).
- :attr:`DataKind.vocabulary`: the prompts of an open-vocabulary bundle (None for a
  fixed class table).
- :meth:`DataKind.heldout_figures` and :meth:`DataKind.training_record`: the
  held-out evaluation and the ``training:`` block of ``model.yaml``; the defaults
  serve every closed-vocabulary kind.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from pipeline.bundle import ClassSpec, InstanceSpec
from pipeline.training.evaluate import evaluate
from pipeline.training.scenes import IGNORE, Normalisation, Scenes

if TYPE_CHECKING:
    from pipeline.training.config import TrainConfig


class DataKind(BaseModel):
    """Base of the data kinds: the interface and the closed-vocabulary defaults."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    physical_units: ClassVar[bool] = False

    @abstractmethod
    def load(self, *, heldout: bool, instances: bool = False) -> Scenes:
        """The training (or held-out) scenes, with instance maps if ``instances``.

        Raises
        ------
        InputError
            On a file that cannot be read or does not match its pair.
        ConfigError
            When ``instances`` is asked of data that carry none.
        """

    @abstractmethod
    def class_table(self) -> list[ClassSpec]:
        """The classes of the label values, for the bundle."""

    @property
    def input_bands(self) -> list[int] | None:
        """1-based bands the bundle feeds by default; None: the first ``channels``."""
        return None

    @property
    def vocabulary(self) -> list[str] | None:
        """The prompts of an open-vocabulary bundle; None: a fixed class table."""
        return None

    def heldout_figures(self, net: torch.nn.Module, scenes: Scenes, norm: Normalisation, *,
                        classes: list[ClassSpec], grouping: InstanceSpec) -> dict[str, Any]:
        """Held-out figures for ``training.heldout`` (see :func:`~pipeline.training.evaluate.evaluate`)."""
        return evaluate(net, scenes, norm.mean, norm.std, norm.scale, [c.name for c in classes],
                        classes=classes, grouping=grouping)

    def training_record(self, cfg: TrainConfig, *, final_loss: float, seconds: float,
                        heldout: dict[str, Any]) -> dict[str, Any]:
        """The ``training:`` block of ``model.yaml``: the config, the final loss, the
        training time, the held-out figures, the torch version and, with an instance
        head, the grouping (and centre sigma) the held-out PQ was measured with."""
        record = {"config": cfg.model_dump(mode="json"), "final_loss": final_loss,
                  "train_seconds": round(seconds, 1), "heldout": heldout,
                  "torch": torch.__version__}
        if cfg.instance_head:
            record["grouping"] = {**cfg.grouping.model_dump(mode="json"),
                                  "center_sigma": cfg.center_sigma}
        return record


def ignore_unlabelled(labels: np.ndarray, dtype: str) -> np.ndarray:
    """Class ids as int64 with the label file's unlabelled value (255 / 65535) set to 255.

    Parameters
    ----------
    labels : (*S) ndarray of int
    dtype : str
        Sample type of the label file (decides its unlabelled value).

    Returns
    -------
    (*S) ndarray of int64

    Examples
    --------
    >>> ignore_unlabelled(np.array([0, 3, 65535], np.uint16), "uint16").tolist()
    [0, 3, 255]
    """
    from pipeline.streaming.metrics import unlabelled_value

    lab = labels.astype(np.int64)
    lab[lab == unlabelled_value(dtype)] = IGNORE
    return lab
