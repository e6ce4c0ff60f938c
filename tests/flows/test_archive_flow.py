"""The archive flow: volumes as retried Prefect tasks; bad input fails once, transient errors retry."""

from __future__ import annotations

import json

import pytest

from flows.archive import archive_batch, root_cause, should_retry
from pipeline.inference.records import InjectedFault
from pipeline.synthdata.phantoms import write_archive
from segcore.errors import ConfigError, InputError, ModelError, TileSizeError

SMALL = (40, 48, 44)


class _RayLike(RuntimeError):
    """Stands in for ray.exceptions.RayTaskError, which carries the worker's error as .cause."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"worker raised {cause!r}")
        self.cause = cause


@pytest.mark.parametrize(("exc", "retry"), [
    (InputError("a.nii", "empty file"), False),
    (ModelError("unreadable weights"), False),
    (ConfigError("tile: expected >= 1"), False),
    (TileSizeError("tile too small"), False),
    (_RayLike(InputError("a.nii", "truncated")), False),
    (OSError("stale NFS file handle"), True),
    (InjectedFault("tile (0, 0, 0) failed"), True),
    (_RayLike(InjectedFault("tile failed")), True),
    (RuntimeError("actor died"), True),
    (KeyboardInterrupt(), False),
    (None, False),
])
def test_should_retry(exc, retry):
    assert should_retry(exc) is retry


def test_root_cause_unwraps_nested_causes():
    inner = InputError("a.nii", "x")
    assert root_cause(_RayLike(_RayLike(inner))) is inner


@pytest.fixture(scope="module")
def medical_pool(ray_session):
    from pipeline.bundle import load_bundle
    from pipeline.inference.pool import PoolConfig, WorkerPool

    pool = WorkerPool(str(load_bundle("demo-medical").path), PoolConfig(workers=1, batch_size=4))
    yield pool
    pool.shutdown()


def _task_runs(flow_run_id) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        return client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))


def test_broken_file_fails_once_transient_fault_is_retried(tmp_path, medical_pool,
                                                          prefect_harness, monkeypatch):
    write_archive(tmp_path, volumes=3, shape=SMALL, seed=5, broken=("zero-byte",))
    # every attempt at sub-01's first tile raises InjectedFault (a RuntimeError): transient
    monkeypatch.setenv("SEGPIPE_FAULT_FAIL_TILE", "sub-01__anat__scan:0")
    state = archive_batch(str(tmp_path / "archive"), str(tmp_path / "out"), "demo-medical",
                          labels=str(tmp_path / "labels"), retries=2,
                          options={"scenes_in_flight": 2}, pool=medical_pool,
                          return_state=True)
    result = state.result()
    status = {o["scene_id"]: o["status"] for o in result["outcomes"]}
    assert status == {"broken-00__anat__scan": "failed", "sub-00__anat__scan": "ok",
                      "sub-01__anat__scan": "failed", "sub-02__anat__scan": "ok"}
    assert result["attempts"] == {"broken-00__anat__scan": 1, "sub-00__anat__scan": 1,
                                  "sub-01__anat__scan": 3, "sub-02__anat__scan": 1}
    assert (result["computed"], result["failed"], result["exit_code"]) == (2, 2, 1)
    reasons = {o["scene_id"]: o["reason"] for o in result["outcomes"]}
    assert "empty" in reasons["broken-00__anat__scan"].lower()
    assert "injected fault" in reasons["sub-01__anat__scan"]
    # Prefect's own record agrees: the volume tasks ran 1 and 3 times
    runs = {r.name: r.run_count for r in _task_runs(state.state_details.flow_run_id)
            if r.name.startswith("segment-volume-")}
    assert runs == {"segment-volume-broken-00__anat__scan": 1,
                    "segment-volume-sub-00__anat__scan": 1,
                    "segment-volume-sub-01__anat__scan": 3,
                    "segment-volume-sub-02__anat__scan": 1}
    batch = json.loads((tmp_path / "out" / "batch.json").read_text())
    assert len(batch["scenes"]) == 4 and batch["failed"] == 2
    assert not (tmp_path / "out" / "sub-01__anat__scan").exists()

    # fault gone: a rerun reuses the finished volumes and computes only the failed one
    monkeypatch.delenv("SEGPIPE_FAULT_FAIL_TILE")
    again = archive_batch(str(tmp_path / "archive"), str(tmp_path / "out"), "demo-medical",
                          labels=str(tmp_path / "labels"), pool=medical_pool)
    runs = {o["scene_id"]: (o["status"], o["reused"]) for o in again["outcomes"]}
    assert runs["sub-00__anat__scan"] == ("ok", True)
    assert runs["sub-01__anat__scan"] == ("ok", False)
    assert runs["broken-00__anat__scan"] == ("failed", False)
    assert again["attempts"]["broken-00__anat__scan"] == 1


def test_negative_retries_are_refused(tmp_path, prefect_harness):
    with pytest.raises(ConfigError, match="retries"):
        archive_batch(str(tmp_path), str(tmp_path / "out"), "demo-medical", retries=-1)
