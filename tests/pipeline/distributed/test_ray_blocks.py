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


def _fail_first_or_finish_late(item: int, folder: str) -> int:
    import time
    from pathlib import Path

    if item == 0:
        raise InputError("scene.tif", "cannot read block 0")
    time.sleep(0.5)
    (Path(folder) / f"{item}.done").touch()
    return item


def test_a_failed_pass_leaves_no_task_running(ray_session, tmp_path):
    """The pass raises only once its other in-flight tasks have finished (none is left
    writing into a store about to be discarded), and never cancels them: a cancel that
    races with a task's completion aborts the driver in Ray 2.60."""
    for _ in range(3):
        for old in tmp_path.glob("*.done"):
            old.unlink()
        with pytest.raises(InputError, match="cannot read block 0"):
            RayBlocks(in_flight=2).map(_fail_first_or_finish_late, [0, 1], str(tmp_path),
                                       label="fail-late")
        assert (tmp_path / "1.done").exists()


def test_default_blocks_is_ray_when_connected(ray_session):
    assert isinstance(default_blocks(), RayBlocks)


def _pid(item: int) -> int:
    import os

    return os.getpid()


def test_a_local_runtime_ingests_in_this_process_and_runs_the_rest_as_tasks(ray_session):
    import os

    from pipeline.blockmap import ThreadBlocks
    from pipeline.distributed.ray_blocks import LOCAL_PASSES

    assert LOCAL_PASSES == {"ingest", "quicklook"}
    blocks = RayBlocks(local=ThreadBlocks(2))
    assert set(blocks.map(_pid, range(12), label="ingest")) == {os.getpid()}
    assert set(blocks.map(_pid, range(12), label="quicklook")) == {os.getpid()}
    assert os.getpid() not in set(blocks.map(_pid, range(12), label="fusion"))  # Ray workers
    assert len(blocks.nodes["ingest"]) == 1 and blocks.nodes["ingest"] == blocks.nodes["fusion"]
    with pytest.raises(InputError, match="cannot read block 5"):  # errors as themselves too
        blocks.map(_fail_on, list(range(12)), 5, label="ingest")


def test_block_pass_modules_do_not_import_torch():
    """A block-pass worker imports these modules (``warm_up``); torch would cost it about
    2.5 s of CPU and 300 MB, beside the model actors loading torch on the same cores."""
    import subprocess
    import sys

    code = ("import importlib, sys\n"
            "from pipeline.distributed.ray_blocks import _PASS_MODULES\n"
            "import pipeline.run.plan\n"
            "for name in _PASS_MODULES: importlib.import_module(name)\n"
            "from segcore.receptive_field import halo_for\n"
            "assert halo_for(7, 1) == 3\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch')[:3])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]", f"torch imported: {out}"
