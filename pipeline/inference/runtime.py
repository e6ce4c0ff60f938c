"""Starting or joining Ray, in the foreground or in the background.

Without an address a local runtime starts in-process; with ``address`` (or
``RAY_ADDRESS``) the run joins that cluster (``HEAD:6379``, or ``auto`` for the
cluster ``ray start`` recorded on this machine). An already initialised runtime
(tests, notebooks) is reused as it is.

A local runtime listens on the loopback interface only (:func:`loopback_only`): its
GCS, raylet, agents and workers accept no connection from another machine.
Its processes die with this one, even when it is killed with SIGKILL
(:func:`pipeline.watchdog.guard_children`).

A ``HEAD:PORT`` address is checked with one TCP connection first: Ray itself keeps
retrying an unreachable address for minutes, while the check fails in seconds with
a :class:`~segcore.errors.ConfigError` that names the address.

:func:`in_background` runs work such as :func:`ensure_ray` on the one Ray thread of
the process, so the command line can validate its inputs and import the pipeline
while Ray starts. That thread never ends before the process does: Ray ties the
lifetime of the processes it starts (GCS, raylet) to the thread that started them.
"""

from __future__ import annotations

import os
import queue
import socket
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from pipeline.watchdog import guard_children
from segcore.errors import ConfigError

T = TypeVar("T")
RAY_THREAD = "segpipe-ray"  # the name of the thread in_background runs calls on
REACH_TIMEOUT_S = 5.0
# Block passes run as Ray tasks in worker processes beside the model actors. Ray kills
# idle workers above its soft limit (the CPU count, which the actors already fill) after
# one second, so every pass would start fresh workers and re-import the pipeline (about
# 2 s a pass, measured). A local runtime keeps idle workers for ten minutes; a cluster
# takes the same setting from `ray start --system-config` (deploy/CLUSTER.md).
LOCAL_SYSTEM_CONFIG = {"idle_worker_killing_time_threshold_ms": 600_000}
_LOCAL = ("local", "auto")
LOOPBACK = "127.0.0.1"
# Ray reads this when it is imported: "0" makes a node's address the loopback address (as
# Ray does on macOS and Windows), and Ray's gRPC servers, agents and workers then listen on
# 127.0.0.1 instead of on every interface. Only right for a runtime nobody joins.
_SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def loopback_only() -> None:
    """Make the next local Ray runtime of this process listen on 127.0.0.1 only.

    Sets the variable Ray reads at import (inherited by the processes Ray starts) and,
    where this process imported Ray already, Ray's copy of it. Call before ``ray.init``
    of a runtime that no other machine joins; never before joining a cluster, whose
    nodes must reach this driver.
    """
    _single_machine(True)


def _single_machine(on: bool) -> None:
    """Set (or, for joining a cluster, undo) the single-machine node address."""
    if on:
        os.environ[_SINGLE_MACHINE_ENV] = "0"
    elif os.environ.get(_SINGLE_MACHINE_ENV) == "0":
        del os.environ[_SINGLE_MACHINE_ENV]
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:
        constants.ENABLE_RAY_CLUSTER = False if on else not constants.IS_WINDOWS_OR_OSX


def cluster_endpoint(address: str) -> tuple[str, int] | None:
    """The ``(host, port)`` a cluster address names, or None (``local``, ``auto``).

    Examples
    --------
    >>> cluster_endpoint("10.0.0.5:6379"), cluster_endpoint("ray://head:10001")
    (('10.0.0.5', 6379), ('head', 10001))
    >>> cluster_endpoint("auto") is None
    True
    """
    text = address.split("://", 1)[-1].strip().rstrip("/")
    host, _, port = text.rpartition(":")
    if text in _LOCAL or not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def check_reachable(address: str, timeout: float = REACH_TIMEOUT_S) -> None:
    """Open (and close) one TCP connection to a ``HEAD:PORT`` cluster address.

    Raises
    ------
    ConfigError
        When nothing accepts connections there within ``timeout`` seconds.
    """
    endpoint = cluster_endpoint(address)
    if endpoint is None:
        return
    try:
        socket.create_connection(endpoint, timeout=timeout).close()
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise ConfigError(
            f"--ray-address {address}: no Ray cluster answers there ({reason}); check the "
            "address (RAY_ADDRESS), or leave it out to start a local runtime") from None


FORWARDED_PREFIXES = ("AWS_", "THP_MEM_ALLOC_ENABLE")
"""Driver variables every worker of a joined cluster gets (``runtime_env``): the standard
AWS settings that object storage reads, so a user sets them once, where segpipe runs, and
PyTorch's huge-page setting for CPU tensors (``flows.environment``)."""


def forwarded_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The variables of ``environ`` (default: this process) that workers need too.

    Examples
    --------
    >>> forwarded_environment({"AWS_REGION": "eu-west-1", "HOME": "/root",
    ...                        "THP_MEM_ALLOC_ENABLE": "1"})
    {'AWS_REGION': 'eu-west-1', 'THP_MEM_ALLOC_ENABLE': '1'}
    """
    environ = os.environ if environ is None else environ
    return {k: v for k, v in environ.items() if k.startswith(FORWARDED_PREFIXES)}


def ensure_ray(address: str | None = None, *, num_cpus: int | None = None) -> dict:
    """Initialise Ray once and return the cluster's resources.

    Raises
    ------
    ConfigError
        When the cluster address cannot be reached or Ray refuses to start or join.
    """
    import ray

    if not ray.is_initialized():
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        kwargs: dict = {"include_dashboard": False, "log_to_driver": False,
                        "ignore_reinit_error": True, "namespace": "segpipe"}
        address = address or os.environ.get("RAY_ADDRESS") or None
        if address:
            check_reachable(address)
            kwargs["address"] = address
            if forwarded := forwarded_environment():  # workers on other nodes read them too
                kwargs["runtime_env"] = {"env_vars": forwarded}
            _single_machine(False)  # the cluster's nodes must reach this driver
        else:
            # "local": a fresh runtime even where `ray start` left a cluster address in
            # Ray's temp dir (a bare ray.init() would silently join that cluster).
            kwargs["address"] = "local"
            kwargs["num_cpus"] = num_cpus
            kwargs["_system_config"] = LOCAL_SYSTEM_CONFIG
            kwargs["_node_ip_address"] = LOOPBACK
            kwargs["dashboard_host"] = LOOPBACK
            loopback_only()
            # Local runtime: the pipeline must not need a token file in $HOME.
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            guard_children()  # the runtime's agents and workers die with this process
        try:
            ray.init(**kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"join the Ray cluster at {address}" if address else "start a local Ray runtime"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"cannot {where}: {first}") from exc
    return ray.cluster_resources()


def stop_local_ray() -> None:
    """``ray.shutdown()`` of a runtime this process started, without Ray's one-second wait
    for its autoscaler monitor.

    Ray stops the node's processes one kind at a time, each with SIGTERM and up to 1 s of
    waiting before SIGKILL. The monitor (a local runtime has no autoscaler to run) does not
    exit on SIGTERM once the GCS is gone, so every shutdown waited the full second for it
    (measured: raylet 0.12 s, GCS 0.03 s, monitor 1.02 s, the rest 0.05 s); asked first,
    it takes 0.8 s and prints a traceback through the raylet. It is killed here, as Ray
    kills it after the wait; the other processes stop as Ray stops them.
    """
    import ray

    try:  # Ray's private node handle: the processes this process started (none when joined)
        from ray._private.ray_constants import PROCESS_TYPE_MONITOR

        node = ray._private.worker._global_node
        monitors = (node.all_processes.get(PROCESS_TYPE_MONITOR, [])
                    if node is not None and node.head else [])
    except (AttributeError, ImportError):  # another Ray version: its own shutdown only
        monitors = []
    for info in monitors:
        process = getattr(info, "process", None)
        if process is not None and process.poll() is None:
            process.kill()
            try:
                process.wait(timeout=5)
            except Exception:  # noqa: BLE001 - Ray's shutdown reaps it in any case
                pass
    ray.shutdown()


class _RayThread:
    """The process's Ray thread: runs submitted calls in order, then waits for more."""

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._serve, name=RAY_THREAD, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            call, future = self._calls.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(call())
                except BaseException as exc:  # noqa: BLE001 - handed to the caller
                    future.set_exception(exc)

    def submit(self, call: Callable[[], Any]) -> Future:
        future: Future = Future()
        self._calls.put((call, future))
        return future


_THREAD: _RayThread | None = None
_THREAD_LOCK = threading.Lock()


def in_background(call: Callable[..., T], *args: Any, **kwargs: Any) -> Future:
    """Run ``call(*args, **kwargs)`` on the process's Ray thread; its future.

    Calls run one after another in submission order, so a call submitted after
    ``in_background(ensure_ray, ...)`` finds Ray started (or the start failed).
    """
    global _THREAD
    with _THREAD_LOCK:
        if _THREAD is None:
            _THREAD = _RayThread()
        return _THREAD.submit(lambda: call(*args, **kwargs))
