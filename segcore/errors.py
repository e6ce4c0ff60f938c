"""Error hierarchy shared by every layer.

Each error also subclasses the matching builtin, so ``except ValueError`` keeps
working for callers that do not know segpipe. Messages name the parameter (or
file), what was expected and what was received.
"""

from __future__ import annotations


class SegpipeError(Exception):
    """Base class of every error segpipe raises on purpose."""


class ConfigError(SegpipeError, ValueError):
    """A parameter or configuration value is invalid."""


class TileSizeError(ConfigError):
    """Tile, halo or chunk sizes do not fit together or do not fit the model."""


class ModelError(SegpipeError, ValueError):
    """A model bundle or architecture name is unknown, unreadable or inconsistent."""


class InputError(SegpipeError, ValueError):
    """An input file (scene or labels) is unusable.

    Parameters
    ----------
    path : str
        The offending file.
    reason : str
        One line saying what is wrong and, where possible, how to fix it.
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self) -> tuple:
        """Pickles as (path, reason), so it crosses process boundaries (Ray tasks) intact.

        Examples
        --------
        >>> import pickle
        >>> str(pickle.loads(pickle.dumps(InputError("a.tif", "truncated"))))
        'a.tif: truncated'
        """
        return (type(self), (self.path, self.reason))
