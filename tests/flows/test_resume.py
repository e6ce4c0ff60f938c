"""Resume after SIGKILL, injected worker crashes, permanent tile failures, --no-resume."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.formats import Scene
from pipeline.options import RunOptions
from pipeline.run import Workspace, run_scene
from pipeline.store import INSTANCE, PANOPTIC, SEMANTIC, open_store
from tests.processes import kill_tree

ARRAYS = (SEMANTIC, INSTANCE, PANOPTIC)


def _scene(path: Path) -> Scene:
    return Scene(path, path.name.removesuffix(".tif"), "geotiff")


def _arrays(final: Path) -> dict[str, np.ndarray]:
    group = open_store(final / "scene.zarr")
    return {name: group[name][:] for name in ARRAYS}


@pytest.fixture(scope="module")
def resume_scene(scene_factory):
    return scene_factory("resume", size=(768, 640), seed=21)


@pytest.fixture(scope="module")
def clean_run(resume_scene, tiny_instance_bundle, tiny_instance_pool, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean")
    ws = Workspace(_scene(resume_scene[0]), out)
    report = run_scene(ws, tiny_instance_bundle, RunOptions(tile=128), tiny_instance_pool).report.to_json()
    return report, _arrays(ws.final)


def test_sigkill_then_rerun_reuses_tiles_and_matches_a_clean_run(
        resume_scene, tiny_instance_bundle, tiny_instance_pool, clean_run, tmp_path):
    out = tmp_path / "out"
    partial = out / ".resume.partial" / "tiles"
    ray_tmp = tempfile.mkdtemp(prefix="rk-", dir="/tmp")  # Ray's socket paths must be short
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"),
           "SEGPIPE_FAULT_DELAY_S": "0.25", "RAY_TMPDIR": ray_tmp}
    env.pop("RAY_ADDRESS", None)
    exe = Path(sys.executable).parent / "segpipe"
    proc = subprocess.Popen(
        [str(exe), "run", str(resume_scene[0]), "--model", str(tiny_instance_bundle.path),
         "--out", str(out), "--tile", "128", "--workers", "1", "--batch-size", "2"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 180
    try:
        while len(list(partial.glob("*.done"))) < 6:
            assert proc.poll() is None, f"run ended before the kill: {proc.stderr.read()!r}"
            assert time.monotonic() < deadline, "no tile finished in time"
            time.sleep(0.1)
    finally:
        kill_tree(proc)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    done_before = len(list(partial.glob("*.done")))
    assert 6 <= done_before < clean_run[0]["tiles"]["total"]
    assert not (out / "resume" / "report.json").exists()
    # rerun (same input, model, options): finished tiles are reused
    ws = Workspace(_scene(resume_scene[0]), out)
    report = run_scene(ws, tiny_instance_bundle, RunOptions(tile=128), tiny_instance_pool).report.to_json()
    tiles = report["tiles"]
    assert tiles["reused"] >= done_before - 1 and tiles["reused"] > 0
    assert tiles["reused"] + tiles["computed"] == tiles["total"]
    resumed = _arrays(ws.final)
    for name in ARRAYS:
        np.testing.assert_array_equal(resumed[name], clean_run[1][name], err_msg=name)
        assert resumed[name].tobytes() == clean_run[1][name].tobytes()
    assert json.loads((ws.final / "report.json").read_text())["tiles"]["reused"] > 0


def test_injected_worker_crash_is_retried(resume_scene, tiny_instance_bundle, tiny_instance_pool,
                                          clean_run, tmp_path, monkeypatch):
    monkeypatch.setenv("SEGPIPE_FAULT_CRASH_TILE", "resume:7")
    ws = Workspace(_scene(resume_scene[0]), tmp_path)
    report = run_scene(ws, tiny_instance_bundle, RunOptions(tile=128), tiny_instance_pool).report.to_json()
    assert report["tiles"]["retried"] >= 1
    assert report["tiles"]["computed"] == report["tiles"]["total"]
    crashed = _arrays(ws.final)
    for name in ARRAYS:
        np.testing.assert_array_equal(crashed[name], clean_run[1][name], err_msg=name)


def test_permanent_tile_failure_fails_only_its_scene(scene_factory, tiny_instance_bundle,
                                                     tiny_instance_pool, tmp_path, monkeypatch,
                                                     prefect_harness):
    from flows.segment_scene import segment_batch

    good = scene_factory("perm-good", size=(256, 256), seed=3)[0]
    bad = scene_factory("perm-bad", size=(256, 256), seed=4)[0]
    monkeypatch.setenv("SEGPIPE_FAULT_FAIL_TILE", "perm-bad:2")
    result = segment_batch([_scene(good), _scene(bad)], tiny_instance_bundle,
                           RunOptions(tile=128), tmp_path, pool=tiny_instance_pool)
    status = {o.scene_id: (o.status, o.reason) for o in result.outcomes}
    assert status["perm-good"][0] == "ok"
    assert status["perm-bad"][0] == "failed"
    assert "tile (1, 0) failed: injected fault" in status["perm-bad"][1]
    assert not (tmp_path / "perm-bad").exists() and not (tmp_path / ".perm-bad.partial").exists()


def test_finished_scene_is_reused_and_no_resume_recomputes(
        resume_scene, tiny_instance_bundle, tiny_instance_pool, clean_run, tmp_path):
    ws = Workspace(_scene(resume_scene[0]), tmp_path)
    first = run_scene(ws, tiny_instance_bundle, RunOptions(tile=128), tiny_instance_pool)
    assert not first.reused and first.path == ws.final / "report.json"
    first = first.report.to_json()
    stamp = (ws.final / "report.json").stat().st_mtime_ns
    result = run_scene(ws, tiny_instance_bundle, RunOptions(tile=128), tiny_instance_pool)
    assert result.reused
    again = result.report.to_json()
    assert again == first  # the finished report, read back typed, equals what was written
    assert (ws.final / "report.json").stat().st_mtime_ns == stamp  # nothing was redone
    fresh = run_scene(ws, tiny_instance_bundle, RunOptions(tile=128, resume=False),
                      tiny_instance_pool).report.to_json()
    assert (ws.final / "report.json").stat().st_mtime_ns != stamp
    assert fresh["tiles"]["reused"] == 0 and fresh["tiles"]["computed"] == fresh["tiles"]["total"]
    # other options make another result: not reused
    other = run_scene(ws, tiny_instance_bundle, RunOptions(tile=256), tiny_instance_pool).report.to_json()
    assert other["fingerprint"] != first["fingerprint"] and other["tiles"]["tile"] == 256
