"""The nightly pass: only new or changed scenes are segmented; artifacts; `segpipe nightly --once`."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app

SIZE = (256, 256)


@pytest.fixture(scope="module")
def nightly_pool(ray_session, tiny_bundle):
    """One model actor for the tiny bundle (leaves a CPU for a pass's own pool)."""
    from pipeline.inference.pool import PoolConfig, WorkerPool

    pool = WorkerPool(str(tiny_bundle.path), PoolConfig(workers=1, batch_size=4))
    yield pool
    pool.shutdown()


@pytest.fixture(scope="module")
def other_bundle(tmp_path_factory, tiny_bundle):
    """The tiny bundle retrained: same architecture, other weights."""
    import torch

    from pipeline.bundle import save_bundle
    from segcore.models.factory import build_model

    torch.manual_seed(99)
    net = build_model("unet2d", **tiny_bundle.spec.params).eval()
    return save_bundle(tmp_path_factory.mktemp("tiny-v2"), tiny_bundle.spec, net.state_dict())


def _arrive(scene_factory, inbox: Path, labels: Path, name: str, seed: int) -> None:
    image, truth = scene_factory(f"nightly-{name}", size=SIZE, seed=seed)
    inbox.mkdir(exist_ok=True)
    labels.mkdir(exist_ok=True)
    shutil.copy(image, inbox / f"{name}.tif")
    shutil.copy(truth, labels / f"{name}_labels.tif")


def _artifacts(flow_run_id) -> dict[str, object]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return {a.key: a for a in found}


def _pass(inbox, out, model, labels, **kwargs):
    from flows.nightly import nightly_pass

    state = nightly_pass(str(inbox), str(out), str(model), labels=str(labels),
                         return_state=True, **kwargs)
    assert state.is_completed(), state.message
    return state.result(), _artifacts(state.state_details.flow_run_id)


def _runs(result) -> dict[str, str]:
    return {o["scene_id"]: ("reused" if o["reused"] else "computed") for o in result["outcomes"]}


def test_second_pass_segments_only_new_scenes_and_a_new_model_reruns_all(
        scene_factory, tiny_bundle, other_bundle, nightly_pool, tmp_path, prefect_harness):
    inbox, labels, out = tmp_path / "inbox", tmp_path / "labels", tmp_path / "out"
    for name, seed in (("a", 1), ("b", 2)):
        _arrive(scene_factory, inbox, labels, name, seed)

    first, artifacts = _pass(inbox, out, tiny_bundle.path, labels, pool=nightly_pool)
    assert (first["computed"], first["reused"], first["failed"], first["exit_code"]) == (2, 0, 0, 0)
    stamps = {s: (out / s / "report.json").stat().st_mtime_ns for s in ("a", "b")}
    table = json.loads(artifacts["segpipe-nightly-scenes"].data)
    assert [(r["scene_id"], r["status"], r["run"]) for r in table] == [
        ("a", "ok", "computed"), ("b", "ok", "computed")]
    assert all(0 <= r["miou"] <= 1 and r["pq"] is not None and "water" in r["classes"]
               for r in table)

    _arrive(scene_factory, inbox, labels, "c", 3)  # a third scene arrives
    second, artifacts = _pass(inbox, out, tiny_bundle.path, labels, pool=nightly_pool)
    assert _runs(second) == {"a": "reused", "b": "reused", "c": "computed"}
    assert (second["computed"], second["reused"], second["exit_code"]) == (1, 2, 0)
    assert {s: (out / s / "report.json").stat().st_mtime_ns for s in ("a", "b")} == stamps
    table = json.loads(artifacts["segpipe-nightly-scenes"].data)
    assert {r["scene_id"]: r["run"] for r in table} == _runs(second)
    markdown = artifacts["segpipe-nightly-summary"].data
    assert "1 computed, 2 reused, 0 failed" in markdown
    for scene in ("a", "b", "c"):
        assert (out / scene / "report.html").resolve().as_uri() in markdown
    with open(out / "batch.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["scene_id"], r["reused"]) for r in rows] == [
        ("a", "True"), ("b", "True"), ("c", "False")]

    # a new model (other weights): every scene runs again, with a pool of its own
    third, artifacts = _pass(inbox, out, other_bundle.path, labels, options={"workers": 1})
    assert _runs(third) == {"a": "computed", "b": "computed", "c": "computed"}
    assert third["failed"] == 0 and third["exit_code"] == 0
    assert all((out / s / "report.json").stat().st_mtime_ns != stamps[s] for s in ("a", "b"))
    table = json.loads(artifacts["segpipe-nightly-scenes"].data)
    assert [r["run"] for r in table] == ["computed"] * 3


def test_empty_inbox_is_a_successful_pass(tiny_bundle, tmp_path, prefect_harness):
    from flows.nightly import nightly_pass

    (tmp_path / "inbox").mkdir()
    result = nightly_pass(str(tmp_path / "inbox"), str(tmp_path / "out"), str(tiny_bundle.path))
    assert (result["scenes"], result["failed"], result["exit_code"]) == (0, 0, 0)
    assert json.loads((tmp_path / "out" / "batch.json").read_text())["scenes"] == []


def test_nightly_once_exit_codes(scene_factory, tiny_bundle, nightly_pool, tmp_path,
                                prefect_harness):
    inbox, labels, out = tmp_path / "inbox", tmp_path / "labels", tmp_path / "out"
    for name, seed in (("p", 4), ("q", 5)):
        _arrive(scene_factory, inbox, labels, name, seed)
    args = ["nightly", "--once", "--inbox", str(inbox), "--out", str(out),
            "--model", str(tiny_bundle.path), "--workers", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (out / "p" / "report.json").is_file() and (out / "q" / "report.json").is_file()
    assert "2 computed, 0 reused, 0 failed" in " ".join(result.output.split())

    (inbox / "x.tif").write_text("this is a text file, not a GeoTIFF\n")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert "failed x:" in text and "not a GeoTIFF" in text and "Traceback" not in text
    assert "0 computed, 2 reused, 1 failed" in text
    batch = json.loads((out / "batch.json").read_text())
    assert {s["scene_id"]: s["status"] for s in batch["scenes"]} == {
        "p": "ok", "q": "ok", "x": "failed"}


def test_a_stac_item_in_the_inbox_is_a_scene_and_its_bands_are_not(
        scene_factory, tiny_bundle, nightly_pool, tmp_path, prefect_harness):
    """Nightly passes take STAC Item files: the Item is one scene (its band COGs beside
    it are not scenes of their own), it gets an item.json and the run a catalog.json,
    and the next pass reuses it."""
    import rasterio

    from tests.pipeline.formats.cases import write_band, write_stac_item

    inbox, out, labels = tmp_path / "inbox", tmp_path / "out", tmp_path / "labels"
    inbox.mkdir()
    labels.mkdir()
    image, _ = scene_factory("nightly-stac", size=SIZE, seed=7)
    with rasterio.open(image) as src:
        pixels, transform, crs = src.read(), src.transform, src.crs.to_string()
    bands = {}
    for i, name in enumerate(("red", "green", "blue")):
        write_band(inbox / f"B{i + 1}.tif", pixels[i], transform=transform, crs=crs)
        bands[f"B{i + 1}"] = (f"B{i + 1}.tif", name)
    write_stac_item(inbox / "item.json", "scene-2026-06-01", bands)

    first, _ = _pass(inbox, out, tiny_bundle.path, labels, pool=nightly_pool,
                     options={"bands": ["red", "green", "blue"]})
    assert _runs(first) == {"scene-2026-06-01": "computed"} and first["exit_code"] == 0
    item = json.loads((out / "scene-2026-06-01" / "item.json").read_text())
    assert any(link["rel"] == "derived_from" for link in item["links"])
    catalog = json.loads((out / "catalog.json").read_text())
    assert any("scene-2026-06-01" in link["href"] for link in catalog["links"]
               if link["rel"] == "item")
    second, _ = _pass(inbox, out, tiny_bundle.path, labels, pool=nightly_pool,
                      options={"bands": ["red", "green", "blue"]})
    assert _runs(second) == {"scene-2026-06-01": "reused"}


def test_an_inbox_dicom_tree_lists_its_junk_as_skipped_rows(tmp_path):
    """A pass over an inbox holding a DICOM series and junk beside it hands the junk to
    the batch as ``skipped`` rows (the scenes are the same as without it)."""
    import numpy as np

    from flows.nightly import inbox_scenes
    from tests.pipeline.formats.dicom_make import Geometry, write_series

    inbox = tmp_path / "inbox"
    write_series(inbox / "ct", np.zeros((16, 12, 6), np.int16), Geometry())
    (inbox / "ct" / "notes.txt").write_text("not DICOM")
    (inbox / "ct" / "empty.dcm").write_bytes(b"")
    found = inbox_scenes(inbox, tmp_path / "out")
    assert [s.kind for s in found.scenes] == ["dicom"]
    reasons = {Path(s.path).name: s.reason for s in found.skipped}
    assert set(reasons) == {"notes.txt", "empty.dcm"}, reasons
    assert "empty" in reasons["empty.dcm"]
