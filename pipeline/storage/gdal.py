"""GDAL configured for ``/vsis3/`` from the standard AWS environment.

Kept apart from :mod:`pipeline.storage.aws` so that code which only needs Zarr stores
or whole objects never imports GDAL (rasterio).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import rasterio

from pipeline.storage.aws import AwsSettings


@contextmanager
def gdal_env(settings: AwsSettings | None = None) -> Iterator[None]:
    """A ``rasterio.Env`` with :meth:`AwsSettings.gdal_options` (read from the
    environment when ``settings`` is None); GDAL reads the credentials from the
    environment itself."""
    settings = AwsSettings.from_env() if settings is None else settings
    with rasterio.Env(**settings.gdal_options()):
        yield
