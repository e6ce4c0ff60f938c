"""Where data lives: a local path or an object in an S3 bucket (``s3://bucket/key``).

A location is either a :class:`pathlib.Path` or an :class:`S3Uri`; both join with ``/``
and have ``name`` and ``parent``, so code that only composes locations never asks which
one it holds. :func:`parse_location` turns user input (a string, a path) into one.

Examples
--------
>>> uri = parse_location("s3://scenes/2026/tile.tif")
>>> uri.bucket, uri.key, uri.name, str(uri.parent / "other.tif")
('scenes', '2026/tile.tif', 'tile.tif', 's3://scenes/2026/other.tif')
>>> parse_location("results/run1")
PosixPath('results/run1')
>>> is_remote(uri), is_remote(parse_location("results"))
(True, False)
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from segcore.errors import ConfigError

SCHEME = "s3://"
# S3 bucket naming rules: 3-63 characters, lower-case letters, digits, dots and hyphens,
# beginning and ending with a letter or digit.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_OTHER_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


@dataclass(frozen=True, order=True)
class S3Uri:
    """An object (or a prefix, like a directory) in an S3 bucket.

    ``key`` has no leading or trailing ``/`` and no empty segment; ``""`` is the bucket
    itself.

    Examples
    --------
    >>> S3Uri.parse("s3://bkt/dir/") / "a.tif"
    S3Uri(bucket='bkt', key='dir/a.tif')
    >>> S3Uri("bkt", "a/b/c.tif").relative_to(S3Uri("bkt", "a"))
    PurePosixPath('b/c.tif')
    >>> S3Uri("bkt", "a/b").vsi
    '/vsis3/bkt/a/b'
    """

    bucket: str
    key: str = ""

    def __post_init__(self) -> None:
        if not _BUCKET.match(self.bucket):
            raise ConfigError(
                f"s3://{self.bucket}/{self.key}: expected a bucket name of 3-63 lower-case "
                f"letters, digits, dots or hyphens, got '{self.bucket}'")
        parts = [p for p in self.key.split("/") if p]
        if any(p in (".", "..") for p in parts):
            raise ConfigError(f"s3://{self.bucket}/{self.key}: expected a key without "
                              "'.' or '..' segments")
        object.__setattr__(self, "key", "/".join(parts))

    @classmethod
    def parse(cls, text: str) -> S3Uri:
        """``s3://bucket[/key]`` (a trailing ``/`` is allowed); ConfigError otherwise."""
        if not text.lower().startswith(SCHEME):
            raise ConfigError(f"{text}: expected an s3://bucket/key URI")
        bucket, _, key = text[len(SCHEME):].partition("/")
        if not bucket:
            raise ConfigError(f"{text}: expected s3://BUCKET/KEY, the bucket name is missing")
        return cls(bucket, key)

    def __str__(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.key}" if self.key else f"{SCHEME}{self.bucket}"

    def __truediv__(self, part: str | os.PathLike[str]) -> S3Uri:
        return S3Uri(self.bucket, f"{self.key}/{os.fspath(part)}")

    @property
    def name(self) -> str:
        """The last segment of the key (``""`` for the bucket)."""
        return self.key.rpartition("/")[2]

    @property
    def parent(self) -> S3Uri:
        return S3Uri(self.bucket, self.key.rpartition("/")[0])

    @property
    def prefix(self) -> str:
        """The key as a listing prefix: ``"dir/"`` (``""`` for the bucket)."""
        return f"{self.key}/" if self.key else ""

    @property
    def vsi(self) -> str:
        """The GDAL virtual file name (``/vsis3/bucket/key``)."""
        return f"/vsis3/{self.bucket}/{self.key}"

    def with_name(self, name: str) -> S3Uri:
        return self.parent / name

    def relative_to(self, other: S3Uri) -> PurePosixPath:
        """The key below ``other`` as a relative path; ValueError when it is not below."""
        if other.bucket != self.bucket or not self.key.startswith(other.prefix) \
                or self.key == other.key:
            raise ValueError(f"{self} is not below {other}")
        return PurePosixPath(self.key[len(other.prefix):])


Location = Path | S3Uri
"""A local path or an object-storage URI."""


def parse_location(value: str | os.PathLike[str] | S3Uri) -> Location:
    """A :class:`S3Uri` for ``s3://...``, else a local :class:`~pathlib.Path`.

    A :class:`~pathlib.Path` made from an ``s3://`` string (pathlib folds ``//`` into
    ``/``, giving ``s3:/bucket/key``) is recognised as the URI it came from.

    Raises
    ------
    ConfigError
        For another URI scheme (``gs://``, ``http://``, ...) or a malformed ``s3://`` URI.

    Examples
    --------
    >>> parse_location(Path("s3://bkt/key"))
    S3Uri(bucket='bkt', key='key')
    >>> parse_location("gs://bkt/key")
    Traceback (most recent call last):
    ...
    segcore.errors.ConfigError: gs://bkt/key: unsupported storage scheme 'gs'; expected a local path or s3://bucket/key
    """
    if isinstance(value, S3Uri):
        return value
    text = os.fspath(value)
    if isinstance(value, Path) and text.lower().startswith("s3:/") \
            and not text.lower().startswith(SCHEME):
        text = SCHEME + text[len("s3:/"):]
    if text.lower().startswith(SCHEME):
        return S3Uri.parse(text)
    other = _OTHER_SCHEME.match(text)
    if other:
        raise ConfigError(f"{text}: unsupported storage scheme '{other.group(1)}'; expected a "
                          "local path or s3://bucket/key")
    return Path(text)


def is_remote(location: str | os.PathLike[str] | S3Uri) -> bool:
    """Whether ``location`` names object storage rather than a local path."""
    return isinstance(parse_location(location), S3Uri)
