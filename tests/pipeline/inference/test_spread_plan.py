"""The pool's own spread of actors over nodes (Ray's SPREAD is best effort only)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pipeline.inference.placement import spread_over, workers_that_fit

node_sizes = st.dictionaries(st.sampled_from("abcdef"),
                             st.integers(min_value=0, max_value=6), min_size=1)


@given(node_sizes, st.integers(min_value=0, max_value=40),
       st.sampled_from([{"CPU": 1.0}, {"CPU": 0.5}, {"CPU": 2.0}]))
def test_plan_fills_nodes_evenly_and_never_past_their_room(cpus, count, demand):
    nodes = {n: {"CPU": float(c)} for n, c in cpus.items()}
    plan = spread_over(count, nodes, demand)
    room = {n: workers_that_fit(r, demand) for n, r in nodes.items()}
    per_node = {n: plan.count(n) for n in nodes}
    assert len(plan) == min(count, sum(room.values()))
    assert all(per_node[n] <= room[n] for n in nodes)
    # one per node before a second: a node with room left is never two behind another
    for a in nodes:
        for b in nodes:
            if per_node[a] < room[a]:
                assert per_node[b] <= per_node[a] + 1


def test_plan_counts_the_actors_already_placed():
    nodes = {"head": {"CPU": 4.0}, "worker": {"CPU": 4.0}}
    assert spread_over(1, nodes, {"CPU": 1.0}, placed={"head": 1}) == ["worker"]
    assert spread_over(2, nodes, {"CPU": 1.0}, placed={"gone": 3}) == ["head", "worker"]
    assert spread_over(1, nodes, {"CPU": 1.0, "GPU": 1.0}) == []  # waits for a GPU node
