"""Acceptance on a local S3 server: a run from and to ``s3://`` equals a local run, a run
killed mid-way resumes on S3, and storage problems are one line and exit 2."""

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
import rasterio
from typer.testing import CliRunner

from flows.cli import app
from pipeline.formats import Scene
from pipeline.options import RunOptions
from pipeline.run import Workspace, run_scene
from pipeline.storage import S3Uri, objects
from pipeline.store import INSTANCE, PANOPTIC, SEMANTIC, open_store
from tests.processes import kill_tree

ARRAYS = (SEMANTIC, INSTANCE, PANOPTIC)
OPTIONS = RunOptions(tile=128)


def _upload(path: Path, uri: S3Uri) -> S3Uri:
    objects.put_file(uri, path)
    return uri


def _comparable(report: dict) -> dict:
    """The report without timings and what names the input's location (its path, and the
    fingerprint that hashes it)."""
    out = {k: v for k, v in report.items() if k not in ("timings_s", "input", "fingerprint")}
    if out.get("metrics"):
        out["metrics"] = {k: v for k, v in out["metrics"].items() if k != "labels"}
    return out


def _pixels(read, exports: dict[str, str]) -> dict[str, np.ndarray]:
    return {name: read(file) for name, file in exports.items()}


def _read_local(root: Path):
    def read(name: str) -> np.ndarray:
        with rasterio.open(root / name) as ds:
            return ds.read()
    return read


def _read_remote(root: S3Uri, tmp: Path):
    def read(name: str) -> np.ndarray:
        local = objects.download(root / name, tmp / name)
        with rasterio.open(local) as ds:
            return ds.read()
    return read


@pytest.fixture(scope="module")
def s3_pool(ray_session, tiny_instance_bundle):
    from pipeline.inference.pool import PoolConfig, WorkerPool

    pool = WorkerPool(str(tiny_instance_bundle.path), PoolConfig(workers=2, batch_size=4))
    yield pool
    pool.shutdown()


@pytest.fixture(scope="module")
def s3_scene(scene_factory):
    return scene_factory("s3scene", size=(384, 320), seed=11)


@pytest.fixture(scope="module")
def local_result(s3_scene, tiny_instance_bundle, s3_pool, tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    scene = Scene(s3_scene[0], "s3scene", "geotiff")
    result = run_scene(Workspace(scene, out, s3_scene[1]), tiny_instance_bundle, OPTIONS, s3_pool)
    return result.report.to_json(), out / "s3scene"


def test_s3_input_and_output_equal_a_local_run(s3_scene, bucket, tiny_instance_bundle, s3_pool,
                                                local_result, tmp_path):
    image = _upload(s3_scene[0], S3Uri(bucket, "inputs/s3scene.tif"))
    labels = _upload(s3_scene[1], S3Uri(bucket, "inputs/s3scene_labels.tif"))
    out = S3Uri(bucket, "results/run1")
    ws = Workspace(Scene(image, "s3scene", "geotiff"), out, labels)
    result = run_scene(ws, tiny_instance_bundle, OPTIONS, s3_pool)
    assert result.path == out / "s3scene" / "report.json" and not result.reused
    local_report, local_dir = local_result
    remote_report = json.loads(objects.get_bytes(result.path))
    assert remote_report["input"] == str(image)
    assert _comparable(remote_report) == _comparable(local_report)
    names = {k: v for k, v in local_report["outputs"].items()
             if isinstance(v, str) and v.endswith(".tif")}
    assert {SEMANTIC, INSTANCE, PANOPTIC} <= set(names)
    local_px = _pixels(_read_local(local_dir), names)
    remote_px = _pixels(_read_remote(out / "s3scene", tmp_path), names)
    for name in local_px:
        np.testing.assert_array_equal(remote_px[name], local_px[name], err_msg=name)
    # the published scene: every output, no partial prefix, the store readable on S3
    keys = {o.uri.relative_to(out).as_posix() for o in objects.list_objects(out)}
    assert not any(k.startswith(".s3scene.partial") for k in keys)
    for file in [*names.values(), "segments.json", "report.html", "report.json",
                 "scene.zarr/zarr.json",
                 *local_report["outputs"]["quicklooks"].values()]:
        assert f"s3scene/{file}" in keys, file
    group = open_store(out / "s3scene" / "scene.zarr")
    local_group = open_store(local_dir / "scene.zarr")
    for name in ARRAYS:
        assert group[name][:].tobytes() == local_group[name][:].tobytes(), name
    # a second run with the same input, model and options reuses the finished scene
    again = run_scene(ws, tiny_instance_bundle, OPTIONS, s3_pool)
    assert again.reused and again.report.to_json() == result.report.to_json()


def _records(prefix: S3Uri) -> int:
    return sum(o.uri.name.endswith(".done") for o in objects.list_objects(prefix))


def test_a_run_killed_mid_way_resumes_on_s3(s3_scene, bucket, tiny_instance_bundle, s3_pool,
                                            local_result, tmp_path):
    image = _upload(s3_scene[0], S3Uri(bucket, "in/s3scene.tif"))
    out = S3Uri(bucket, "out")
    records = out / ".s3scene.partial" / "tiles"
    ray_tmp = tempfile.mkdtemp(prefix="rk-", dir="/tmp")  # Ray's socket paths must be short
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"),
           "SEGPIPE_FAULT_DELAY_S": "0.25", "RAY_TMPDIR": ray_tmp}
    env.pop("RAY_ADDRESS", None)
    exe = Path(sys.executable).parent / "segpipe"
    proc = subprocess.Popen(
        [str(exe), "run", str(image), "--model", str(tiny_instance_bundle.path),
         "--out", str(out), "--tile", "128", "--workers", "1", "--batch-size", "2"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 240
    try:
        while _records(records) < 3:
            assert proc.poll() is None, f"run ended before the kill: {proc.stderr.read()!r}"
            assert time.monotonic() < deadline, "no tile finished in time"
            time.sleep(0.1)
    finally:
        kill_tree(proc)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    done_before = _records(records)
    local_report, local_dir = local_result
    assert 3 <= done_before < local_report["tiles"]["total"]
    assert not objects.exists(out / "s3scene" / "report.json")
    # rerun (same input, model and options): the finished tiles on S3 are reused
    ws = Workspace(Scene(image, "s3scene", "geotiff"), out)
    report = run_scene(ws, tiny_instance_bundle, OPTIONS, s3_pool).report.to_json()
    tiles = report["tiles"]
    assert tiles["reused"] >= done_before - 1 and tiles["reused"] > 0
    assert tiles["reused"] + tiles["computed"] == tiles["total"]
    group, clean = open_store(out / "s3scene" / "scene.zarr"), open_store(local_dir / "scene.zarr")
    for name in ARRAYS:
        assert group[name][:].tobytes() == clean[name][:].tobytes(), name
    names = {k: v for k, v in local_report["outputs"].items()
             if isinstance(v, str) and v.endswith(".tif")}
    remote_px = _pixels(_read_remote(out / "s3scene", tmp_path), names)
    for name, pixels in _pixels(_read_local(local_dir), names).items():
        assert remote_px[name].tobytes() == pixels.tobytes(), name
    assert json.loads(objects.get_bytes(out / "s3scene" / "report.json"))["tiles"]["reused"] > 0
    assert not objects.list_objects(out / ".s3scene.partial")


runner = CliRunner()


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("case", ["missing bucket", "missing key", "no credentials",
                                  "unreachable endpoint"])
def test_storage_problems_are_one_line_and_exit_2(case, bucket, s3_scene, monkeypatch, tmp_path,
                                                  ray_session):
    uri = f"s3://{bucket}/in/absent.tif"
    expected = f"no such key 'in/absent.tif' in bucket '{bucket}'"
    if case == "missing bucket":
        uri, expected = "s3://segpipe-no-such-bucket/in/a.tif", \
            "bucket 'segpipe-no-such-bucket' does not exist"
    elif case == "no credentials":
        monkeypatch.delenv("AWS_ACCESS_KEY_ID")
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
        expected = "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    elif case == "unreachable endpoint":
        endpoint = f"http://127.0.0.1:{_closed_port()}"
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        expected = f"cannot reach the S3 endpoint {endpoint}"
    out = uri.rpartition("/")[0] + "/results"
    runs = [(["run", uri, "--model", "demo-satellite", "--out", str(tmp_path / "out")], uri)]
    if case != "missing key":  # --out names a prefix: a missing key is no problem there
        runs.append((["run", str(s3_scene[0]), "--model", "demo-satellite", "--out", out],
                     f"--out {out}"))
    for args, named in runs:
        started = time.monotonic()
        result = runner.invoke(app, args)
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 2, result.output
        assert len(lines) == 1 and "Traceback" not in result.output, result.output
        assert named in lines[0] and expected in lines[0], lines[0]
        assert time.monotonic() - started < 30  # a few quick retries, no long timeouts
