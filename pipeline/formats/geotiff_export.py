"""Exports of the label arrays as Cloud-Optimized GeoTIFFs on the input's grid."""

from __future__ import annotations

from pathlib import Path

import zarr

from pipeline.io.cog import write_cog
from pipeline.io.geotiff import RasterInfo


def export_cogs(group: zarr.Group, names: list[str], info: RasterInfo, out_dir: Path,
                nodata: dict[str, int | None]) -> dict[str, str]:
    """Write ``<name>.tif`` for each label array; returns name -> file name."""
    written = {}
    for name in names:
        array = group[name]
        dst = out_dir / f"{name}.tif"
        write_cog(dst, array, info=info, dtype=str(array.dtype), nodata=nodata.get(name))
        written[name] = dst.name
    return written
