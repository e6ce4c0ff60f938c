"""N-dimensional half-open index windows.

A :class:`Window` is the box ``[start, stop)`` along every axis of an array.
It is pure geometry: no array is held, only integer bounds, validated on
construction (like ``rasterio.windows.Window``, but for any number of axes and
without the floating-point offsets).
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

from segcore.errors import ConfigError

__all__ = ["Window"]


def _as_int_tuple(name: str, value: object) -> tuple[int, ...]:
    try:
        items = tuple(value)  # type: ignore[call-overload]
    except TypeError:
        raise ConfigError(
            f"Window.{name}: expected a tuple of ints, received {value!r}"
        ) from None
    try:
        if any(isinstance(item, bool) for item in items):
            raise TypeError
        return tuple(operator.index(item) for item in items)
    except TypeError:
        raise ConfigError(
            f"Window.{name}: expected a tuple of ints, received {value!r}"
        ) from None


@dataclass(frozen=True)
class Window:
    """Half-open box ``[start, stop)`` in N dimensions.

    Parameters
    ----------
    start : tuple of int
        First index along every axis (inclusive), ``>= 0``.
    stop : tuple of int
        End index along every axis (exclusive), ``>= start``.

    Raises
    ------
    ConfigError
        If ``start`` and ``stop`` differ in length, hold non-integers, or an
        axis has ``start < 0`` or ``stop < start``.

    Examples
    --------
    >>> w = Window((2, 0), (5, 4))
    >>> w.shape, w.size, w.ndim
    ((3, 4), 12, 2)
    >>> w.slices
    (slice(2, 5, None), slice(0, 4, None))
    """

    start: tuple[int, ...]
    stop: tuple[int, ...]

    def __post_init__(self) -> None:
        start = _as_int_tuple("start", self.start)
        stop = _as_int_tuple("stop", self.stop)
        if len(start) != len(stop):
            raise ConfigError(
                f"Window: expected start and stop of the same length, received "
                f"start={start} ({len(start)} axes) and stop={stop} ({len(stop)} axes)"
            )
        for axis, (a, b) in enumerate(zip(start, stop)):
            if a < 0 or b < a:
                raise ConfigError(
                    f"Window: expected 0 <= start <= stop on every axis, received "
                    f"start={a}, stop={b} on axis {axis}"
                )
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "stop", stop)

    @property
    def ndim(self) -> int:
        """Number of axes."""
        return len(self.start)

    @property
    def shape(self) -> tuple[int, ...]:
        """Extent along every axis, ``stop - start``."""
        return tuple(b - a for a, b in zip(self.start, self.stop))

    @property
    def size(self) -> int:
        """Number of elements in the window."""
        return math.prod(self.shape)

    @property
    def slices(self) -> tuple[slice, ...]:
        """The window as a tuple of slices, ready to index an array."""
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop))

    def _check_ndim(self, other: Window, method: str) -> None:
        if not isinstance(other, Window):
            raise ConfigError(
                f"Window.{method}: expected a Window, received {type(other).__name__}"
            )
        if other.ndim != self.ndim:
            raise ConfigError(
                f"Window.{method}: expected a Window with {self.ndim} axes, "
                f"received one with {other.ndim} axes"
            )

    def intersection(self, other: Window) -> Window | None:
        """Overlap of two windows, or ``None`` if they share no element.

        Parameters
        ----------
        other : Window
            A window with the same number of axes.

        Returns
        -------
        Window or None
            The common box; ``None`` when it would be empty on some axis.

        Examples
        --------
        >>> Window((0, 0), (4, 4)).intersection(Window((2, 3), (6, 6)))
        Window(start=(2, 3), stop=(4, 4))
        >>> Window((0,), (2,)).intersection(Window((2,), (3,))) is None
        True
        """
        self._check_ndim(other, "intersection")
        start = tuple(max(a, c) for a, c in zip(self.start, other.start))
        stop = tuple(min(b, d) for b, d in zip(self.stop, other.stop))
        if any(b <= a for a, b in zip(start, stop)):
            return None
        return Window(start, stop)

    def contains(self, other: Window) -> bool:
        """Whether ``other`` lies entirely inside this window.

        Examples
        --------
        >>> Window((0, 0), (4, 4)).contains(Window((1, 1), (4, 3)))
        True
        >>> Window((0, 0), (4, 4)).contains(Window((1, 1), (5, 3)))
        False
        """
        self._check_ndim(other, "contains")
        return all(
            a <= c and d <= b
            for a, b, c, d in zip(self.start, self.stop, other.start, other.stop)
        )

    def relative_to(self, outer: Window) -> Window:
        """Coordinates of this window inside ``outer``.

        Parameters
        ----------
        outer : Window
            A window that contains this one.

        Returns
        -------
        Window
            This window shifted by ``-outer.start``.

        Raises
        ------
        ConfigError
            If ``outer`` does not contain this window.

        Examples
        --------
        >>> Window((10, 12), (20, 14)).relative_to(Window((8, 8), (24, 16)))
        Window(start=(2, 4), stop=(12, 6))
        """
        self._check_ndim(outer, "relative_to")
        if not outer.contains(self):
            raise ConfigError(
                f"Window.relative_to: expected an outer window containing {self}, "
                f"received {outer}"
            )
        return Window(
            tuple(a - o for a, o in zip(self.start, outer.start)),
            tuple(b - o for b, o in zip(self.stop, outer.start)),
        )
