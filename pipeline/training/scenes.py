"""In-memory training scenes, their random augmented crops and their normalisation.

A data kind (:mod:`pipeline.training.data`) loads its training or held-out scenes
into a :class:`Scenes` (2-D) or :class:`Volumes` (3-D); the training loop draws
batches of crops from it with the run's random generator, so every crop, flip and
rotation derives from the config's ``seed``.

Examples
--------
>>> rng = np.random.default_rng(0)
>>> image = np.arange(2 * 8 * 8, dtype=np.uint8).reshape(2, 8, 8)
>>> scenes = Scenes([image], [np.zeros((8, 8), np.int64)], ignore=255)
>>> xs, ys = scenes.crops(rng, 3, 4)
>>> xs.shape, ys.shape, scenes.channels, scenes.ndim
((3, 2, 4, 4), (3, 4, 4), 2, 2)
>>> norm = scenes.normalisation()
>>> norm.scale == 1 / 255, norm.apply(xs).dtype
(True, torch.float32)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from segcore.errors import ConfigError

IGNORE = 255  # the label value no loss and no metric counts


@dataclass(frozen=True)
class Normalisation:
    """The input normalisation a network is trained with (and its bundle records).

    ``x_model = (x * scale - mean[c]) / std[c]`` per channel ``c``.

    Attributes
    ----------
    mean, std : list of float
        Per channel, after ``scale``.
    scale : float
        Value scale of the images' sample type (uint8: 1/255, uint16: 1/65535,
        else 1.0; 1.0 for every type when intensities are physical units).
    """

    mean: list[float]
    std: list[float]
    scale: float

    def apply(self, images: np.ndarray) -> torch.Tensor:
        """Normalise a batch.

        Parameters
        ----------
        images : (N, C, *S) ndarray
            Any numeric dtype.

        Returns
        -------
        (N, C, *S) Tensor of float32
        """
        shape = (1, -1, *[1] * (images.ndim - 2))
        m = torch.tensor(self.mean, dtype=torch.float32).reshape(shape)
        s = torch.tensor(self.std, dtype=torch.float32).reshape(shape)
        return (torch.from_numpy(images.astype(np.float32)) * self.scale - m) / s


def value_scale(dtype: np.dtype, *, raw: bool = False) -> float:
    """The value scale of a sample type (``raw``: physical units, always 1.0).

    Examples
    --------
    >>> value_scale(np.dtype("uint16")) == 1 / 65535, value_scale(np.dtype("uint8"), raw=True)
    (True, 1.0)
    """
    if raw:
        return 1.0
    if dtype == np.uint8:
        return 1.0 / 255.0
    return 1.0 / 65535.0 if dtype == np.uint16 else 1.0


class Scenes:
    """In-memory training scenes and their random augmented crops.

    Parameters
    ----------
    images : list of (C, H, W) ndarray
        uint8, uint16 or float.
    labels : list of (H, W) ndarray of int64
        Class ids; ``ignore`` where unlabelled.
    ignore : int
        The unlabelled value.
    instances : list of (H, W) ndarray of int64, optional
        Instance ids (0 = no instance).
    spacing : tuple of float
        Voxel size (mm) of user volumes, recorded in the bundle; empty when unknown.
    vocabulary : list of str, optional
        Open-vocabulary data: the prompts the label values index. None: labels are
        class ids of the data kind's class table.
    """

    def __init__(self, images: list[np.ndarray], labels: list[np.ndarray], ignore: int,
                 instances: list[np.ndarray] | None = None, *, spacing: tuple = (),
                 vocabulary: list[str] | None = None) -> None:
        self.images, self.labels, self.ignore = images, labels, ignore
        self.instances = instances
        self.spacing = tuple(spacing)
        self.vocabulary = vocabulary

    @property
    def channels(self) -> int:
        """Image channels ``C``."""
        return int(self.images[0].shape[0])

    @property
    def ndim(self) -> int:
        """Spatial dimensions of the scenes (2 or 3)."""
        return int(self.labels[0].ndim)

    def normalisation(self, *, raw: bool = False) -> Normalisation:
        """Per-band mean/std over all pixels after the dtype's value scale.

        ``raw=True`` (physical units, e.g. MR/CT intensities): scale 1.0 for every
        dtype, mean/std in raw units. Standard deviations are at least 1e-6.
        """
        scale = value_scale(self.images[0].dtype, raw=raw)
        stacked = np.concatenate([im.reshape(im.shape[0], -1) for im in self.images], axis=1)
        values = stacked.astype(np.float64) * scale
        return Normalisation(values.mean(axis=1).tolist(),
                             np.maximum(values.std(axis=1), 1e-6).tolist(), scale)

    def crops(self, rng: np.random.Generator, n: int, crop: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` random augmented crops.

        Returns
        -------
        images : (n, C, crop, crop) ndarray
        labels : (n, crop, crop) ndarray of int64
        """
        xs, ys, _ = self._crops(rng, n, crop, with_instances=False)
        return xs, ys

    def instance_crops(self, rng: np.random.Generator, n: int,
                       crop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """As :meth:`crops` plus the instance crops ``(n, crop, crop)``, augmented identically.

        The random draws are those of :meth:`crops`: the same generator state gives
        the same images and labels with and without instances.
        """
        if self.instances is None:
            raise ConfigError("instance_head: the training data carry no instance maps")
        xs, ys, inst = self._crops(rng, n, crop, with_instances=True)
        assert inst is not None
        return xs, ys, inst

    def _crops(self, rng: np.random.Generator, n: int, crop: int,
               *, with_instances: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Random window, rot90 by a random multiple and a random horizontal flip."""
        xs, ys, zs = [], [], []
        for _ in range(n):
            i = int(rng.integers(len(self.images)))
            img, lab = self.images[i], self.labels[i]
            r = int(rng.integers(0, lab.shape[0] - crop + 1))
            c = int(rng.integers(0, lab.shape[1] - crop + 1))
            x, y = img[:, r : r + crop, c : c + crop], lab[r : r + crop, c : c + crop]
            z = self.instances[i][r : r + crop, c : c + crop] if with_instances else None
            k = int(rng.integers(4))
            x, y = np.rot90(x, k, axes=(1, 2)), np.rot90(y, k)
            z = None if z is None else np.rot90(z, k)
            if rng.random() < 0.5:
                x, y = x[:, :, ::-1], y[:, ::-1]
                z = None if z is None else z[:, ::-1]
            xs.append(x.copy())
            ys.append(y.copy())
            if z is not None:
                zs.append(z.copy())
        return np.stack(xs), np.stack(ys), (np.stack(zs) if with_instances else None)


class Volumes(Scenes):
    """In-memory training volumes: images ``(C, Z, Y, X)``, labels ``(Z, Y, X)``,
    optionally instance maps ``(Z, Y, X)``.

    Crops are cubes of side ``crop`` with a random flip along every axis; a
    fraction ``focus`` of them is centred (up to a random shift) on a random
    voxel of class ``focus_class`` when the volume has one.
    """

    def __init__(self, images: list[np.ndarray], labels: list[np.ndarray], ignore: int,
                 instances: list[np.ndarray] | None = None, *, focus: float = 0.0,
                 focus_class: int = 0, spacing: tuple = ()) -> None:
        super().__init__(images, labels, ignore, instances, spacing=spacing)
        self.focus = focus
        self.points = [np.argwhere(lab == focus_class) for lab in labels]

    def _corner(self, rng: np.random.Generator, i: int, crop: int) -> list[int]:
        shape = self.labels[i].shape
        if min(shape) < crop:
            raise ConfigError(f"crop: expected at most the smallest volume side {min(shape)}, "
                              f"received {crop}")
        points = self.points[i]
        if rng.random() < self.focus and len(points):
            p = points[int(rng.integers(len(points)))]
            return [int(np.clip(c - rng.integers(crop), 0, n - crop)) for c, n in zip(p, shape)]
        return [int(rng.integers(0, n - crop + 1)) for n in shape]

    def _crops(self, rng: np.random.Generator, n: int, crop: int,
               *, with_instances: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        xs, ys, zs = [], [], []
        for _ in range(n):
            i = int(rng.integers(len(self.images)))
            box = tuple(slice(c, c + crop) for c in self._corner(rng, i, crop))
            x, y = self.images[i][(slice(None), *box)], self.labels[i][box]
            z = self.instances[i][box] if with_instances and self.instances is not None else None
            for axis in range(3):
                if rng.random() < 0.5:
                    x, y = np.flip(x, axis + 1), np.flip(y, axis)
                    z = None if z is None else np.flip(z, axis)
            xs.append(x.copy())
            ys.append(y.copy())
            if z is not None:
                zs.append(z.copy())
        return np.stack(xs), np.stack(ys), (np.stack(zs) if with_instances else None)


def in_memory(images: list[np.ndarray], labels: list[np.ndarray],
              instances: list[np.ndarray] | None, *, spacing: tuple = ()) -> Scenes:
    """:class:`Volumes` for 3-D labels, :class:`Scenes` for 2-D ones (unlabelled = 255)."""
    kind = Volumes if labels and labels[0].ndim == 3 else Scenes
    return kind(images, labels, IGNORE, instances, spacing=spacing)
