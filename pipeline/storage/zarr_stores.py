"""The Zarr store behind a location: a local directory, or zarr's obstore backend.

A store on object storage is a :class:`zarr.storage.ObjectStore` over an obstore
:class:`~obstore.store.S3Store` rooted at the URI's key, so every chunk is one object
and one request; stores are created per call (clients are cached in
:mod:`pipeline.storage.objects`).

Examples
--------
>>> zarr_store("/data/scene.zarr")
'/data/scene.zarr'
"""

from __future__ import annotations

import os
from typing import Any

from zarr.storage import ObjectStore

from pipeline.storage.location import Location, S3Uri, parse_location
from pipeline.storage.objects import s3_store


def zarr_store(location: str | os.PathLike[str] | Location, *, read_only: bool = False) -> Any:
    """What :func:`zarr.open_group` takes for ``location``: a path string or an
    ``ObjectStore``."""
    where = parse_location(location)
    if isinstance(where, S3Uri):
        return ObjectStore(s3_store(where, prefix=where.key), read_only=read_only)
    return str(where)
