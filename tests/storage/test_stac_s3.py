"""STAC on object storage: an Item and its band COGs in a bucket (a local S3 server),
segmented with ``segpipe run s3://.../item.json --out s3://...``; the result equals a
local run of the same files, ``item.json`` and ``catalog.json`` are written to the bucket,
and a missing asset object is one line naming its ``s3://`` href."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import rasterio
from typer.testing import CliRunner

from flows.cli import app
from pipeline.storage import S3Uri, objects
from tests.pipeline.formats.test_stac import _item

ARGS = ["--model", "demo-satellite", "--bands", "red,green,blue", "--executor", "local"]


def _upload_folder(folder: Path, prefix: S3Uri) -> None:
    for path in sorted(folder.iterdir()):
        objects.put_file(prefix / path.name, path)


def _semantic(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def test_an_item_in_a_bucket_runs_as_a_local_one(bucket, tmp_path):  # noqa: F811
    folder = tmp_path / "in"
    folder.mkdir()
    _item(folder, "remote", seed=5)
    _item(folder, "lost", seed=6)
    (folder / "lost_red.tif").unlink()
    prefix = S3Uri(bucket, "stac")
    _upload_folder(folder, prefix)
    local = CliRunner().invoke(app, ["run", str(folder / "remote.json"), *ARGS,
                                     "--out", str(tmp_path / "local")])
    assert local.exit_code == 0, local.output
    out = S3Uri(bucket, "results")
    remote = CliRunner().invoke(app, ["run", str(prefix / "remote.json"),
                                      str(prefix / "lost.json"), *ARGS, "--out", str(out)])
    assert remote.exit_code == 1, remote.output
    rows = {r["scene_id"]: r for r in
            json.loads(objects.get_bytes(out / "batch.json"))["scenes"]}
    assert rows["remote"]["status"] == "ok" and rows["lost"]["status"] == "failed"
    assert str(prefix / "lost_red.tif") in rows["lost"]["reason"]
    assert "\n" not in rows["lost"]["reason"]
    got = objects.download(out / "remote" / "semantic.tif", tmp_path / "remote_semantic.tif")
    np.testing.assert_array_equal(_semantic(got),
                                  _semantic(tmp_path / "local" / "remote" / "semantic.tif"))
    item = json.loads(objects.get_bytes(out / "remote" / "item.json"))
    (source,) = [link for link in item["links"] if link["rel"] == "derived_from"]
    assert source["href"] == str(prefix / "remote.json")
    local_item = json.loads((tmp_path / "local" / "remote" / "item.json").read_text())
    assert set(item["assets"]) == set(local_item["assets"])  # the label COGs included
    assert item["assets"]["semantic"]["href"] == "./semantic.tif"
    assert objects.exists(out / "remote" / "semantic.tif")
    catalog = json.loads(objects.get_bytes(out / "catalog.json"))
    assert [link["href"] for link in catalog["links"] if link["rel"] == "item"] == [
        "./remote/item.json"]
