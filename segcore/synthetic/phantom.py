"""Synthetic 3-D medical phantoms: an organ (stuff) with lesions (things).

A phantom is a deterministic function of :class:`PhantomSpec`. The anatomy is
defined in physical millimetres, so changing ``spacing`` changes the voxel
grid but not the anatomy: the same seed gives the same organ and lesions (in
mm) at 1 mm and at 3 mm voxels, and organ and lesion volumes in mm^3 stay
about the same. The field of view is ``shape * spacing`` mm, with the organ
centred in it.

* **organ** (class 1, stuff): a smooth, star-shaped deformed ellipsoid with
  semi-axes ``organ_radii_mm`` (each jittered by up to 10 %), its surface
  modulated by a few low-frequency waves of the direction.
* **lesions** (class 2, things): ``lesions`` (a range) axis-aligned
  ellipsoids of radius ``lesion_radius_mm`` (each semi-axis jittered by
  +-20 %), wholly inside the organ with at least ``margin_mm`` of organ
  around them and at least ``gap_mm`` between any two, so they never touch.
  Each is randomly hypo-intense (darker than the organ) or hyper-intense.
* **image**: MR/CT-like raw units as int16: background ``~background``,
  organ ``~organ`` with a faint texture, lesions ``~hypo`` or ``~hyper``;
  blurred by a ``blur_mm`` Gaussian (partial volume), multiplied by a smooth
  bias field ``1 + bias * b(x)`` with ``|b| <= 1`` and plus Gaussian noise of
  standard deviation ``noise``; clipped to ``[0, 32767]``.

Arrays are in canonical ``(Z, Y, X)`` order; ``spacing`` is ``(z, y, x)`` mm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from segcore.errors import ConfigError
from segcore.synthetic.classes import ClassInfo

__all__ = [
    "BACKGROUND",
    "LESION",
    "ORGAN",
    "PHANTOM_CLASSES",
    "Phantom",
    "PhantomSpec",
    "render_phantom",
]

BACKGROUND, ORGAN, LESION = 0, 1, 2

PHANTOM_CLASSES: tuple[ClassInfo, ...] = (
    ClassInfo(BACKGROUND, "background", False, (0, 0, 0)),
    ClassInfo(ORGAN, "organ", False, (60, 180, 75)),
    ClassInfo(LESION, "lesion", True, (230, 25, 75)),
)
"""Class table of the phantoms: 0 background, 1 organ (stuff), 2 lesion (thing)."""

_WAVES = 4  # low-frequency terms of the organ surface and of the bias field


def _pair(name: str, value: tuple[float, float], minimum: float) -> None:
    if len(value) != 2 or not minimum <= value[0] <= value[1]:
        raise ConfigError(
            f"PhantomSpec.{name}: expected (low, high) with {minimum} <= low <= high, "
            f"received {value!r}"
        )


@dataclass(frozen=True)
class PhantomSpec:
    """Parameters of one phantom; all lengths in millimetres.

    Parameters
    ----------
    shape : (int, int, int), default (96, 96, 96)
        Voxels ``(Z, Y, X)``.
    spacing : (float, float, float), default (2.0, 2.0, 2.0)
        Voxel size ``(z, y, x)`` in mm.
    seed : int, default 0
        Everything random derives from it.
    lesions : (int, int), default (3, 7)
        Inclusive range of the number of lesions asked for (fewer when they
        do not fit in the organ).
    lesion_radius_mm : (float, float), default (4.0, 10.0)
        Range of the lesion radius.
    organ_radii_mm : (float, float, float), default (55.0, 65.0, 70.0)
        Organ semi-axes ``(z, y, x)`` before jitter and deformation.
    deformation : float, default 0.12
        Relative amplitude of the organ surface modulation.
    background, organ, hypo, hyper : float
        Mean intensities (raw units) of background, organ and dark / bright
        lesions; defaults 50, 600, 300, 1000.
    noise : float, default 40.0
        Standard deviation of the additive Gaussian noise (raw units).
    bias : float, default 0.15
        Amplitude of the multiplicative bias field, in ``[0, 1)``.
    blur_mm : float, default 1.0
        Standard deviation of the partial-volume blur (0: none).
    margin_mm, gap_mm : float, default 3.0 and 4.0
        Organ around each lesion and space between lesions.
    """

    shape: tuple[int, int, int] = (96, 96, 96)
    spacing: tuple[float, float, float] = (2.0, 2.0, 2.0)
    seed: int = 0
    lesions: tuple[int, int] = (3, 7)
    lesion_radius_mm: tuple[float, float] = (4.0, 10.0)
    organ_radii_mm: tuple[float, float, float] = (55.0, 65.0, 70.0)
    deformation: float = 0.12
    background: float = 50.0
    organ: float = 600.0
    hypo: float = 300.0
    hyper: float = 1000.0
    noise: float = 40.0
    bias: float = 0.15
    blur_mm: float = 1.0
    margin_mm: float = 3.0
    gap_mm: float = 4.0

    def __post_init__(self) -> None:
        if len(self.shape) != 3 or any(
            isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 for s in self.shape
        ):
            raise ConfigError(f"PhantomSpec.shape: expected three ints >= 1, received {self.shape!r}")
        if len(self.spacing) != 3 or any(not float(s) > 0 for s in self.spacing):
            raise ConfigError(
                f"PhantomSpec.spacing: expected three positive mm values, received {self.spacing!r}"
            )
        if len(self.organ_radii_mm) != 3 or any(not float(r) > 0 for r in self.organ_radii_mm):
            raise ConfigError(
                f"PhantomSpec.organ_radii_mm: expected three positive values, "
                f"received {self.organ_radii_mm!r}"
            )
        _pair("lesions", self.lesions, 0)
        _pair("lesion_radius_mm", self.lesion_radius_mm, 0.5)
        if not 0 <= self.bias < 1 or not 0 <= self.deformation < 0.5:
            raise ConfigError(
                f"PhantomSpec: expected 0 <= bias < 1 and 0 <= deformation < 0.5, "
                f"received bias={self.bias!r}, deformation={self.deformation!r}"
            )
        if self.noise < 0 or self.blur_mm < 0 or self.margin_mm < 0 or self.gap_mm < 0:
            raise ConfigError("PhantomSpec: noise, blur_mm, margin_mm and gap_mm must be >= 0")

    @property
    def extent_mm(self) -> NDArray[np.float64]:
        """Field of view ``shape * spacing`` in mm, ``(z, y, x)``."""
        return np.asarray(self.shape, np.float64) * np.asarray(self.spacing, np.float64)


@dataclass(frozen=True)
class Phantom:
    """One rendered phantom, canonical ``(Z, Y, X)`` order.

    Parameters
    ----------
    image : (Z, Y, X) ndarray of int16
        Raw intensities.
    semantic : (Z, Y, X) ndarray of uint8
        Class ids of :data:`PHANTOM_CLASSES`.
    instance : (Z, Y, X) ndarray of uint32
        Lesion ids ``1..n``, 0 elsewhere.
    spacing : (float, float, float)
        Voxel size ``(z, y, x)`` in mm.
    """

    image: NDArray[np.int16]
    semantic: NDArray[np.uint8]
    instance: NDArray[np.uint32]
    spacing: tuple[float, float, float]

    def __post_init__(self) -> None:
        ok = (
            self.image.ndim == 3
            and self.image.dtype == np.int16
            and self.semantic.dtype == np.uint8
            and self.instance.dtype == np.uint32
            and self.image.shape == self.semantic.shape == self.instance.shape
        )
        if not ok:
            raise ConfigError(
                "Phantom: expected image (Z, Y, X) int16, semantic uint8 and instance uint32 "
                f"of one shape, received {self.image.shape} {self.image.dtype}, "
                f"{self.semantic.shape} {self.semantic.dtype}, "
                f"{self.instance.shape} {self.instance.dtype}"
            )

    @property
    def lesion_count(self) -> int:
        """Number of lesions ``n``."""
        return int(self.instance.max()) if self.instance.size else 0


# --------------------------------------------------------------------------- geometry
@dataclass(frozen=True)
class _Organ:
    centre: NDArray[np.float64]  # (3,) mm
    radii: NDArray[np.float64]  # (3,) mm
    waves: NDArray[np.float64]  # (_WAVES, 3) direction frequencies
    phases: NDArray[np.float64]  # (_WAVES,)
    amplitude: float

    def level(self, points: NDArray[np.float64]) -> NDArray[np.float64]:
        """``rho / (1 + d(u))`` for points ``(..., 3)`` mm: ``<= 1`` inside the organ."""
        p = (points - self.centre) / self.radii
        rho = np.sqrt((p * p).sum(-1))
        u = p / np.maximum(rho, 1e-9)[..., None]
        d = np.cos(np.pi * (u @ self.waves.T) + self.phases).mean(-1)
        return rho / (1.0 + self.amplitude * d)


def _organ(spec: PhantomSpec, rng: np.random.Generator) -> _Organ:
    centre = spec.extent_mm / 2 + rng.uniform(-5.0, 5.0, 3)
    radii = np.asarray(spec.organ_radii_mm, np.float64) * rng.uniform(0.9, 1.1, 3)
    waves = rng.uniform(-1.5, 1.5, (_WAVES, 3))
    phases = rng.uniform(0, 2 * np.pi, _WAVES)
    return _Organ(centre, radii, waves, phases, spec.deformation)


def _sphere_points(n: int = 64) -> NDArray[np.float64]:
    """``n`` nearly uniform unit vectors (Fibonacci sphere)."""
    k = np.arange(n) + 0.5
    z = 1 - 2 * k / n
    phi = np.pi * (1 + 5**0.5) * k
    r = np.sqrt(1 - z * z)
    return np.stack([z, r * np.sin(phi), r * np.cos(phi)], axis=1)


def _lesions(
    spec: PhantomSpec, organ: _Organ, rng: np.random.Generator
) -> list[tuple[NDArray[np.float64], NDArray[np.float64], bool]]:
    """``(centre mm, semi-axes mm, bright)`` of non-touching lesions inside the organ."""
    wanted = int(rng.integers(spec.lesions[0], spec.lesions[1] + 1))
    shell = _sphere_points()
    placed: list[tuple[NDArray[np.float64], NDArray[np.float64], bool]] = []
    for _ in range(200 * max(wanted, 1)):
        if len(placed) == wanted:
            break
        radius = rng.uniform(*spec.lesion_radius_mm)
        axes = radius * rng.uniform(0.8, 1.2, 3)
        centre = organ.centre + organ.radii * rng.uniform(-1, 1, 3)
        bright = bool(rng.random() < 0.5)
        reach = axes.max()
        if organ.level(centre + (reach + spec.margin_mm) * shell).max() > 1.0:
            continue
        if any(np.linalg.norm(centre - c) < reach + a.max() + spec.gap_mm for c, a, _ in placed):
            continue
        placed.append((centre, axes, bright))
    return placed


def _axes_mm(spec: PhantomSpec) -> list[NDArray[np.float64]]:
    """Voxel-centre coordinates in mm along each axis."""
    return [(np.arange(n) + 0.5) * s for n, s in zip(spec.shape, spec.spacing)]


def _smooth_field(spec: PhantomSpec, rng: np.random.Generator, wavelength_mm: float) -> NDArray[np.float32]:
    """A smooth field in ``[-1, 1]``: mean of ``_WAVES`` plane waves of ~``wavelength_mm``."""
    grids = np.meshgrid(*_axes_mm(spec), indexing="ij", sparse=True)
    field = np.zeros(spec.shape, np.float32)
    for _ in range(_WAVES):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        k = 2 * np.pi / (wavelength_mm * rng.uniform(0.7, 1.3))
        phase = rng.uniform(0, 2 * np.pi)
        arg = sum(k * d * g for d, g in zip(direction, grids)) + phase
        field += np.cos(arg).astype(np.float32)
    return field / _WAVES


# --------------------------------------------------------------------------- render
def _labels(spec: PhantomSpec, organ: _Organ,
            lesions: list[tuple[NDArray[np.float64], NDArray[np.float64], bool]]
            ) -> tuple[NDArray[np.uint8], NDArray[np.uint32]]:
    z, y, x = _axes_mm(spec)
    points = np.stack(np.meshgrid(z, y, x, indexing="ij"), axis=-1)
    semantic = np.where(organ.level(points) <= 1.0, ORGAN, BACKGROUND).astype(np.uint8)
    instance = np.zeros(spec.shape, np.uint32)
    axes_mm = (z, y, x)
    for i, (centre, semi, _) in enumerate(lesions, start=1):
        box = []
        for a, c, r, s in zip(axes_mm, centre, semi, spec.spacing):
            lo = max(int(np.floor((c - r) / s)) - 1, 0)
            hi = min(int(np.ceil((c + r) / s)) + 2, a.size)
            box.append(slice(lo, hi))
        inside = (
            ((axes_mm[0][box[0]][:, None, None] - centre[0]) / semi[0]) ** 2
            + ((axes_mm[1][box[1]][None, :, None] - centre[1]) / semi[1]) ** 2
            + ((axes_mm[2][box[2]][None, None, :] - centre[2]) / semi[2]) ** 2
        ) <= 1.0
        instance[tuple(box)][inside] = i
        semantic[tuple(box)][inside] = LESION
    return semantic, instance


def render_phantom(spec: PhantomSpec) -> Phantom:
    """Render a phantom volume with its semantic and instance labels.

    Parameters
    ----------
    spec : PhantomSpec
        Shape, spacing, seed and appearance.

    Returns
    -------
    Phantom
        ``image`` ``(Z, Y, X)`` int16, ``semantic`` uint8 (ids of
        :data:`PHANTOM_CLASSES`), ``instance`` uint32 (lesions ``1..n``).

    Raises
    ------
    ConfigError
        If ``spec`` is not a :class:`PhantomSpec`.

    Examples
    --------
    >>> ph = render_phantom(PhantomSpec(shape=(48, 48, 48), spacing=(4.0, 4.0, 4.0), seed=1))
    >>> ph.image.dtype.name, ph.semantic.dtype.name, ph.instance.dtype.name, ph.image.shape
    ('int16', 'uint8', 'uint32', (48, 48, 48))
    >>> sorted(np.unique(ph.semantic).tolist()), ph.lesion_count >= 1
    ([0, 1, 2], True)
    >>> bool(np.array_equal(ph.image, render_phantom(PhantomSpec(shape=(48, 48, 48),
    ...      spacing=(4.0, 4.0, 4.0), seed=1)).image))
    True
    """
    if not isinstance(spec, PhantomSpec):
        raise ConfigError(f"spec: expected a PhantomSpec, received {type(spec).__name__}")
    rng = np.random.default_rng([spec.seed, 0])
    organ = _organ(spec, rng)
    lesions = _lesions(spec, organ, rng)
    semantic, instance = _labels(spec, organ, lesions)
    look = np.random.default_rng([spec.seed, 1])
    texture = _smooth_field(spec, look, 40.0)
    image = np.full(spec.shape, spec.background, np.float32)
    organ_mask = semantic == ORGAN
    image[organ_mask] = spec.organ * (1.0 + 0.05 * texture[organ_mask])
    for i, (_, _, bright) in enumerate(lesions, start=1):
        image[instance == i] = spec.hyper if bright else spec.hypo
    if spec.blur_mm > 0:
        image = ndimage.gaussian_filter(
            image, [spec.blur_mm / s for s in spec.spacing], mode="nearest", truncate=3.0
        )
    image *= 1.0 + spec.bias * _smooth_field(spec, look, 300.0)
    noise_rng = np.random.default_rng([spec.seed, 2])
    image += noise_rng.normal(0.0, spec.noise, spec.shape).astype(np.float32)
    pixels = np.clip(np.rint(image), 0, 32767).astype(np.int16)
    spacing = tuple(float(s) for s in spec.spacing)
    return Phantom(pixels, semantic, instance, spacing)  # type: ignore[arg-type]
