"""The one error object storage raises: which location, and why, on one line."""

from __future__ import annotations

from segcore.errors import SegpipeError


class StorageError(SegpipeError, OSError):
    """A location (an ``s3://`` URI or a local path) cannot be read or written.

    Parameters
    ----------
    location : str
        The URI or path the operation was about.
    reason : str
        One line: what went wrong and, where possible, how to fix it.

    Examples
    --------
    >>> str(StorageError("s3://bkt/a.tif", "no such key"))
    's3://bkt/a.tif: no such key'
    >>> isinstance(StorageError("x", "y"), OSError)
    True
    """

    def __init__(self, location: str, reason: str) -> None:
        self.location = str(location)
        self.reason = reason
        super().__init__(f"{self.location}: {reason}")

    def __reduce__(self):  # Ray and multiprocessing re-create it from its two fields
        return type(self), (self.location, self.reason)


class MissingObjectError(StorageError, FileNotFoundError):
    """The bucket exists but holds no object under the key."""
