"""'Did you mean' hints for option strings typed by users."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


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
