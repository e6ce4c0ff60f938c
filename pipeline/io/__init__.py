"""Format adapters: GeoTIFF (rasterio), COG export, and the Zarr scene store.

GDAL's block cache defaults to 5 % of physical memory and fills up while a large
scene is read or written window by window, so memory would grow with the scene.
segpipe caps it (``GDAL_CACHEMAX``, in MB) unless the user set it: memory stays
bounded by the tile and strip sizes.
"""

import os

os.environ.setdefault("GDAL_CACHEMAX", "128")
