"""Progress reporting without coupling stages to a UI.

The command line sets a :class:`ProgressSink` in a context variable; stages
report through :func:`report_progress`. Context variables follow Prefect task
runs and threads that copy the context, and cost nothing when unset.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol


class ProgressSink(Protocol):
    def start(self, scene_id: str, stage: str, total: int) -> None: ...

    def advance(self, scene_id: str, stage: str, n: int) -> None: ...


_SINK: ContextVar[ProgressSink | None] = ContextVar("segpipe_progress", default=None)


@contextmanager
def progress_sink(sink: ProgressSink | None) -> Iterator[None]:
    token = _SINK.set(sink)
    try:
        yield
    finally:
        _SINK.reset(token)


def start_progress(scene_id: str, stage: str, total: int) -> None:
    sink = _SINK.get()
    if sink is not None:
        sink.start(scene_id, stage, total)


def advance_progress(scene_id: str, stage: str, n: int = 1) -> None:
    sink = _SINK.get()
    if sink is not None:
        sink.advance(scene_id, stage, n)
