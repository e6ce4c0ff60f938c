"""STAC documents in: Items, ItemCollections and static Catalogs/Collections.

A STAC file is read with pystac (local paths, or ``s3://`` objects through
:mod:`pipeline.storage`), and every Item it holds or links is returned with its
self href set, so asset hrefs resolve relative to their Item. Bands are chosen by
their ``eo:bands`` common names (STAC 1.0: ``eo:bands`` on the asset or the Item;
STAC 1.1: ``bands`` with ``eo:common_name``), or by 1-based position in the Item's
band list; :func:`select_bands` says which asset (and which band of it) holds each.

Nothing here reads pixels; :mod:`pipeline.io.stac_raster` does.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pystac
from pystac.stac_io import DefaultStacIO

from pipeline.storage import objects
from pipeline.storage.location import S3Uri, parse_location
from segcore.errors import InputError

__all__ = ["BandRef", "StacIO", "band_names", "default_band_names", "is_stac_json", "item_bands",
           "load_items", "read_items", "select_bands"]

_PEEK_BYTES = 1 << 16
STAC_TYPES = ("Feature", "FeatureCollection", "Catalog", "Collection")


class StacIO(DefaultStacIO):
    """pystac's reader and writer, with ``s3://`` hrefs read through the storage layer."""

    def read_text(self, source: Any, *args: Any, **kwargs: Any) -> str:
        href = str(getattr(source, "href", source))
        if href.lower().startswith("s3://"):
            return objects.get_bytes(S3Uri.parse(href)).decode("utf-8")
        return super().read_text(source, *args, **kwargs)


def is_stac_json(path: str | os.PathLike[str] | S3Uri) -> bool:
    """Whether ``path`` looks like a STAC document: a ``.json`` name whose first
    64 KiB mention ``stac_version`` (read for local files only; an ``s3://`` object
    is judged by its name ending ``.json`` and not being a batch's own file)."""
    where = parse_location(path)
    if not where.name.lower().endswith(".json"):
        return False
    if isinstance(where, S3Uri):
        return where.name.lower() not in {"batch.json", "report.json", "segments.json"}
    try:
        with open(where, "rb") as fh:
            head = fh.read(_PEEK_BYTES)
    except OSError:
        return False
    return b'"stac_version"' in head


def _read_json(href: str) -> dict[str, Any]:
    try:
        text = StacIO().read_text(href)
    except (OSError, ValueError) as exc:
        raise InputError(href, f"cannot read the STAC file: {' '.join(str(exc).split())}") from exc
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(href, f"not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("type") not in STAC_TYPES:
        got = doc.get("type") if isinstance(doc, dict) else type(doc).__name__
        raise InputError(href, f"expected a STAC Item, ItemCollection, Catalog or Collection "
                         f"(\"type\": {', '.join(STAC_TYPES)}), got {got!r}")
    return doc


def _href(path: str | os.PathLike[str] | S3Uri) -> str:
    where = parse_location(path)
    return str(where) if isinstance(where, S3Uri) else str(Path(where).absolute())


def load_items(path: str | os.PathLike[str] | S3Uri) -> list[pystac.Item]:
    """Every Item of a STAC file, each with its self href (asset hrefs resolve from it).

    An Item file gives one Item, an ItemCollection its features, a static Catalog or
    Collection every Item below it (children followed). InputError (one line naming
    the file) when it is unreadable, not STAC, or holds no Item.
    """
    return read_items(path)[1]


def read_items(path: str | os.PathLike[str] | S3Uri) -> tuple[str, list[pystac.Item]]:
    """The document's ``type`` and its Items (see :func:`load_items`)."""
    href = _href(path)
    doc = _read_json(href)
    try:
        if doc["type"] == "Feature":
            items = [pystac.Item.from_dict(doc, href=href, migrate=True)]
            items[0].set_self_href(href)
        elif doc["type"] == "FeatureCollection":
            items = list(pystac.ItemCollection.from_dict(doc, preserve_dict=False).items)
            for item in items:  # inline Items resolve relative hrefs from the file
                if item.get_self_href() is None:
                    item.set_self_href(href)
        else:
            root = pystac.read_dict(doc, href=href, stac_io=StacIO())
            items = list(root.get_items(recursive=True))
    except InputError:
        raise
    except Exception as exc:
        raise InputError(href, f"not a valid STAC document: {type(exc).__name__}: "
                         f"{' '.join(str(exc).split())}") from exc
    if not items:
        raise InputError(href, "the STAC file holds no Item")
    return doc["type"], items


@dataclass(frozen=True)
class BandRef:
    """One selected band: where its pixels are and what it is called.

    Attributes
    ----------
    name : str
        The common name (or the band name when it has none).
    href : str
        Absolute asset href: a local path or an ``s3://`` URI.
    index : int
        1-based band of the asset file.
    """

    name: str
    href: str
    index: int


def _asset_bands(asset: pystac.Asset, item: pystac.Item) -> list[dict[str, Any]]:
    fields = asset.extra_fields
    bands = fields.get("eo:bands") or fields.get("bands")
    if bands is None and len([a for a in item.assets.values() if _is_raster(a)]) == 1:
        bands = item.properties.get("eo:bands")  # STAC 1.0: item-level bands, one asset
    return [b for b in bands or [] if isinstance(b, dict)]


def _is_raster(asset: pystac.Asset) -> bool:
    media = (asset.media_type or "").lower()
    return "tiff" in media or "jp2" in media or asset.href.lower().endswith((".tif", ".tiff"))


def _common(band: dict[str, Any]) -> str:
    return str(band.get("common_name") or band.get("eo:common_name") or band.get("name") or "")


def item_bands(item: pystac.Item) -> list[BandRef]:
    """Every band the Item's assets declare, in asset order."""
    found = []
    for asset in item.assets.values():
        href = asset.get_absolute_href() or asset.href
        for i, band in enumerate(_asset_bands(asset, item), start=1):
            if _common(band):
                found.append(BandRef(_common(band), href, i))
    return found


def band_names(item: pystac.Item) -> list[str]:
    """The names :func:`select_bands` accepts for ``item``, in asset order."""
    return [b.name for b in item_bands(item)]


def select_bands(item: pystac.Item, wanted: list[str] | list[int], *,
                 source: str) -> list[BandRef]:
    """The bands named (common names, any case) or numbered (1-based, in
    :func:`band_names` order) in ``wanted``.

    InputError naming ``source`` and listing the names that exist when one is missing.
    """
    bands = item_bands(item)
    names = [b.name for b in bands]
    if not bands:
        raise InputError(source, f"Item '{item.id}' declares no eo:bands on its assets; "
                         "segpipe selects STAC bands by eo:bands common name")
    chosen = []
    for want in wanted:
        if isinstance(want, int):
            if not 1 <= want <= len(bands):
                raise InputError(source, f"Item '{item.id}' has {len(bands)} bands "
                                 f"({', '.join(names)}); band {want} does not exist")
            chosen.append(bands[want - 1])
            continue
        match = [b for b in bands if b.name.lower() == str(want).lower()]
        if not match:
            raise InputError(source, f"Item '{item.id}' has no band named '{want}'; "
                             f"its bands are {', '.join(names)} (choose with --bands)")
        chosen.append(match[0])
    return chosen


def default_band_names(item: pystac.Item, channels: int) -> list[str]:
    """Bands fed to a model of ``channels`` inputs when none are chosen: red, green,
    blue for 3 channels when the Item has them, else the first ``channels`` bands."""
    names = band_names(item)
    lower = [n.lower() for n in names]
    if channels == 3 and all(n in lower for n in ("red", "green", "blue")):
        return ["red", "green", "blue"]
    return names[:channels]
