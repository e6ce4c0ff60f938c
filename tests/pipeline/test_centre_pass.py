"""The centre pass over a real Zarr store: ids 1..M without gaps, counts, any block map."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from pipeline.blockmap import ThreadBlocks, serial
from pipeline.streaming.centres import CentreCollector, assign_instances
from pipeline.streaming.tile_outcome import TileOutcome

BUILDING = 4


def _store(tmp_path, chunk: int = 16):
    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="w", zarr_format=3)
    sem = np.zeros((40, 40), np.uint8)
    sem[2:30, 2:30] = BUILDING  # one object across four 16-px chunks
    sem[34:38, 34:38] = BUILDING  # a second one in the last chunk
    sem[0, 39] = 255  # nodata never gets an id
    yy, xx = np.mgrid[:40, :40].astype(np.float32)
    near_big = (yy < 32) & (xx < 32)
    offsets = np.where(near_big, np.stack([15 - yy, 15 - xx]), np.stack([36 - yy, 36 - xx]))
    offsets = np.where(sem == BUILDING, offsets, 0).astype(np.float32)
    group.create_array("semantic", data=sem, chunks=(chunk, chunk))
    group.create_array("offsets", data=offsets, chunks=(2, chunk, chunk))
    group.create_array("instance", shape=sem.shape, dtype="uint32", chunks=(chunk, chunk),
                       fill_value=0)
    return group


@pytest.mark.parametrize("blocks", [serial, ThreadBlocks(threads=2)], ids=["serial", "threads"])
def test_ids_are_the_ranks_of_used_centres_without_gaps(tmp_path, blocks):
    group = _store(tmp_path)
    collector = CentreCollector(2)
    # tiles report in any order; the unused centre (20, 5) leaves a gap to close
    collector.add([TileOutcome((1, 1), 0.0, "w", centres=np.array([[36, 36]]),
                               scores=np.array([0.9], np.float32)),
                   TileOutcome((0, 0), 0.0, "w", centres=np.array([[15, 15]]),
                               scores=np.array([0.8], np.float32)),
                   TileOutcome((1, 0), 0.0, "w", centres=np.array([[20, 5]]),
                               scores=np.array([0.2], np.float32)),
                   TileOutcome((0, 1), 0.0, "w")])  # a semantic-only outcome: no centres
    centres = collector.centres()
    assert centres.tolist() == [[15, 15], [20, 5], [36, 36]]
    counts = assign_instances(group["semantic"], group["offsets"], group["instance"],
                              centres, [BUILDING], blocks=blocks)
    ids = group["instance"][:]
    assert set(np.unique(ids).tolist()) == {0, 1, 2}
    assert (ids[2:30, 2:30] == 1).all() and (ids[34:38, 34:38] == 2).all()
    assert (ids[group["semantic"][:] != BUILDING] == 0).all()
    assert (counts.instances, counts.tile_pieces, counts.across_tiles) == (2, 5, 1)


def test_top_k_keeps_the_scene_s_highest_centres(tmp_path):
    group = _store(tmp_path)
    collector = CentreCollector(2)
    collector.add([TileOutcome((0, 0), 0.0, "w", centres=np.array([[15, 15], [36, 36]]),
                               scores=np.array([0.3, 0.9], np.float32))])
    centres = collector.centres(top_k=1)
    assert centres.tolist() == [[36, 36]]
    counts = assign_instances(group["semantic"], group["offsets"], group["instance"],
                              centres, [BUILDING])
    assert counts.instances == 1 and set(np.unique(group["instance"][:])) == {0, 1}


def test_a_scene_without_centres_has_no_instances(tmp_path):
    group = _store(tmp_path)
    counts = assign_instances(group["semantic"], group["offsets"], group["instance"],
                              CentreCollector(2).centres(), [BUILDING])
    assert counts.instances == 0 and not group["instance"][:].any()


@pytest.mark.parametrize("blocks", [serial, ThreadBlocks(threads=2)], ids=["serial", "threads"])
@pytest.mark.parametrize("unused", [False, True], ids=["all-used", "renumbered"])
def test_the_pass_gathers_the_fusion_statistics_of_what_it_wrote(tmp_path, blocks, unused):
    """With ``valid``, the centre pass returns what the fusion's own pass 1 gives over the
    final arrays (ids renumbered when a centre received no pixel)."""
    from pipeline.streaming.panoptic import fusion_stats

    group = _store(tmp_path)
    valid = np.ones((40, 40), bool)
    valid[20:24, :] = False  # nodata rows through the big object
    valid[0, 39] = False
    group.create_array("valid", data=valid, chunks=(16, 16))
    centres = np.array([[15, 15], [20, 5], [36, 36]] if unused else [[15, 15], [36, 36]])
    counts = assign_instances(group["semantic"], group["offsets"], group["instance"], centres,
                              [BUILDING], blocks=blocks, valid=group["valid"], nodata=255)
    ids = group["instance"][:]
    assert set(np.unique(ids).tolist()) == {0, 1, 2}  # 1..M without gaps either way
    expected = fusion_stats(group["semantic"], group["instance"], group["valid"], nodata=255,
                            block=(16, 16))
    got = counts.stats
    assert got is not None and len(expected.keys) >= 3
    for name in ("keys", "counts", "lo", "hi"):
        np.testing.assert_array_equal(getattr(got, name), getattr(expected, name))
    without = assign_instances(group["semantic"], group["offsets"], group["instance"], centres,
                               [BUILDING], blocks=blocks)
    assert without.stats is None
