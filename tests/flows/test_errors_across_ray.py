"""segpipe's errors raised inside real Ray tasks and actors, and the archive flow's retries.

The driver must see the original error (as ``RayTaskError.cause``, which
:func:`flows.batch.root_cause` and the block passes unwrap) with its one-line message;
the archive flow must then attempt a permanent error (bad input, model, settings) once
and retry a transient one (an ``OSError``, a crashed worker).
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import pytest
import rasterio
import ray

from flows.archive import AttemptLog, archive_batch, should_retry
from flows.batch import failure_reason, root_cause
from pipeline.distributed.ray_blocks import _result
from segcore.errors import ConfigError, InputError, SegpipeError
from tests.test_errors_pickle import CLASSES, make_error, same_error

RAY_TIMEOUT_S = 60


@ray.remote(num_cpus=0, max_retries=0)
def _raise(error: BaseException) -> None:
    raise error


@ray.remote(num_cpus=0)
class _Raiser:
    def raise_(self, error: BaseException) -> None:
        raise error


@pytest.fixture(scope="module")
def raiser(ray_session):
    actor = _Raiser.remote()
    yield actor
    ray.kill(actor)


def _raised(ref) -> BaseException:
    with pytest.raises(Exception) as caught:
        ray.get(ref, timeout=RAY_TIMEOUT_S)
    return caught.value


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_error_raised_in_a_ray_task_or_actor_reaches_the_driver_intact(cls, raiser):
    original = make_error(cls, "one line")
    for ref in (_raise.remote(original), raiser.raise_.remote(original)):
        err = _raised(ref)
        assert isinstance(err, ray.exceptions.RayTaskError)  # not the unserialisable wrapper
        assert isinstance(err, cls)  # Ray's dual class: `except InputError` still works
        same_error(root_cause(err), original)
        first = str(original).splitlines()[0]
        expected = first if isinstance(original, SegpipeError) else f"{cls.__name__}: {first}"
        assert failure_reason(err) == expected
    with pytest.raises(cls) as again:  # the block passes re-raise the error as itself
        _result(_raise.remote(original))
    same_error(again.value, original)


# ---------------------------------------------------------------- retries in a Prefect flow

@ray.remote(num_cpus=0, max_retries=0)
def _attempt(counter: str, kind: str) -> None:
    """One attempt of a volume: count it, then fail the way ``kind`` says."""
    with open(counter, "a") as f:
        f.write("x")
    if kind == "input":
        raise InputError("sub-01/anat/scan.nii", "truncated: 10 of 20 slices")
    if kind == "config":
        raise ConfigError("tile: expected an integer >= 16, received 4")
    if kind == "oserror":
        raise OSError(116, "Stale file handle")
    os._exit(17)  # "crash": the worker dies


def _volume(counter: str, kind: str) -> None:
    ray.get(_attempt.remote(counter, kind), timeout=RAY_TIMEOUT_S)


KINDS = {"input": (1, "truncated"), "config": (1, "tile: expected"),
         "oserror": (3, "Stale file handle"), "crash": (3, "WorkerCrashedError")}


def test_permanent_errors_from_ray_are_not_retried_transient_ones_are(tmp_path, ray_session,
                                                                      prefect_harness):
    from prefect import flow, task

    log = AttemptLog()

    @flow(name="retry-classes", persist_result=False)
    def volumes() -> dict:
        states = {}
        for kind in KINDS:
            run = task(_volume, name=f"volume-{kind}", retries=2, retry_delay_seconds=0,
                       persist_result=False, retry_condition_fn=partial(log.decide, kind))
            states[kind] = run(str(tmp_path / kind), kind, return_state=True)
        return states

    states = volumes()
    for kind, (attempts, text) in KINDS.items():
        counted = len((tmp_path / kind).read_text())
        assert (counted, log.attempts(kind)) == (attempts, attempts), kind
        error = states[kind].result(raise_on_failure=False)
        assert isinstance(error, BaseException) and should_retry(error) is (attempts > 1)
        assert text in failure_reason(error), (kind, failure_reason(error))


def _corrupt_pixels(path: Path) -> None:
    """Break the zlib header of the first block's deflate data: the file header stays valid."""
    with rasterio.open(path) as ds:
        assert ds.compression is not None and ds.compression.name == "deflate"
        offset = int(ds.get_tag_item("BLOCK_OFFSET_0_0", "TIFF", bidx=1))
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(b"\x00\x00\x00\x00")


def test_archive_attempts_a_corrupt_scene_once(scene_factory, tiny_bundle, tiny_pool, tmp_path,
                                               prefect_harness):
    """A scene whose pixels cannot be decoded fails in the Ray ingest pass, once."""
    import shutil

    root = tmp_path / "archive"
    root.mkdir()
    for name in ("good", "corrupt"):
        shutil.copy(scene_factory(f"archive-{name}", size=(256, 256), seed=8)[0],
                    root / f"{name}.tif")
    _corrupt_pixels(root / "corrupt.tif")
    result = archive_batch(str(root), str(tmp_path / "out"), str(tiny_bundle.path), retries=2,
                           options={"tile": 128}, pool=tiny_pool)
    status = {o["scene_id"]: (o["status"], o["reason"]) for o in result["outcomes"]}
    assert status["good"][0] == "ok"
    assert status["corrupt"][0] == "failed"
    assert status["corrupt"][1].startswith(str(root / "corrupt.tif")), status  # an InputError
    assert "\n" not in status["corrupt"][1]
    assert result["attempts"] == {"good": 1, "corrupt": 1}
