"""'Did you mean' hints for option strings typed by users."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from enum import Enum
from typing import TypeVar

from segcore.errors import ConfigError

E = TypeVar("E", bound=Enum)


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """Return a hint such as ``" (did you mean 'unet2d'?)"`` or ``""``.

    Examples
    --------
    >>> did_you_mean("unet", ["unet2d", "deeplab"])
    " (did you mean 'unet2d'?)"
    >>> did_you_mean("zzz", ["unet2d"])
    ''
    """
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def parse_choice(enum: type[E], value: object, *, name: str, note: str = "") -> E:
    """The member of a string ``enum`` named by ``value``, or one clear ConfigError.

    Examples
    --------
    >>> from enum import Enum
    >>> class Mode(str, Enum):
    ...     FAST = "fast"
    >>> parse_choice(Mode, "fast", name="mode")
    <Mode.FAST: 'fast'>
    >>> parse_choice(Mode, "fats", name="mode")
    Traceback (most recent call last):
    ...
    segcore.errors.ConfigError: mode: expected one of ['fast'], received 'fats' (did you mean 'fast'?)
    """
    try:
        return enum(getattr(value, "value", value))
    except ValueError:
        names = [m.value for m in enum]
        raise ConfigError(
            f"{name}: expected one of {names}{note}, received {value!r}"
            f"{did_you_mean(str(value), names)}"
        ) from None
