"""Feeding batches to a changing set of actors, with per-batch re-queueing.

Each ready actor holds at most two batches of a run (one running, one queued behind
it, so it never waits for the driver between batches); whichever finishes first
takes the next (``ray.wait`` over the batches in flight). A batch whose actor died or
became unavailable, or whose result was lost with its node, goes back to the
front of the queue and runs on another actor: its tiles are computed again and
rewrite the same chunks with the same bytes (each tile owns its chunks), so no
tile is lost and none differs. A batch that raised an error of its own (bad
input, an injected fault) fails the run as before. Between results the actor set
looks at the cluster (at most once a second), so new nodes take batches and dead
actors are replaced while a scene runs.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError, ObjectLostError, RayActorError

from pipeline.inference.members import ActorSet, Member

Submit = Callable[[Any, Any], ray.ObjectRef]  # (actor handle, batch) -> result ref
OnResult = Callable[[Member, Any], None]

MAX_ATTEMPTS = 4  # a batch that loses its actor this often fails the run (it kills them)
DRAIN_TIMEOUT_S = 300.0  # longest wait for the batches in flight when one failed


class NoWorkerError(RuntimeError):
    """No actor was ready to take a batch for longer than the allowed wait."""


def dispatch(batches: Sequence[Any], members: ActorSet, submit: Submit, on_result: OnResult,
             *, wait_s: float, per_actor: int = 2) -> int:
    """Run every batch once to completion; returns how many were re-queued.

    Parameters
    ----------
    batches : sequence
        Work items, each passed to ``submit`` with a ready actor.
    members : ActorSet
        The pool's actors; looked after (:meth:`ActorSet.maintain`) between results.
    submit, on_result : callable
        ``submit(actor, batch) -> ObjectRef``; ``on_result(member, result)`` for each
        batch that finished, in completion order.
    wait_s : float
        Longest time without any ready actor before :class:`NoWorkerError`.
    per_actor : int
        Batches queued on one actor at once: with two, an actor starts its next batch
        the moment it finishes one, without waiting for the driver's round trip.
    """
    queue = deque(batches)
    inflight: dict[ray.ObjectRef, tuple[Member, Any]] = {}
    try:
        return _dispatch(queue, inflight, members, submit, on_result, wait_s=wait_s,
                         per_actor=per_actor)
    except Exception:
        # A batch failed the run: the other batches in flight still write
        # into the scene's store. Wait for them (results and errors ignored) so that the
        # caller's cleanup of the partial scene is final and nothing recreates it after.
        _drain(list(inflight))
        raise


def _drain(refs: list[ray.ObjectRef], timeout: float = DRAIN_TIMEOUT_S) -> None:
    """Wait until ``refs`` finished (or ``timeout`` s passed); their outcomes are ignored."""
    if refs:
        ray.wait(refs, num_returns=len(refs), timeout=timeout)


def _dispatch(queue: deque, inflight: dict, members: ActorSet, submit: Submit,
              on_result: OnResult, *, wait_s: float, per_actor: int) -> int:
    attempts: dict[int, int] = {}
    idle_since: float | None = None
    requeued = 0
    while queue or inflight:
        members.maintain()
        held = Counter(id(m) for m, _ in inflight.values())
        for _ in range(per_actor):  # round-robin: every actor gets one before any gets two
            for member in members.ready():
                if queue and held[id(member)] < per_actor:
                    batch = queue.popleft()
                    inflight[submit(member.actor, batch)] = (member, batch)
                    held[id(member)] += 1
        if not inflight:
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since > wait_s:
                raise NoWorkerError(f"no model worker was ready for {wait_s:g} s "
                                    f"({len(queue)} batches waiting); the cluster lost "
                                    "its nodes or cannot place a worker")
            members.wait_for_probe(timeout=1.0)
            continue
        idle_since = None
        done, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
        for ref in done:
            member, batch = inflight.pop(ref)
            try:
                result = ray.get(ref)
            except (RayActorError, ObjectLostError) as err:
                _give_back(queue, batch, attempts, err)
                requeued += 1
                if isinstance(err, ActorUnavailableError):
                    members.unavailable(member)
                elif isinstance(err, RayActorError):
                    members.lost(member, err)
                continue
            on_result(member, result)
    return requeued


def _give_back(queue: deque, batch: Any, attempts: dict[int, int], error: BaseException) -> None:
    key = id(batch)
    attempts[key] = attempts.get(key, 0) + 1
    if attempts[key] >= MAX_ATTEMPTS:
        raise RuntimeError(f"a batch lost its model worker {attempts[key]} times; "
                           f"last error: {error}") from error
    queue.appendleft(batch)
