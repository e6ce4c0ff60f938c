"""The pool's model actors as a set that changes while scenes run.

An actor is *ready* once its model has loaded (its ``describe()`` probe returned);
only ready actors get batches, so an actor still waiting for a node never holds
up tiles. The set changes in four ways:

- **lost**: an actor died (killed, crashed past ``max_restarts``): it is dropped, and
  a fresh actor replaces it if its node is still up a moment later (Ray may report
  the actors of a node that goes down before the node itself);
- **node left**: actors on a node that is no longer alive are killed and dropped,
  not replaced (that capacity is gone; an autoscaler's node brings it back);
- **node joined**: as many actors as fit on the new node start there (up to the
  pool's cap), less those still waiting for a place (they take the node first);
- **unavailable**: an actor that is restarting is probed again and gets batches
  once it answers.

The batches an actor held when it died are re-queued by the dispatcher
(:mod:`pipeline.inference.dispatch`); the methods here are thread-safe, since
several scenes share one pool.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from pipeline.inference.placement import (
    SCHEDULING_STRATEGY,
    alive_nodes,
    spread_over,
    workers_that_fit,
)

REPLACE_AFTER_S = 2.0  # how long a dead actor's node must stay up for it to be replaced

# Creates one actor; ``scheduling_strategy`` is SPREAD or a node affinity.
SpawnActor = Callable[[object], "ray.actor.ActorHandle"]


@dataclass(eq=False)
class Member:
    """One actor of the pool: its handle, its load probe and the node it runs on."""

    actor: ray.actor.ActorHandle
    probe: ray.ObjectRef  # describe(): ready once it returns
    ready: bool = False
    node: str | None = None
    info: dict | None = None
    planned: str | None = None  # the node it was asked for (soft affinity), if any


class ActorSet:
    """The pool's actors: started, ready, dropped, replaced and grown (thread-safe).

    Parameters
    ----------
    spawn : callable
        ``spawn(scheduling_strategy) -> actor handle``: starts one model actor.
    demand : dict
        What one actor reserves (``placement.worker_demand``).
    cap : int, optional
        The most actors the set grows to when nodes join; None: as many as fit.
    check_s : float
        Least seconds between two looks at the cluster's nodes.
    """

    def __init__(self, spawn: SpawnActor, demand: dict[str, float], *, cap: int | None,
                 check_s: float = 1.0) -> None:
        self._spawn_actor, self.demand, self.cap, self.check_s = spawn, demand, cap, check_s
        self._lock = threading.RLock()
        self.members: list[Member] = []
        self._nodes: set[str] = set(alive_nodes())
        self._checked = time.monotonic()
        self.replaced = 0  # actors started in place of dead ones
        self.dropped_with_node = 0  # actors lost because their node left
        self.grown = 0  # actors started on nodes that joined
        self.init_error: BaseException | None = None
        self._replacements: list[tuple[float, str | None]] = []  # (due time, dead actor's node)

    def spawn(self, count: int = 1, *, node: str | None = None) -> None:
        """Start ``count`` actors: on ``node`` while it has room, else one per node
        before any node gets a second (:func:`spread_over`), else (no node has room
        now) with SPREAD, waiting for one. Node choices are soft: an actor whose node
        is busy or gone goes wherever it fits."""
        with self._lock:
            count = max(0, count)
            if node is not None:
                plan = [node] * count
            else:
                placed: dict[str, int] = {}
                for m in self.members:
                    where = m.node or m.planned
                    if where is not None:
                        placed[where] = placed.get(where, 0) + 1
                plan = spread_over(count, alive_nodes(), self.demand, placed)
            for i in range(count):
                where = plan[i] if i < len(plan) else None
                # soft + spill: a node that is gone, or busy with other work (the plan
                # counts totals), sends the actor wherever it fits
                strategy = (NodeAffinitySchedulingStrategy(where, soft=True,
                                                           _spill_on_unavailable=True)
                            if where else SCHEDULING_STRATEGY)
                actor = self._spawn_actor(strategy)
                self.members.append(Member(actor, actor.describe.remote(), planned=where))

    @property
    def actors(self) -> list:
        with self._lock:
            return [m.actor for m in self.members]

    def ready(self) -> list[Member]:
        """The members whose model has loaded (looks at pending probes, no waiting)."""
        with self._lock:
            self._poll(0.0)
            return [m for m in self.members if m.ready]

    def wait_for_probe(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for a pending actor to become ready (or fail).

        Raises the model's own error when every actor failed to load it.
        """
        with self._lock:
            probes = [m.probe for m in self.members if not m.ready]
        if probes:
            ray.wait(probes, num_returns=1, timeout=timeout)
        else:
            time.sleep(min(timeout, 0.2))
        with self._lock:
            self._poll(0.0)
            if self.init_error is not None and not self.members:
                raise self.init_error

    def _poll(self, timeout: float) -> None:
        pending = {m.probe: m for m in self.members if not m.ready}
        if not pending:
            return
        done, _ = ray.wait(list(pending), num_returns=len(pending), timeout=timeout)
        for ref in done:
            member = pending[ref]
            try:
                member.info = ray.get(ref)
            except ray.exceptions.RayActorError as err:
                self._lost(member, err)
                continue
            member.ready, member.node = True, member.info.get("node")

    def unavailable(self, member: Member) -> None:
        """A restarting actor: no batches until it answers a new probe."""
        with self._lock:
            if member in self.members:
                member.ready, member.probe = False, member.actor.describe.remote()

    def lost(self, member: Member, error: BaseException) -> None:
        """An actor died under a batch: drop it; replace it if its node is still up."""
        with self._lock:
            self._lost(member, error)

    def _lost(self, member: Member, error: BaseException) -> None:
        if member not in self.members:
            return  # already dropped (another scene saw it first, or its node left)
        self._drop(member)
        if getattr(error, "actor_init_failed", False):
            self.init_error = error  # the model does not load: a new actor would fail too
            return
        self._replacements.append((time.monotonic() + REPLACE_AFTER_S, member.node))

    def _drop(self, member: Member) -> None:
        self.members.remove(member)
        ray.kill(member.actor, no_restart=True)

    def maintain(self) -> None:
        """At most every ``check_s``: drop actors of nodes that left, replace dead actors
        whose node stayed up, grow onto new nodes."""
        with self._lock:
            now = time.monotonic()
            if now - self._checked < self.check_s:
                return
            self._checked = now
            nodes = alive_nodes()
            for member in [m for m in self.members if m.node and m.node not in nodes]:
                self._drop(member)  # its in-flight batches fail and are re-queued
                self.dropped_with_node += 1
            self._replace(now, nodes)
            joined = [n for n in nodes if n not in self._nodes]
            self._nodes = set(nodes)
            for node in joined:
                self._grow_onto(node, nodes[node])

    def _replace(self, now: float, nodes: dict) -> None:
        due = [r for r in self._replacements if r[0] <= now]
        self._replacements = [r for r in self._replacements if r[0] > now]
        for _, node in due:
            if node is None or node in nodes:
                self.spawn(1)
                self.replaced += 1
            else:
                self.dropped_with_node += 1  # the node went: its capacity went with it

    def _grow_onto(self, node: str, resources: dict[str, float]) -> None:
        waiting = sum(not m.ready for m in self.members)
        room = workers_that_fit(resources, self.demand) - waiting
        if self.cap is not None:
            room = min(room, self.cap - len(self.members))
        if room > 0:
            self.spawn(room, node=node)
            self.grown += room

    def shutdown(self) -> None:
        with self._lock:
            for member in self.members:
                ray.kill(member.actor)
            self.members = []
