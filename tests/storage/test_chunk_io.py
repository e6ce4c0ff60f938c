"""Direct whole-chunk I/O (pipeline.storage.chunk_io) against zarr's own reads and writes.

Every direct write must leave exactly the bytes zarr writes, and every direct read
must return what zarr returns, for aligned and unaligned regions, edge chunks, empty
chunks and multi-byte dtypes; what the direct path cannot reproduce falls back to zarr.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zarr.codecs import BloscCodec, ZstdCodec

from pipeline.storage.chunk_io import _direct, read_region, write_region
from pipeline.store import create_store, open_store

DTYPES = ["uint8", "uint16", "uint32", "bool", "float32", "int16"]


def _array(folder: Path, name: str, shape, chunks, dtype, fill, **kw) -> zarr.Array:
    return zarr.create_array(str(folder / name), shape=shape, chunks=chunks, dtype=dtype,
                             fill_value=fill, compressors=kw.pop("compressors",
                                                                  (ZstdCodec(level=3),)), **kw)


def _chunk_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "zarr.json"}


def _values(rng: np.random.Generator, shape, dtype: str) -> np.ndarray:
    if dtype == "bool":
        return rng.random(shape) < 0.7
    if dtype == "float32":
        return rng.normal(size=shape).astype(np.float32)
    info = np.iinfo(dtype)
    return rng.integers(info.min, min(info.max, 2**20), size=shape, endpoint=True).astype(dtype)


@pytest.mark.parametrize("level", [3, -1], ids=["zstd3", "zstd-fast"])  # labels, image
@pytest.mark.parametrize("dtype", DTYPES)
def test_direct_writes_leave_the_bytes_zarr_writes(tmp_path, dtype, level):
    """The whole array written in aligned blocks, edge chunks included (7 x 10 chunks of
    4 x 3 over 26 x 29): same files, same bytes, same values."""
    rng = np.random.default_rng(3)
    data = _values(rng, (26, 29), dtype)
    data[:8, :6] = np.zeros((), dtype)  # two whole chunks at the fill value: not stored
    codec = (ZstdCodec(level=level),)
    ours = _array(tmp_path, "ours", (26, 29), (4, 3), dtype, 0, compressors=codec)
    theirs = _array(tmp_path, "theirs", (26, 29), (4, 3), dtype, 0, compressors=codec)
    assert _direct(ours) is not None
    for r in range(0, 26, 8):
        for c in range(0, 29, 6):
            write_region(ours, (slice(r, r + 8), slice(c, c + 6)), data[r:r + 8, c:c + 6])
    theirs[...] = data
    assert _chunk_files(tmp_path / "ours") == _chunk_files(tmp_path / "theirs")
    assert not (tmp_path / "ours" / "c" / "0" / "0").exists()
    np.testing.assert_array_equal(ours[...], data)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dtype=st.sampled_from(DTYPES), r0=st.integers(0, 25), c0=st.integers(0, 28),
       h=st.integers(1, 26), w=st.integers(1, 29), seed=st.integers(0, 2**16))
def test_any_region_reads_as_zarr_reads_it(tmp_path_factory, dtype, r0, c0, h, w, seed):
    """Unaligned windows over stored, missing (fill) and edge chunks, 2-D and with a
    leading band axis."""
    folder = tmp_path_factory.mktemp("read")
    rng = np.random.default_rng(seed)
    fill = np.ones((), dtype)[()]
    a = _array(folder, "a", (2, 26, 29), (2, 4, 3), dtype, fill)
    data = _values(rng, (2, 26, 29), dtype)
    a[:, :, 9:] = data[:, :, 9:]  # columns 0-8 stay at the fill value (no chunk files)
    key = (slice(None), slice(r0, min(26, r0 + h)), slice(c0, min(29, c0 + w)))
    np.testing.assert_array_equal(read_region(a, key), a[key])
    assert read_region(a, key).dtype == a.dtype


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(r0=st.integers(0, 25), c0=st.integers(0, 28), h=st.integers(1, 26), w=st.integers(1, 29),
       seed=st.integers(0, 2**16))
def test_any_region_writes_as_zarr_writes_it(tmp_path_factory, r0, c0, h, w, seed):
    """A region cutting through chunks goes through zarr (merged with the chunk's other
    pixels); either way the array ends up as zarr leaves it."""
    folder = tmp_path_factory.mktemp("write")
    rng = np.random.default_rng(seed)
    before = _values(rng, (26, 29), "uint16")
    ours = _array(folder, "ours", (26, 29), (4, 3), "uint16", 7)
    theirs = _array(folder, "theirs", (26, 29), (4, 3), "uint16", 7)
    ours[...] = before
    theirs[...] = before
    key = (slice(r0, min(26, r0 + h)), slice(c0, min(29, c0 + w)))
    block = _values(rng, (key[0].stop - key[0].start, key[1].stop - key[1].start), "uint16")
    write_region(ours, key, block)
    theirs[key] = block
    np.testing.assert_array_equal(ours[...], theirs[...])
    assert _chunk_files(folder / "ours") == _chunk_files(folder / "theirs")


def test_an_empty_chunk_replaces_a_stored_one_by_its_absence(tmp_path):
    a = _array(tmp_path, "a", (8, 8), (4, 4), "uint8", 255)
    write_region(a, (slice(0, 4), slice(0, 4)), np.zeros((4, 4), np.uint8))
    chunk = tmp_path / "a" / "c" / "0" / "0"
    assert chunk.is_file()
    write_region(a, (slice(0, 4), slice(0, 4)), np.full((4, 4), 255, np.uint8))
    assert not chunk.exists()
    assert (read_region(a, (slice(0, 8), slice(0, 8))) == 255).all()


@pytest.mark.parametrize("kind", ["blosc", "no compressor", "sharded", "nan fill"])
def test_what_the_direct_path_cannot_reproduce_goes_through_zarr(tmp_path, kind):
    kw: dict = {}
    dtype, fill = "uint8", 0
    if kind == "blosc":
        kw["compressors"] = (BloscCodec(),)
    elif kind == "no compressor":
        kw["compressors"] = None
    elif kind == "sharded":
        kw["shards"] = (8, 8)
    else:
        dtype, fill = "float32", float("nan")
    a = _array(tmp_path, "a", (16, 16), (4, 4), dtype, fill, **kw)
    assert _direct(a) is None
    data = np.arange(64, dtype=dtype).reshape(8, 8)
    write_region(a, (slice(0, 8), slice(4, 12)), data)
    np.testing.assert_array_equal(read_region(a, (slice(0, 8), slice(4, 12))), data)
    np.testing.assert_array_equal(a[0:8, 4:12], data)


def test_a_scene_store_takes_the_direct_path_and_reopens_unchanged(tmp_path):
    """The arrays segpipe creates (image, valid) qualify; what is written directly
    reads back through a freshly opened group."""
    group = create_store(tmp_path / "scene.zarr", bands=3, shape=(1000, 700), dtype="uint16",
                         image_chunk=512, attrs={})
    assert _direct(group["image"]) is not None and _direct(group["valid"]) is not None
    rng = np.random.default_rng(0)
    image = rng.integers(0, 4000, (3, 1000, 700)).astype(np.uint16)
    write_region(group["image"], (slice(None), slice(0, 1000), slice(0, 700)), image)
    write_region(group["valid"], (slice(512, 1000), slice(512, 700)),
                 np.zeros((488, 188), bool))
    write_region(group["valid"], (slice(0, 512), slice(0, 512)), np.ones((512, 512), bool))
    again = open_store(tmp_path / "scene.zarr")
    np.testing.assert_array_equal(again["image"][...], image)
    assert not again["valid"][512:, 512:].any() and again["valid"][:512].all()
    # the mask's fill is "valid": an all-valid chunk is not stored at all
    stored = sorted(p.relative_to(tmp_path / "scene.zarr" / "valid").as_posix()
                    for p in (tmp_path / "scene.zarr" / "valid" / "c").rglob("*") if p.is_file())
    assert stored == ["c/1/1"]


def test_a_read_only_array_is_not_written_behind_zarrs_back(tmp_path):
    a = _array(tmp_path, "a", (8, 8), (4, 4), "uint8", 0)
    a[...] = 1
    ro = zarr.open_array(str(tmp_path / "a"), mode="r")
    with pytest.raises(Exception, match="read.only|read-only"):
        write_region(ro, (slice(0, 4), slice(0, 4)), np.full((4, 4), 9, np.uint8))
    assert (a[...] == 1).all()


def test_an_object_store_array_goes_through_zarr(bucket):
    """On object storage (the tests' S3 server) zarr does the work."""
    group = create_store(f"s3://{bucket}/scene.zarr", bands=1, shape=(8, 8), dtype="uint8",
                         image_chunk=4, attrs={})
    assert _direct(group["image"]) is None
    write_region(group["image"], (slice(None), slice(0, 4), slice(0, 4)),
                 np.full((1, 4, 4), 9, np.uint8))
    assert (read_region(group["image"], (slice(None), slice(0, 8), slice(0, 8)))[:, :4, :4]
            == 9).all()


@pytest.mark.parametrize(("dtype", "fill", "chunk"), [
    ("uint8", 255, [[255, 255], [255, 3]]),   # starts with the fill value, is not all fill
    ("uint8", 255, [[255, 255], [255, 255]]),  # all fill: not stored
    ("bool", True, [[True, True], [True, False]]),
    ("bool", True, [[True, True], [True, True]]),
    ("bool", False, [[False, False], [False, True]]),
    ("uint16", 7, [[8, 7], [7, 7]]),
])
def test_a_chunk_is_stored_unless_all_fill(tmp_path, dtype, fill, chunk):
    """The same chunk files as zarr's own write, for chunks that start with the fill value."""
    data = np.array(chunk, dtype=dtype)
    ours = _array(tmp_path, "ours", (2, 2), (2, 2), dtype, fill)
    theirs = _array(tmp_path, "theirs", (2, 2), (2, 2), dtype, fill)
    write_region(ours, (slice(0, 2), slice(0, 2)), data)
    theirs[...] = data
    assert _chunk_files(tmp_path / "ours") == _chunk_files(tmp_path / "theirs")
    assert (tmp_path / "ours" / "c" / "0" / "0").exists() == bool((data != fill).any())
