"""STAC documents out: a derived ``item.json`` per scene and a run's ``catalog.json``.

The Item describes the scene's outputs as assets with roles (the label COGs: ``data``;
``report.json``: ``metadata``; ``report.html``: ``overview``; quicklooks:
``overview``/``visual``), with the projection, raster and classification extensions
(the class table on the semantic COG), the processing extension (software, lineage)
and a ``derived_from`` link to the source Item. Hrefs are relative (``./semantic.tif``),
so a scene directory can be moved or uploaded as it is. The catalog links the Items of
a run as ``./<scene_id>/item.json``; every Item links it as ``../catalog.json``.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pystac
from pystac.extensions.classification import Classification, ClassificationExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, RasterBand, RasterExtension
from rasterio.crs import CRS

from pipeline.io.geotiff import RasterInfo

__all__ = ["CATALOG", "ITEM", "PROCESSING_SCHEMA", "DerivedItem", "derived_item",
           "run_catalog"]

ITEM = "item.json"
CATALOG = "catalog.json"
PROCESSING_SCHEMA = "https://stac-extensions.github.io/processing/v1.2.0/schema.json"
COG = pystac.MediaType.COG
_QUICKLOOK_ROLES = {"image": ["overview", "visual"]}


def _version() -> str:
    try:
        return importlib.metadata.version("segpipe")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class DerivedItem:
    """What the derived Item says besides the grid: its source and the model.

    ``classes`` are ``(value, name, (r, g, b))``; ``source`` is the source Item's
    absolute href; ``properties`` the source's datetime fields; ``resampled`` the bands
    read onto the finest band's grid.
    """

    item_id: str
    source: str
    geometry: dict[str, Any] | None
    bbox: list[float] | None
    properties: dict[str, Any]
    model: str
    bands: tuple[str, ...]
    classes: tuple[tuple[int, str, tuple[int, int, int]], ...]
    resampled: tuple[str, ...] = ()


def _datetime(properties: dict[str, Any]) -> dt.datetime | None:
    text = properties.get("datetime")
    return None if text is None else pystac.utils.str_to_datetime(text)


def _projection(target: Any, info: RasterInfo) -> None:
    proj = ProjectionExtension.ext(target, add_if_missing=isinstance(target, pystac.Item))
    epsg = CRS.from_wkt(info.crs_wkt).to_epsg() if info.crs_wkt else None
    if epsg is not None:
        proj.code = f"EPSG:{epsg}"
    elif info.crs_wkt:
        proj.wkt2 = CRS.from_wkt(info.crs_wkt).to_wkt("WKT2_2019")
    proj.shape = list(info.shape)
    proj.transform = list(info.transform)


def _label_asset(item: pystac.Item, name: str, file: str, dtype: str,
                 nodata: int | None, spec: DerivedItem) -> None:
    asset = pystac.Asset(f"./{file}", title=f"{name} labels (COG)", media_type=COG,
                         roles=["data"])
    item.add_asset(name, asset)
    RasterExtension.ext(asset, add_if_missing=True).bands = [
        RasterBand.create(data_type=DataType(dtype), nodata=nodata)]
    if name == "semantic":
        ClassificationExtension.ext(asset, add_if_missing=True).classes = [
            Classification.create(value=v, name=n.replace(" ", "_"), description=n,
                                  color_hint="{:02X}{:02X}{:02X}".format(*rgb))
            for v, n, rgb in spec.classes]


def _lineage(spec: DerivedItem) -> str:
    """``processing:lineage``: the model, the bands and which of them were resampled."""
    text = (f"segmented by segpipe with model '{spec.model}' from bands "
            f"{', '.join(spec.bands)} of Item '{spec.item_id}'")
    if spec.resampled:
        text += (f"; {', '.join(spec.resampled)} resampled onto the grid of the finest band "
                 "(nearest neighbour)")
    return text


def derived_item(spec: DerivedItem, info: RasterInfo, *,
                 labels: dict[str, tuple[str, str, int | None]],
                 quicklooks: dict[str, str]) -> pystac.Item:
    """The Item of one scene's outputs.

    ``labels``: array name -> (file name, dtype, nodata) of the exported COGs;
    ``quicklooks``: caption -> PNG file name.
    """
    props = {k: v for k, v in spec.properties.items() if k in
             ("start_datetime", "end_datetime")}
    item = pystac.Item(spec.item_id, spec.geometry, spec.bbox, _datetime(spec.properties),
                       properties=props)
    item.stac_extensions.append(PROCESSING_SCHEMA)
    item.properties.update({
        "processing:software": {"segpipe": _version()},
        "processing:lineage": _lineage(spec),
        "processing:datetime": pystac.utils.datetime_to_str(dt.datetime.now(dt.UTC)),
    })
    _projection(item, info)
    for name, (file, dtype, nodata) in labels.items():
        _label_asset(item, name, file, dtype, nodata, spec)
    item.add_asset("report", pystac.Asset("./report.json", title="Scene report",
                                          media_type=pystac.MediaType.JSON, roles=["metadata"]))
    item.add_asset("report_html", pystac.Asset("./report.html", title="Scene report (HTML)",
                                               media_type=pystac.MediaType.HTML,
                                               roles=["overview"]))
    for caption, file in quicklooks.items():
        item.add_asset(f"quicklook_{caption}", pystac.Asset(
            f"./{file}", title=f"Quicklook: {caption}", media_type=pystac.MediaType.PNG,
            roles=_QUICKLOOK_ROLES.get(caption, ["overview"])))
    item.add_link(pystac.Link("derived_from", spec.source, media_type=pystac.MediaType.GEOJSON))
    item.add_link(pystac.Link(pystac.RelType.ROOT, f"../{CATALOG}",
                              media_type=pystac.MediaType.JSON))
    item.add_link(pystac.Link(pystac.RelType.PARENT, f"../{CATALOG}",
                              media_type=pystac.MediaType.JSON))
    return item


def item_document(item: pystac.Item) -> dict[str, Any]:
    """The Item as JSON with its relative hrefs kept (no self link)."""
    return item.to_dict(include_self_link=False, transform_hrefs=False)


def run_catalog(scene_ids: Sequence[str], *, model: str) -> dict[str, Any]:
    """The run's ``catalog.json``: one ``item`` link per scene (``./<id>/item.json``)."""
    catalog = pystac.Catalog("segpipe-run", f"Segmentations by segpipe with model '{model}'",
                             title="segpipe run")
    doc = catalog.to_dict(include_self_link=False, transform_hrefs=False)
    doc["links"] = [{"rel": "root", "href": f"./{CATALOG}", "type": "application/json"}] + [
        {"rel": "item", "href": f"./{sid}/{ITEM}", "type": "application/geo+json"}
        for sid in scene_ids]
    return doc
