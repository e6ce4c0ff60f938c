"""Semantic-only models: the class totals and stuff segments the tile workers count equal
the block passes over the stored labels, on Ray and in-process, fresh and resumed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.formats import Scene, format_of
from pipeline.inference.local_pool import LocalPool
from pipeline.options import RunOptions
from pipeline.run import Workspace, run_scene
from pipeline.store import SEMANTIC, VALID, open_store, semantic_dtype
from pipeline.streaming.panoptic import fusion_stats
from pipeline.streaming.tile_stats import TileStatsSpec, count_core, merge_tiles
from pipeline.streaming.summary import ClassTotals, SizeUnit
from segcore.geodesy import CellAreas
from segcore.panoptic.fusion import FusionStats, decide, segments_table


def _scene(path) -> Scene:
    return Scene(path, path.name.removesuffix(".tif"), "geotiff")


@pytest.fixture(scope="module")
def scene(scene_factory):
    # Web Mercator at 60 N: pixel areas differ from pixel to pixel; nodata at the edges
    return scene_factory("tile-stats", size=(300, 420), seed=5, crs="EPSG:3857",
                         nodata=0, nodata_fraction=0.1)


def _by_passes(ws, bundle) -> tuple[dict, list]:
    """Totals and segments recomputed from the stored labels by the block passes."""
    group = open_store(ws.final / "scene.zarr")
    fmt, spec = format_of(ws.scene), bundle.spec
    info = fmt.open(ws.scene.path)
    ingested = type("I", (), {"info": info})()
    totals = fmt.summarise(group[SEMANTIC], ingested, spec.num_classes)
    _, nodata = semantic_dtype(spec.num_classes)
    stats = fusion_stats(group[SEMANTIC], None, group[VALID], nodata=nodata,
                         block=group[SEMANTIC].chunks)
    plan = decide(stats, spec.class_rows, min_stuff_area=spec.min_stuff_area)
    return totals.to_dict(spec.class_names), segments_table(plan)


@pytest.mark.parametrize("where", ["ray", "local"])
def test_counted_tiles_equal_the_passes(scene, tiny_bundle, tiny_pool, tmp_path, where,
                                        monkeypatch):
    assert "instance" not in tiny_bundle.spec.heads
    pool = tiny_pool if where == "ray" else LocalPool(str(tiny_bundle.path), cores=2)

    def no_pass(*args, **kwargs):
        raise AssertionError("a pass read the labels back")

    try:
        ws = Workspace(_scene(scene[0]), tmp_path)
        with monkeypatch.context() as m:  # the passes must not run
            m.setattr(type(format_of(ws.scene)), "summarise", no_pass)
            m.setattr("pipeline.streaming.panoptic.fusion_stats", no_pass)
            report = run_scene(ws, tiny_bundle, RunOptions(tile=128), pool).report.to_json()
    finally:
        if where == "local":
            pool.shutdown()
    classes, segments = _by_passes(ws, tiny_bundle)
    assert report["summary"]["classes"] == classes  # bit-identical floats
    assert json.loads((ws.final / "segments.json").read_text())["segments_info"] == segments
    assert sum(c["pixels"] for c in classes.values()) > 0
    assert report["summary"]["nodata_pixels"] > 0


def test_resumed_run_counts_by_passes_and_agrees(scene, tiny_bundle, tiny_pool, tmp_path):
    ws = Workspace(_scene(scene[0]), tmp_path)
    first = run_scene(ws, tiny_bundle, RunOptions(tile=128), tiny_pool).report.to_json()
    ws.final.rename(ws.partial)  # as a run killed before publishing leaves it
    (ws.partial / "report.json").unlink()
    again = run_scene(ws, tiny_bundle, RunOptions(tile=128), tiny_pool).report.to_json()
    assert again["tiles"]["reused"] == again["tiles"]["total"]
    assert again["summary"] == first["summary"]


def test_merge_order_does_not_change_totals():
    rng = np.random.default_rng(3)
    spec = TileStatsSpec(4, SizeUnit.AREA_M2, lambda key: rng.random((8, 8)) + 1.0, 255)
    parts = []
    for r in range(3):
        for c in range(3):
            key = (slice(8 * r, 8 * r + 8), slice(8 * c, 8 * c + 8))
            labels = rng.integers(0, 5, (8, 8)).astype(np.uint8)
            labels[labels == 4] = 255
            parts.append((tuple(s.start for s in key), *count_core(spec, labels, labels != 255,
                                                                  key)))
    forward = merge_tiles(parts, 4, SizeUnit.AREA_M2, 2, 255)
    backward = merge_tiles(parts[::-1], 4, SizeUnit.AREA_M2, 2, 255)
    assert forward[0].size.tobytes() == backward[0].size.tobytes()
    assert forward[0].pixels.tolist() == backward[0].pixels.tolist()
    assert forward[1].counts.tolist() == backward[1].counts.tolist()


def _reference(spec: TileStatsSpec, labels: np.ndarray, valid: np.ndarray, key, sizes):
    """Counts by the general paths: one flat bincount, and FusionStats.add pixel by pixel."""
    k = spec.num_classes
    lab = np.minimum(labels, k).astype(np.intp).ravel()
    pixels = np.bincount(lab, minlength=k + 1)
    size = np.bincount(lab, weights=np.broadcast_to(sizes, labels.shape).ravel(),
                       minlength=k + 1)[:k]
    stuff = FusionStats(ndim=2, nodata=spec.nodata)
    stuff.add(labels, np.zeros(labels.shape, np.uint8), valid,
              offset=tuple(s.start for s in key))
    return pixels, size, stuff


def _cells(rng, shape: tuple[int, int], step: int = 12) -> CellAreas:
    """Sizes linear per cell on uneven cells (``step`` px, then the rest), as projected
    grids get."""
    rn, cn = (np.r_[np.arange(0, n, step), n] for n in shape)
    terms = (len(rn) - 1, len(cn) - 1)
    return CellAreas(rn, cn, rng.random(terms) * 50 + 100, rng.random(terms) * 0.1,
                     rng.random(terms) * -0.1)


@pytest.mark.parametrize("dtype, nodata", [(np.uint8, 255), (np.uint16, 65535)])
@pytest.mark.parametrize("sizes", ["pixel", "row", "one", "cells"])
@pytest.mark.parametrize("case", ["dense", "few", "stray", "invalid", "empty"])
@pytest.mark.parametrize("k", [6, 12])  # class planes, or a bincount of (row, cell, class)
def test_plane_counts_equal_the_general_paths(dtype, nodata, sizes, case, k):
    """The all-valid 2-D fast path (one table per row and one per column) counts what the
    general paths count; a stray label above the classes or an invalid pixel takes the
    general path."""
    rng = np.random.default_rng(hash((sizes, case, k)) % 2**32)
    shape, key = (37, 53), (slice(100, 137), slice(40, 93))
    labels = rng.integers(0, k, shape).astype(dtype)
    if case == "few":  # two classes in opposite corners, nodata elsewhere
        labels[:] = nodata
        labels[3:9, 5:11], labels[30:, 40:] = 2, 5
    elif case == "stray":
        labels[4, 7] = k + 3  # neither a class nor nodata
    elif case == "empty":
        labels[:] = nodata
    valid = np.ones(shape, bool)
    if case == "invalid":
        valid[:, :4] = False
        labels[:, :4] = nodata
    per = {"pixel": rng.random(shape) * 50 + 100, "row": rng.random((shape[0], 1)) * 50 + 100,
           "one": np.float64(100.0), "cells": _cells(rng, shape)}[sizes]
    spec = TileStatsSpec(k, SizeUnit.AREA_M2, lambda _: per, nodata)
    totals, stuff = count_core(spec, labels, valid, key)
    pixels, size, expected = _reference(spec, labels, valid, key, per)
    assert totals.pixels.tolist() == pixels[:k].tolist()
    assert totals.nodata_pixels == pixels[k]
    np.testing.assert_allclose(totals.size, size, rtol=1e-12)
    for name in ("keys", "counts", "lo", "hi"):
        assert getattr(stuff, name).tolist() == getattr(expected, name).tolist(), name


def test_tile_totals_are_the_block_totals_bit_for_bit():
    """count_core and the block pass (ClassTotals.add) sum sizes the same way."""
    rng = np.random.default_rng(11)
    labels = rng.integers(0, 4, (64, 64)).astype(np.uint8)
    per = rng.random((64, 64)) * 1e3
    spec = TileStatsSpec(4, SizeUnit.AREA_M2, lambda _: per, 255)
    totals, _ = count_core(spec, labels, np.ones(labels.shape, bool),
                           (slice(0, 64), slice(0, 64)))
    block = ClassTotals(4)
    block.add(labels, per)
    assert totals.size.tobytes() == block.size.tobytes()


@pytest.mark.parametrize("k, step", [(4, 12), (12, 12), (4, 1)])  # planes, bincount, per pixel
def test_tile_totals_are_the_block_totals_bit_for_bit_on_cells(k, step):
    rng = np.random.default_rng(12)
    labels = rng.integers(0, k, (64, 64)).astype(np.uint8)
    cells = _cells(rng, labels.shape, step)
    spec = TileStatsSpec(k, SizeUnit.AREA_M2, lambda _: cells, 255)
    totals, _ = count_core(spec, labels, np.ones(labels.shape, bool),
                           (slice(0, 64), slice(0, 64)))
    block = ClassTotals(k)
    block.add(labels, cells)
    assert totals.size.tobytes() == block.size.tobytes()
    dense = ClassTotals(k)
    dense.add(labels, np.asarray(cells))  # an area per pixel: the same up to rounding
    np.testing.assert_allclose(totals.size, dense.size, rtol=1e-12)
    assert totals.pixels.tolist() == dense.pixels.tolist()
