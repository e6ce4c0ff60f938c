"""``kind: synthetic-attributes``: open-vocabulary training on colour x texture scenes.

Every training crop is a freshly rendered scene of Voronoi regions, each region one
``"<colour> <texture>"`` prompt (``segcore.openvocab.attribute_scene``); one prompt,
``held_out``, never appears in training. The network (architecture ``openvocab2d``)
learns a joint embedding of pixels and prompt text; the held-out figures measure the
held-out prompt's IoU when every prompt is offered (zero-shot) against chance, and the
bundle's classes are the prompts (ids 0..K-1, re-promptable at run time).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from pydantic import Field, ValidationInfo, field_validator

from pipeline.bundle import ClassSpec, InstanceSpec
from pipeline.prompts import prompt_classes
from pipeline.training.data.base import DataKind
from pipeline.training.evaluate import zero_shot_figures
from pipeline.training.scenes import IGNORE, Normalisation, Scenes
from segcore.errors import ConfigError
from segcore.openvocab import COLOURS, TEXTURES, attribute_prompts, attribute_scene

if TYPE_CHECKING:
    from pipeline.training.config import TrainConfig

HELD_OUT = "blue striped"
"""The prompt left out of training by default."""

MEAN, STD = [0.5] * 3, [0.25] * 3  # of the reflectances (image / 255) of attribute scenes


def reflectance(image: np.ndarray) -> np.ndarray:
    """``(3, H, W)`` uint8 -> float32 ``image / 255``."""
    return image.astype(np.float32) / 255.0


class AttributeStream(Scenes):
    """Training scenes rendered afresh for every crop.

    A crop of side ``crop`` is a whole attribute scene of that side, rendered from a
    seed drawn from the run's generator; images are float32 reflectances ``(3, crop,
    crop)``, labels index :attr:`vocabulary` (the training prompts). Nothing is held
    in memory, so the normalisation is the generator's, not measured.
    """

    def __init__(self, prompts: list[str]) -> None:
        super().__init__([], [], IGNORE, vocabulary=list(prompts))

    @property
    def channels(self) -> int:
        return 3

    @property
    def ndim(self) -> int:
        return 2

    def normalisation(self, *, raw: bool = False) -> Normalisation:
        return Normalisation(list(MEAN), list(STD), 1.0)

    def _crops(self, rng: np.random.Generator, n: int, crop: int,
               *, with_instances: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        prompts = self.vocabulary or []
        scenes = [attribute_scene(int(rng.integers(2**31)), crop, prompts) for _ in range(n)]
        return (np.stack([reflectance(image) for image, _ in scenes]),
                np.stack([labels for _, labels in scenes]), None)


class AttributeData(DataKind):
    """Seeded synthetic colour x texture scenes for open-vocabulary training.

    ``prompts`` (default: all nine ``"<colour> <texture>"`` pairs) are the bundle's
    classes in order; ``held_out`` is left out of training. Training scenes are
    drawn per crop (side ``crop``) from the run's ``seed``; the
    ``heldout_scenes`` held-out scenes (``heldout_size`` pixels, ``heldout_cells``
    regions) from ``heldout_seed``.

    Examples
    --------
    >>> data = AttributeData(heldout_scenes=1, heldout_size=32)
    >>> data.train_prompts == [p for p in data.prompts if p != "blue striped"]
    True
    >>> held = data.load(heldout=True)
    >>> held.images[0].shape, held.images[0].dtype.name, held.vocabulary == data.prompts
    ((3, 32, 32), 'float32', True)
    >>> [c.name for c in data.class_table()][:2]
    ['red smooth', 'red striped']
    """

    kind: Literal["synthetic-attributes"] = "synthetic-attributes"
    prompts: list[str] = Field(default_factory=attribute_prompts, min_length=2)
    held_out: str = HELD_OUT
    heldout_scenes: int = Field(default=6, ge=1)
    heldout_size: int = Field(default=128, ge=16)
    heldout_cells: int = Field(default=16, ge=1)
    heldout_seed: int = 1000

    @field_validator("prompts")
    @classmethod
    def _known_prompts(cls, prompts: list[str]) -> list[str]:
        for prompt in prompts:
            words = prompt.split()
            if len(words) != 2 or words[0] not in COLOURS or words[1] not in TEXTURES:
                raise ValueError(f"expected '<colour> <texture>' with a colour of "
                                 f"{list(COLOURS)} and a texture of {list(TEXTURES)}, "
                                 f"received {prompt!r}")
        return prompts

    @field_validator("held_out")
    @classmethod
    def _held_out_is_a_prompt(cls, held_out: str, info: ValidationInfo) -> str:
        prompts = info.data.get("prompts")
        if prompts is not None and held_out not in prompts:
            raise ValueError(f"expected one of the prompts {prompts}, received {held_out!r}")
        return held_out

    @property
    def train_prompts(self) -> list[str]:
        """The prompts training sees (all but ``held_out``)."""
        return [p for p in self.prompts if p != self.held_out]

    @property
    def vocabulary(self) -> list[str]:
        return list(self.prompts)

    def class_table(self) -> list[ClassSpec]:
        return prompt_classes(list(self.prompts))

    def load(self, *, heldout: bool, instances: bool = False) -> Scenes:
        if instances:
            raise ConfigError("instance_head: synthetic-attributes data carry no instance maps")
        if not heldout:
            return AttributeStream(self.train_prompts)
        rng = np.random.default_rng(self.heldout_seed)
        images, labels = [], []
        for _ in range(self.heldout_scenes):  # scenes where the held-out kind is common
            image, truth = attribute_scene(int(rng.integers(2**31)), self.heldout_size,
                                           self.prompts, cells=self.heldout_cells)
            images.append(reflectance(image))
            labels.append(truth)
        return Scenes(images, labels, IGNORE, vocabulary=list(self.prompts))

    def heldout_figures(self, net: torch.nn.Module, scenes: Scenes, norm: Normalisation, *,
                        classes: list[ClassSpec], grouping: InstanceSpec) -> dict[str, Any]:
        return zero_shot_figures(net, scenes, norm, self.held_out)

    def training_record(self, cfg: TrainConfig, *, final_loss: float, seconds: float,
                        heldout: dict[str, Any]) -> dict[str, Any]:
        """Seed, steps, the held-out prompt, the training prompts, the training time
        and the zero-shot figures."""
        return {"seed": cfg.seed, "steps": cfg.steps, "held_out": self.held_out,
                "train_prompts": self.train_prompts, "seconds": round(seconds, 1),
                "heldout": heldout}
