"""An elastic pool on a changing cluster: nodes join and leave, actors die, mid-run.

scripts/elastic.py runs one pool over four stores on a ``ray.cluster_utils.Cluster``
(head with 2 CPUs): a reference on the head alone, then runs during which a 1-CPU node
joins, that node leaves, and an actor is killed (tiles slowed by
``SEGPIPE_FAULT_DELAY_S`` so each change lands while batches are in flight).
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.cluster import run_script


@pytest.fixture(scope="module")
def elastic(tmp_path_factory):
    work = tmp_path_factory.mktemp("elastic")
    return run_script("elastic.py", work, timeout=240)


def _semantic(path: str) -> np.ndarray:
    from pipeline.store import SEMANTIC, open_store

    return open_store(path)[SEMANTIC][:]


@pytest.mark.timeout(300)
def test_a_node_added_mid_run_receives_tiles(elastic):
    join, head, new = elastic["join"], elastic["head"], elastic["joined_node"]
    assert elastic["start_actors"] == 2  # as many as fit on the 2-CPU head
    assert join["tiles"] == join["distinct"] == 48
    assert new != head and join["nodes"][0] == head  # the first tile ran before it joined
    assert new in join["nodes"], "no tile ran on the node that joined"
    assert join["grown"] == 1 and join["actor_nodes"] == sorted([head, head, new])
    assert (_semantic(join["store"]) != 255).all()


@pytest.mark.timeout(300)
def test_a_node_removed_mid_run_loses_no_tile_and_matches_one_node(elastic):
    leave, reference = elastic["leave"], elastic["reference"]
    assert set(reference["nodes"]) == {elastic["head"]}
    assert leave["tiles"] == leave["distinct"] == 24  # every tile once
    assert elastic["joined_node"] in leave["nodes"]  # the node worked, then left
    assert leave["requeued"] >= 1 and leave["dropped_with_node"] == 1
    assert leave["replaced"] == 0  # its capacity went with it
    assert leave["actor_nodes"] == [elastic["head"]] * 2
    got, want = _semantic(leave["store"]), _semantic(reference["store"])
    assert (want != 255).all() and got.tobytes() == want.tobytes()


@pytest.mark.timeout(300)
def test_a_killed_actor_is_replaced_and_the_run_completes(elastic):
    kill = elastic["kill"]
    assert kill["tiles"] == kill["distinct"] == 24
    assert kill["requeued"] >= 1 and kill["replaced"] == 1
    assert elastic["killed_actor"] not in elastic["actor_ids_after"]
    assert len(elastic["actor_ids_after"]) == 2  # the replacement keeps the pool's size
    assert kill["actor_nodes"] == [elastic["head"]] * 2
    assert _semantic(kill["store"]).tobytes() == _semantic(elastic["reference"]["store"]).tobytes()
