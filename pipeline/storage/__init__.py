"""Where inputs and outputs live: local paths or S3-compatible object storage.

* :mod:`~pipeline.storage.location`: a location is a :class:`~pathlib.Path` or an
  :class:`~pipeline.storage.location.S3Uri`; :func:`parse_location` reads user input.
* :mod:`~pipeline.storage.aws`: the standard AWS environment, mapped onto obstore's and
  GDAL's options; :mod:`~pipeline.storage.gdal` applies the latter.
* :mod:`~pipeline.storage.objects`: whole objects (stat, get, put, list, copy, delete).
* :mod:`~pipeline.storage.conditional`: conditional writes (create if absent, replace if
  unchanged), the compare-and-swap that scene locks on object storage are built on.
* :mod:`~pipeline.storage.access`: the same few operations for either kind of location.
* :mod:`~pipeline.storage.staging`: a local directory whose files are uploaded on success.
* :mod:`~pipeline.storage.zarr_stores`: the Zarr store of a location.
* :mod:`~pipeline.storage.downloads`: local copies for readers that need a file.

Every failure is one :class:`~pipeline.storage.errors.StorageError` line naming the
location and the reason. This package knows no stage, format or actor.
"""

from pipeline.storage.errors import MissingObjectError, StorageError
from pipeline.storage.location import Location, S3Uri, is_remote, parse_location

__all__ = ["Location", "MissingObjectError", "S3Uri", "StorageError", "is_remote",
           "parse_location"]
