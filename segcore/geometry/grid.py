"""Regular tile grids with halos: the tile plan of a scene.

A :class:`TileGrid` splits an N-dimensional scene of ``shape`` into cores of
``tile`` pixels (the last core along an axis may be shorter). Each core is one
storage chunk (``chunks == tile``), so each writer owns whole chunks.

Edge-padding rule (what makes tiled inference equal whole-scene inference)
--------------------------------------------------------------------------
* A tile's halo window is its core grown by ``halo`` on each side and
  **clipped at the scene edge**: it never reaches outside the scene and no
  context is invented, so an edge tile sees exactly what a whole-scene pass
  sees there.
* The model input (the halo window) is then padded only at its far end, to
  the next multiple of the model stride, with
  :func:`segcore.geometry.pad_to_multiple`. Since ``tile`` and ``halo`` are
  multiples of ``align`` (the stride), every window origin is a multiple of
  the stride and every window that does not end at the scene edge already
  has a length that is a multiple of it; a window that ends at the scene
  edge is padded to the same far-end position, with the same values, as the
  whole scene is.
* Hence, with ``halo >= (R - 1) / 2`` for the centred receptive field ``R``
  (:func:`segcore.receptive_field.halo_for`), cropping
  :attr:`Tile.core_in_halo` from each window's output reproduces the
  whole-scene output exactly (up to floating-point summation order).
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from segcore.errors import TileSizeError
from segcore.geometry.window import Window

__all__ = ["Tile", "TileGrid"]


@dataclass(frozen=True)
class Tile:
    """One tile of a :class:`TileGrid`.

    Parameters
    ----------
    index : tuple of int
        Position of the tile in the grid (one entry per axis).
    core : Window
        Pixels this tile owns and writes (one storage chunk).
    halo : Window
        Pixels read as model input: the core grown by the halo, clipped to
        the scene.

    Examples
    --------
    >>> t = Tile((1,), core=Window((8,), (16,)), halo=Window((4,), (20,)))
    >>> t.core_in_halo
    Window(start=(4,), stop=(12,))
    """

    index: tuple[int, ...]
    core: Window
    halo: Window

    def __post_init__(self) -> None:
        if not self.halo.contains(self.core):
            raise TileSizeError(
                f"Tile.halo: expected a window containing the core {self.core}, "
                f"received {self.halo}"
            )

    @property
    def core_in_halo(self) -> Window:
        """The core in coordinates of the halo window (what to crop)."""
        return self.core.relative_to(self.halo)


def _int(value: object) -> int:
    if isinstance(value, bool):
        raise TypeError("bool is not an axis length")
    return operator.index(value)  # type: ignore[arg-type]


def _broadcast(name: str, value: int | Sequence[int], ndim: int) -> tuple[int, ...]:
    """``value`` as ``ndim`` ints: an int is repeated, a sequence must match."""
    try:
        return (_int(value),) * ndim
    except TypeError:
        pass
    try:
        items = tuple(_int(v) for v in value)  # type: ignore[union-attr]
    except TypeError:
        items = ()
    if len(items) != ndim:
        raise TileSizeError(
            f"TileGrid {name}: expected an int or {ndim} ints (one per axis of "
            f"shape), received {value!r}"
        )
    return items


def _as_shape(shape: int | Sequence[int]) -> tuple[int, ...]:
    try:
        return (_int(shape),)
    except TypeError:
        pass
    try:
        return tuple(_int(v) for v in shape)  # type: ignore[union-attr]
    except TypeError:
        raise TileSizeError(
            f"TileGrid shape: expected a tuple of ints, received {shape!r}"
        ) from None


@dataclass(frozen=True)
class TileGrid:
    """Regular grid of tile cores with clipped halo windows.

    Prefer :meth:`create`, which accepts ints for ``tile`` and ``halo``. The
    constructor normalises the same way: ints are broadcast to every axis and
    ``tile`` is clipped to ``shape`` (a tile larger than the scene means one
    tile along that axis).

    Parameters
    ----------
    shape : tuple of int
        Scene shape, every entry ``>= 1``.
    tile : tuple of int
        Core size per axis, ``>= 1``; a multiple of ``align`` unless it spans
        the whole axis.
    halo : tuple of int
        Context added on each side per axis, ``>= 0``, a multiple of ``align``.
    align : int, default 1
        The model's total stride: every window origin is a multiple of it.

    Raises
    ------
    TileSizeError
        If any of these rules is broken; the message names the parameter.

    Examples
    --------
    >>> grid = TileGrid.create((10, 7), tile=4, halo=2, align=2)
    >>> grid.grid_shape, len(grid), grid.chunks
    ((3, 2), 6, (4, 4))
    >>> grid.tile_at((2, 1))
    Tile(index=(2, 1), core=Window(start=(8, 4), stop=(10, 7)), halo=Window(start=(6, 2), stop=(10, 7)))
    """

    shape: tuple[int, ...]
    tile: tuple[int, ...]
    halo: tuple[int, ...]
    align: int = 1

    def __post_init__(self) -> None:
        shape = _as_shape(self.shape)
        if not shape or any(s < 1 for s in shape):
            raise TileSizeError(
                f"TileGrid shape: expected at least one axis, each >= 1, received {self.shape!r}"
            )
        ndim = len(shape)
        tile = _broadcast("tile", self.tile, ndim)
        halo = _broadcast("halo", self.halo, ndim)
        try:
            align = _int(self.align)
        except TypeError:
            align = 0
        if align < 1:
            raise TileSizeError(
                f"TileGrid align: expected an integer >= 1, received {self.align!r}"
            )
        if any(t < 1 for t in tile):
            raise TileSizeError(f"TileGrid tile: expected every entry >= 1, received {tile}")
        if any(h < 0 for h in halo):
            raise TileSizeError(f"TileGrid halo: expected every entry >= 0, received {halo}")
        tile = tuple(min(t, s) for t, s in zip(tile, shape))
        for axis, (t, h, s) in enumerate(zip(tile, halo, shape)):
            if t % align and t != s:
                raise TileSizeError(
                    f"TileGrid tile: expected a multiple of align={align} (the model "
                    f"stride) on axis {axis}, received {t}; use "
                    f"{max(align, t // align * align)} or {-(-t // align) * align}"
                )
            if h % align:
                raise TileSizeError(
                    f"TileGrid halo: expected a multiple of align={align} (the model "
                    f"stride) on axis {axis}, received {h}; use {-(-h // align) * align}"
                )
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "tile", tile)
        object.__setattr__(self, "halo", halo)
        object.__setattr__(self, "align", align)

    @classmethod
    def create(
        cls,
        shape: Sequence[int],
        tile: int | Sequence[int],
        halo: int | Sequence[int] = 0,
        align: int = 1,
    ) -> TileGrid:
        """Build a grid, broadcasting int ``tile``/``halo`` to every axis.

        Examples
        --------
        >>> TileGrid.create((100, 30), tile=64, halo=8, align=8)
        TileGrid(shape=(100, 30), tile=(64, 30), halo=(8, 8), align=8)
        """
        shape_t = _as_shape(shape)
        ndim = len(shape_t)
        return cls(shape_t, _broadcast("tile", tile, ndim), _broadcast("halo", halo, ndim), align)

    @property
    def ndim(self) -> int:
        """Number of axes."""
        return len(self.shape)

    @property
    def chunks(self) -> tuple[int, ...]:
        """Storage chunk shape: one chunk per tile core (equals ``tile``)."""
        return self.tile

    @property
    def grid_shape(self) -> tuple[int, ...]:
        """Number of tiles along every axis."""
        return tuple(-(-s // t) for s, t in zip(self.shape, self.tile))

    def __len__(self) -> int:
        return math.prod(self.grid_shape)

    def __iter__(self) -> Iterator[Tile]:
        """Tiles in C order (last axis fastest)."""
        for index in itertools.product(*(range(n) for n in self.grid_shape)):
            yield self._tile(index)

    def flat_index(self, index: Sequence[int]) -> int:
        """Position of the tile at grid ``index`` in C order (the order of iteration).

        Examples
        --------
        >>> grid = TileGrid.create((100, 250), tile=64, halo=8)
        >>> grid.grid_shape, grid.flat_index((1, 2))
        ((2, 4), 6)
        """
        flat = 0
        for i, n in zip(self.tile_at(index).index, self.grid_shape):  # validates ``index``
            flat = flat * n + i
        return flat

    def tile_at(self, index: Sequence[int]) -> Tile:
        """The tile at grid position ``index``.

        Raises
        ------
        TileSizeError
            If ``index`` is outside :attr:`grid_shape`.
        """
        try:
            idx = tuple(_int(i) for i in index)
        except TypeError:
            idx = ()
        if len(idx) != self.ndim or any(
            not 0 <= i < n for i, n in zip(idx, self.grid_shape)
        ):
            raise TileSizeError(
                f"TileGrid.tile_at index: expected {self.ndim} ints within grid "
                f"shape {self.grid_shape}, received {index!r}"
            )
        return self._tile(idx)

    def _tile(self, index: tuple[int, ...]) -> Tile:
        start = tuple(i * t for i, t in zip(index, self.tile))
        stop = tuple(min(a + t, s) for a, t, s in zip(start, self.tile, self.shape))
        core = Window(start, stop)
        halo = Window(
            tuple(max(a - h, 0) for a, h in zip(start, self.halo)),
            tuple(min(b + h, s) for b, h, s in zip(stop, self.halo, self.shape)),
        )
        return Tile(index, core, halo)
