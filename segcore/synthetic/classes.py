"""Class table of the synthetic satellite scenes.

Semantic label arrays of :func:`segcore.synthetic.satellite.render` store the
ids below; :data:`SATELLITE_CLASSES` names them and gives each an overlay colour.
"""

from __future__ import annotations

from dataclasses import dataclass

from segcore.errors import ConfigError

__all__ = [
    "BACKGROUND",
    "BUILDING",
    "ROAD",
    "SATELLITE_CLASSES",
    "VEGETATION",
    "WATER",
    "ClassInfo",
]

BACKGROUND, VEGETATION, WATER, ROAD, BUILDING = 0, 1, 2, 3, 4


@dataclass(frozen=True)
class ClassInfo:
    """One class of a class table.

    Parameters
    ----------
    id : int
        Class id as stored in semantic label arrays.
    name : str
        Short lowercase name.
    isthing : bool
        Whether pixels of this class form countable instances.
    color : tuple of int
        ``(r, g, b)`` in ``0..255`` for overlays and legends.
    """

    id: int
    name: str
    isthing: bool
    color: tuple[int, int, int]

    def __post_init__(self) -> None:
        if isinstance(self.id, bool) or not isinstance(self.id, int) or self.id < 0:
            raise ConfigError(f"ClassInfo.id: expected an int >= 0, received {self.id!r}")
        if len(self.color) != 3 or any(not 0 <= int(c) <= 255 for c in self.color):
            raise ConfigError(
                f"ClassInfo.color: expected three ints in 0..255, received {self.color!r}"
            )


SATELLITE_CLASSES: tuple[ClassInfo, ...] = (
    ClassInfo(BACKGROUND, "background", False, (181, 148, 105)),
    ClassInfo(VEGETATION, "vegetation", False, (46, 139, 87)),
    ClassInfo(WATER, "water", False, (30, 100, 200)),
    ClassInfo(ROAD, "road", False, (128, 128, 128)),
    ClassInfo(BUILDING, "building", True, (220, 50, 47)),
)
"""Class table of the synthetic satellite scenes (ids 0..4, building is a thing)."""
