"""Parameters of a synthetic satellite scene: :class:`SatelliteSceneSpec`."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from segcore.errors import ConfigError

__all__ = ["SatelliteSceneSpec"]


def _check_int(name: str, value: object, low: int, high: int | None = None) -> None:
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not ok or value < low or (high is not None and value > high):  # type: ignore[operator]
        bound = f">= {low}" if high is None else f"in {low}..{high}"
        raise ConfigError(f"SatelliteSceneSpec.{name}: expected an int {bound}, received {value!r}")


def _check_float(name: str, value: object, low: float, high: float, *, open_high: bool) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = low <= value < high if open_high else low <= value <= high  # type: ignore[operator]
    if not ok:
        bracket = ")" if open_high else "]"
        raise ConfigError(
            f"SatelliteSceneSpec.{name}: expected a number in [{low}, {high}{bracket}, "
            f"received {value!r}"
        )


@dataclass(frozen=True)
class SatelliteSceneSpec:
    """Everything that defines a synthetic scene; equal specs render equal pixels.

    Parameters
    ----------
    seed : int
        Scene seed, ``>= 0``.
    height, width : int
        Scene size in pixels, ``>= 1`` (any size: the scene is never held whole).
    bands : int, optional
        3 (RGB) or 4 (RGB + NIR).
    forest_cover : float, optional
        Approximate fraction of forest before roads and buildings, in ``[0, 1)``.
    grass_fraction : float, optional
        Fraction of field parcels that are grass (vegetation), in ``[0, 1]``.
    lake_cover : float, optional
        Approximate fraction of lakes, in ``[0, 1)``.
    road_density : float, optional
        Roads per 1000 px of ``height + width`` (at least 2 roads when ``> 0``).
    river_density : float, optional
        Rivers per 1000 px of ``height + width`` (rounded).
    building_density : float, optional
        Multiplier of the per-cell building probability, in ``[0, 4]``.
    noise_level : float, optional
        Standard deviation of the sensor noise in digital numbers, in ``[0, 50]``.
    haze : float, optional
        Maximum haze opacity, in ``[0, 1)``.
    cell_size : int, optional
        Building grid cell in pixels (one candidate building per cell), ``16..256``.
    large_buildings : float, optional
        Fraction of building candidates that are *large*, in ``[0, 1]``: they fill
        55-90 % of their cell per side (some are L-shaped), so with ``cell_size``
        128-256 they are far larger than a model's tile halo. 0 (the default)
        leaves every scene as it was without this option.

    Raises
    ------
    ConfigError
        If a value is out of range; the message names the field.

    Examples
    --------
    >>> spec = SatelliteSceneSpec(seed=1, height=1000, width=500)
    >>> spec.shape, spec.max_instance_id
    ((1000, 500), 231)
    >>> SatelliteSceneSpec(seed=1, height=64, width=64, large_buildings=1.5)
    Traceback (most recent call last):
    ...
    segcore.errors.ConfigError: SatelliteSceneSpec.large_buildings: expected a number in [0.0, 1.0], received 1.5
    """

    seed: int
    height: int
    width: int
    bands: int = 3
    forest_cover: float = 0.22
    grass_fraction: float = 0.15
    lake_cover: float = 0.07
    road_density: float = 2.0
    river_density: float = 0.5
    building_density: float = 1.0
    noise_level: float = 5.0
    haze: float = 0.12
    cell_size: int = 48
    large_buildings: float = 0.0

    def __post_init__(self) -> None:
        _check_int("seed", self.seed, 0)
        _check_int("height", self.height, 1)
        _check_int("width", self.width, 1)
        _check_int("bands", self.bands, 3, 4)
        _check_int("cell_size", self.cell_size, 16, 256)
        _check_float("forest_cover", self.forest_cover, 0.0, 1.0, open_high=True)
        _check_float("grass_fraction", self.grass_fraction, 0.0, 1.0, open_high=False)
        _check_float("lake_cover", self.lake_cover, 0.0, 1.0, open_high=True)
        _check_float("road_density", self.road_density, 0.0, 100.0, open_high=False)
        _check_float("river_density", self.river_density, 0.0, 100.0, open_high=False)
        _check_float("building_density", self.building_density, 0.0, 4.0, open_high=False)
        _check_float("noise_level", self.noise_level, 0.0, 50.0, open_high=False)
        _check_float("haze", self.haze, 0.0, 1.0, open_high=True)
        _check_float("large_buildings", self.large_buildings, 0.0, 1.0, open_high=False)

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)``."""
        return (self.height, self.width)

    @property
    def cells(self) -> tuple[int, int]:
        """Building grid size ``(rows, columns)`` of cells covering the scene."""
        return (-(-self.height // self.cell_size), -(-self.width // self.cell_size))

    @property
    def max_instance_id(self) -> int:
        """Largest building instance id the scene can hold (cell count)."""
        rows, cols = self.cells
        return rows * cols
