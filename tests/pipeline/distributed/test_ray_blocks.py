"""RayBlocks runs block passes as Ray tasks: same results as the serial loop, in order,
with errors raised inside the tasks arriving as themselves."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from pipeline.blockmap import serial
from pipeline.distributed import RayBlocks, default_blocks, nodes_seen
from pipeline.store import iter_blocks
from segcore.errors import InputError


def _square_plus(item: int, offset: int) -> int:
    return item * item + offset


def _fail_on(item: int, bad: int) -> int:
    if item == bad:
        raise InputError("scene.tif", f"cannot read block {item}")
    return item


def _fill(key: tuple[slice, ...], array: zarr.Array, value: int) -> int:
    array[key] = value + key[0].start
    return int(np.prod([s.stop - s.start for s in key]))


@pytest.fixture(scope="module")
def blocks(ray_session):
    return RayBlocks()


@pytest.mark.parametrize("count", [0, 1, 7, 50])
def test_results_equal_the_serial_loop_in_order(blocks, count):
    items = list(range(count))
    assert blocks.map(_square_plus, items, 3, label="square") == \
        serial.map(_square_plus, items, 3, label="square")


def test_tasks_write_their_own_chunks_of_a_zarr_array(blocks, tmp_path):
    array = zarr.create_array(str(tmp_path / "a.zarr"), shape=(10, 7), chunks=(3, 4),
                              dtype="int32", fill_value=-1)
    keys = list(iter_blocks(array.shape, array.chunks))
    sizes = blocks.map(_fill, keys, array, 100, label="fill")
    assert sum(sizes) == 70
    expected = np.repeat(100 + np.arange(0, 10, 3), [3, 3, 3, 1])[:, None]
    np.testing.assert_array_equal(array[:], np.broadcast_to(expected, (10, 7)))
    assert "fill" in nodes_seen() and len(blocks.nodes["fill"]) == 1  # one local node


def test_an_error_inside_a_task_arrives_as_itself(blocks):
    with pytest.raises(InputError) as info:
        blocks.map(_fail_on, list(range(20)), 13, label="fail")
    assert str(info.value) == "scene.tif: cannot read block 13"
    assert info.value.path == "scene.tif"


def test_default_blocks_is_ray_when_connected(ray_session):
    assert isinstance(default_blocks(), RayBlocks)
