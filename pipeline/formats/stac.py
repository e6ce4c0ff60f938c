"""STAC scenes: Items whose bands are separate COGs in, COGs and a derived Item out.

* **Inputs**: a STAC Item file, an ItemCollection, or a static Catalog/Collection
  (``.json``, local or ``s3://``); every Item is one scene, its id made safe
  (:func:`~pipeline.formats.base.safe_id`) is the scene id. Bands are chosen by
  ``eo:bands`` common name (``--bands red,green,blue``, or the bundle's ``input.bands``
  given as names) or by 1-based position in the Item's band list; without either, a
  3-channel model gets red, green, blue (:mod:`pipeline.io.stac_items`).
* **Ingest** reads the selected bands window by window onto the grid of the finest
  band (coarser bands through a ``WarpedVRT``, nearest neighbour;
  :mod:`pipeline.io.stac_raster`) into ``scene.zarr/image`` as GeoTIFF ingest does. A
  missing or unreadable asset fails its Item with one line naming the href.
* **Labels, sizes, exports** are those of GeoTIFF scenes on that grid: ground areas in
  m², one COG per label array.
* **Outputs**: ``item.json`` per scene (:mod:`pipeline.io.stac_outputs`), written with
  the quicklooks (the scene's last format step), and ``catalog.json`` per run
  (:func:`write_run_catalog`, called by the batch).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import zarr

from pipeline.atomic import write_json_atomic
from pipeline.blockmap import BlockMap, serial
from pipeline.bundle import ModelBundle
from pipeline.formats.base import (
    Scene,
    file_identity,
    safe_id,
    scene_id_for,
    visible_files,
)
from pipeline.formats.geotiff import GeoTiffFormat, cog_file
from pipeline.io.geotiff import RasterInfo
from pipeline.io.stac_items import (
    default_band_names,
    is_stac_json,
    item_bands,
    load_items,
    read_items,
    select_bands,
)
from pipeline.io.stac_outputs import (
    CATALOG,
    ITEM,
    DerivedItem,
    derived_item,
    item_document,
    run_catalog,
)
from pipeline.io.stac_raster import (
    BandGrid,
    StacRasterReader,
    band_grid,
    largest_band_shape,
)
from pipeline.options import RunOptions
from pipeline.report.quicklook import (
    assemble,
    decimation,
    strided_window,
    write_quicklooks,
)
from pipeline.resolution import warn_resolution
from pipeline.storage.chunk_io import write_region
from pipeline.storage.location import parse_location
from pipeline.store import (
    IMAGE,
    INSTANCE,
    PANOPTIC,
    SEMANTIC,
    VALID,
    create_store,
    iter_blocks,
    open_store,
    semantic_dtype,
)
from segcore.errors import ConfigError, InputError

__all__ = ["STAC", "StacFormat", "StacScene", "StacSource", "write_run_catalog"]


@dataclass(frozen=True)
class StacSource:
    """An opened STAC file: its Items (no pixels read)."""

    path: str
    items: tuple[pystac.Item, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        """``(H, W)`` of the first Item's largest band file (headers only; ``()`` when
        none can be read): how large the scene is, for choosing an executor."""
        return largest_band_shape(item_bands(self.items[0]))

    def item(self, scene_id: str | None) -> pystac.Item:
        """The Item of ``scene_id`` (the only one when the file holds one)."""
        if len(self.items) == 1:
            return self.items[0]
        for item in self.items:
            if scene_id is None or safe_id(item.id) == scene_id:
                return item
        raise InputError(self.path, f"holds no Item with scene id '{scene_id}'")


@dataclass(frozen=True)
class StacScene:
    """An ingested STAC Item: the common grid, the bands and what ``item.json`` says."""

    info: RasterInfo
    bands: tuple[str, ...]
    derived: DerivedItem
    resampled: tuple[str, ...]
    num_classes: int
    seconds: float
    preview: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False,
                                                          compare=False)

    @property
    def shape(self) -> tuple[int, int]:
        return self.info.shape

    @property
    def model_shape(self) -> tuple[int, int]:
        return self.info.shape

    @property
    def model_group(self) -> None:
        return None


def _item_scene(item: pystac.Item, path: Any, kind: str) -> Scene:
    """The scene of one Item: its own file for an Item of a catalog (``kind`` the STAC
    file's type), else the file holding it (an Item file, an ItemCollection)."""
    own = item.get_self_href() if kind in ("Catalog", "Collection") else None
    where = path
    if own and own.lower().startswith("s3://"):
        where = parse_location(own)
    elif own and "://" not in own and Path(own).is_file():
        where = Path(own)
    return Scene(where, safe_id(item.id), STAC.name)


def copy_bands(bands: BandGrid, store_path: Path, *, image_chunk: int, attrs: dict,
               blocks: BlockMap = serial, preview_step: int | None = None
               ) -> tuple[np.ndarray, np.ndarray] | None:
    """Copy the bands into a new store at ``store_path`` on their common grid, one block
    pass (blocks of ``2 * image_chunk`` pixels a side; see the GeoTIFF ingest)."""
    grid = bands.grid
    group = create_store(store_path, bands=grid.count, shape=grid.shape, dtype=grid.dtype,
                         image_chunk=image_chunk, attrs=attrs)
    keys = list(iter_blocks(grid.shape, (image_chunk * 2, image_chunk * 2)))
    parts = blocks.map(_copy_block, keys, bands, group[IMAGE], group[VALID], preview_step,
                       label="ingest")
    if preview_step is None:
        return None
    h, w = (-(-n // preview_step) for n in grid.shape)
    return (assemble([p[0] for p in parts], (grid.count, h, w), np.dtype(grid.dtype)),
            assemble([p[1] for p in parts], (h, w), np.dtype(bool)))


def _copy_block(key: tuple[slice, slice], bands: BandGrid, image: zarr.Array,
                valid: zarr.Array, preview_step: int | None) -> tuple | None:
    rows, cols = key
    with StacRasterReader(bands) as reader:
        pixels, mask = reader.read_with_valid((rows, cols))
    write_region(image, (slice(None), rows, cols), pixels)
    write_region(valid, (rows, cols), mask)
    if preview_step is None:
        return None
    start = (rows.start, cols.start)
    return (strided_window(pixels, start, preview_step), strided_window(mask, start, preview_step))


def _wanted(item: pystac.Item, bundle: ModelBundle, options: RunOptions) -> list:
    chosen = options.bands or bundle.spec.input.bands
    return list(chosen) if chosen else default_band_names(item, bundle.spec.input.channels)


def _derived(item: pystac.Item, source: str, bundle: ModelBundle,
             names: tuple[str, ...], resampled: tuple[str, ...]) -> DerivedItem:
    spec = bundle.spec
    props = {k: item.properties.get(k) for k in ("datetime", "start_datetime", "end_datetime")
             if item.properties.get(k) is not None}
    if "datetime" not in props and item.datetime is not None:
        props["datetime"] = pystac.utils.datetime_to_str(item.datetime)
    return DerivedItem(
        item_id=item.id, source=item.get_self_href() or source, geometry=item.geometry,
        bbox=list(item.bbox) if item.bbox else None, properties=props, model=spec.name,
        bands=names, classes=tuple((c.id, c.name, tuple(c.color)) for c in spec.classes),
        resampled=resampled)


class StacFormat(GeoTiffFormat):
    """STAC input (Item, ItemCollection, static Catalog/Collection); see the module docstring."""

    name = "stac"
    noun = "a STAC item"
    description = "a STAC Item, ItemCollection or Catalog (.json)"
    suffixes = (".json",)
    ndim = 2

    def identify(self, path: Path) -> bool:
        return is_stac_json(path)

    def scenes(self, path: Path, root: Path | None = None) -> list[Scene]:
        """One scene per Item of the STAC file ``path``; a file that cannot be read is
        one scene named after the file, which fails with its reason when it runs."""
        try:
            kind, items = read_items(path)
        except InputError:
            return [Scene(path, scene_id_for(path, root, self.suffixes), self.name)]
        return [_item_scene(item, path, kind) for item in items]

    def scene(self, path: Path, root: Path | None = None) -> Scene:
        found = self.scenes(path, root)
        if len(found) != 1:
            raise ConfigError(f"{path}: holds {len(found)} STAC Items; each is a scene "
                              "(pass the file as an INPUT)")
        return found[0]

    def discover(self, root: Path) -> list[Scene]:
        found: dict[tuple[str, str], Scene] = {}
        for path in visible_files(root):
            if self.identify(path):
                for scene in self.scenes(path, root):
                    found.setdefault((str(scene.path), scene.scene_id), scene)
        return list(found.values())

    def claimed_files(self, scenes: list[Scene]) -> set[str]:
        """The asset files of the STAC scenes among ``scenes`` (as ``str`` of a path or
        URI): a directory scan does not take them for scenes of their own."""
        claimed: set[str] = set()
        for path in {s.path for s in scenes if s.kind == self.name}:
            try:
                items = load_items(path)
            except InputError:
                continue
            claimed.update(str(parse_location(a.get_absolute_href() or a.href))
                           for item in items for a in item.assets.values())
        return claimed

    def open(self, path: Path) -> StacSource:
        return StacSource(str(path), tuple(load_items(path)))

    def input_identity(self, scene: Scene) -> list:
        """The STAC file's identity, then a digest of ``(href, size, mtime_ns)`` of every
        local band file of the scene's Item (not only the selected ones), so a band COG
        replaced beside an unchanged Item computes the scene again; ``s3://`` and
        missing assets are left out (a missing one fails the Item when it runs)."""
        own = file_identity(scene.path)
        try:
            item = StacSource(str(scene.path), tuple(load_items(scene.path))).item(scene.scene_id)
        except InputError:
            return own
        files = []
        for href in sorted({b.href for b in item_bands(item)}):
            try:
                where = parse_location(href)
            except ConfigError:  # http(s):// and other schemes: not read here either
                continue
            if isinstance(where, Path) and where.is_file():
                st = where.stat()
                files.append([str(where.resolve()), st.st_size, st.st_mtime_ns])
        return [*own, hashlib.sha256(json.dumps(files).encode()).hexdigest()]

    def ingest(self, info: StacSource, store: Path, *, bundle: ModelBundle,
               options: RunOptions, attrs: dict[str, Any], copy: bool,
               blocks: BlockMap = serial) -> StacScene:
        start = time.perf_counter()
        scene_id = attrs.get("scene_id") if copy else _stored_scene_id(store, attrs)
        item = info.item(scene_id)
        wanted = _wanted(item, bundle, options)
        needed = bundle.spec.input.channels
        if len(wanted) != needed:
            raise InputError(info.path, f"the model needs {needed} input bands, --bands selects "
                             f"{len(wanted)} ({', '.join(map(str, wanted))})")
        bands = band_grid(select_bands(item, wanted, source=info.path), item_id=item.id)
        names = tuple(b.name for b in bands.bands)
        warn_resolution(bands.grid, bundle.spec)  # the model's declared ground sample distance
        preview = None
        if copy:
            stac = {"item": item.id, "source": item.get_self_href() or info.path,
                    "hrefs": [b.href for b in bands.bands]}
            preview = copy_bands(bands, store, image_chunk=options.image_chunk,
                                 attrs={**attrs, **bands.grid.to_attrs(), "bands": list(names),
                                        "stac": stac},
                                 blocks=blocks,
                                 preview_step=decimation(bands.grid.shape, options.quicklook_size))
        return StacScene(info=bands.grid, bands=names,
                         derived=_derived(item, info.path, bundle, names, bands.resampled),
                         resampled=bands.resampled, num_classes=bundle.spec.num_classes,
                         seconds=time.perf_counter() - start if copy else 0.0, preview=preview)

    def grid_fields(self, ingested: StacScene, options: RunOptions) -> dict[str, Any]:
        info = ingested.info
        return {"shape": list(info.shape), "bands": list(ingested.bands),
                "crs": info.crs_wkt, "transform": list(info.transform)}

    def quicklooks(self, group: zarr.Group, semantic: zarr.Array, ingested: StacScene, *,
                   colors: list[tuple[int, int, int]], out_dir: Path,
                   options: RunOptions, blocks: BlockMap = serial) -> dict[str, str]:
        """The quicklooks, then ``item.json`` describing every output of the scene.

        The label COGs are named by the arrays the run exports
        (:func:`~pipeline.formats.geotiff.cog_file` of each label array of the store),
        not looked for on disk: the export writes them while
        this runs (``stage_export``), and a scene whose export fails is not published.
        """
        images = write_quicklooks(group, semantic, colors, out_dir, options.quicklook_size,
                                  blocks=blocks, preview=ingested.preview)
        _, semantic_nodata = semantic_dtype(ingested.num_classes)
        nodata = {SEMANTIC: semantic_nodata, INSTANCE: 0, PANOPTIC: 0}
        labels = {name: (cog_file(name), str(group[name].dtype), nodata[name])
                  for name in (SEMANTIC, INSTANCE, PANOPTIC) if name in group}
        item = derived_item(ingested.derived, ingested.info, labels=labels, quicklooks=images)
        write_json_atomic(Path(out_dir) / ITEM, item_document(item))
        return images


def _stored_scene_id(store: Path, attrs: dict[str, Any]) -> str | None:
    """The scene id a resumed or re-measured scene was ingested under."""
    if attrs.get("scene_id"):
        return attrs["scene_id"]
    try:
        return open_store(store).attrs.get("scene_id")
    except Exception:  # noqa: BLE001 - no store: the single Item of the file
        return None


def write_run_catalog(out_dir: Any, rows: list[Any], *, model: str) -> bool:
    """Write ``catalog.json`` in ``out_dir`` linking the ``item.json`` of every finished
    STAC scene of the batch (``rows``: :class:`~pipeline.report.batch.BatchRow`); nothing
    when the batch has none. Returns whether it wrote one."""
    ids = [r.scene_id for r in rows if r.kind == STAC.name and r.ok]
    if not ids:
        return False
    write_json_atomic(out_dir / CATALOG, run_catalog(ids, model=model))
    return True


STAC = StacFormat()
