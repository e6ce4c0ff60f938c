"""Publishing a scene on object storage: complete or not at all, report.json last, a
failed scene never damages a finished one, a cut-short publish is redone from the partial."""

from __future__ import annotations

import json

import pytest

from pipeline.formats import Scene
from pipeline.run.resume import finished_report, mark_ingested, partial_matches
from pipeline.run.workspace import (
    Workspace,
    discard,
    prepare_out_dir,
    publish,
    start_partial,
)
from pipeline.storage import S3Uri, StorageError, objects
from segcore.errors import ConfigError


def _build(ws: Workspace, files: dict[str, str]) -> None:
    """A partial scene as the stages leave it (files, bookkeeping, report.json)."""
    start_partial(ws, keep=False)
    mark_ingested(ws.partial, "fp")
    objects.put_bytes(ws.records / "0.done", b"record")
    for name, text in files.items():
        objects.put_bytes(ws.partial / name, text.encode())


def _published(ws: Workspace) -> dict[str, bytes]:
    return {o.uri.relative_to(ws.final).as_posix(): objects.get_bytes(o.uri)
            for o in objects.list_objects(ws.final)}


def test_publish_replaces_a_finished_scene_and_discard_leaves_it_alone(bucket):
    ws = Workspace(Scene(S3Uri(bucket, "in/s.tif"), "s", "geotiff"), f"s3://{bucket}/out")
    assert ws.final == S3Uri(bucket, "out/s") and ws.store == S3Uri(bucket, "out/.s.partial/scene.zarr")
    _build(ws, {"old.tif": "old", "semantic.tif": "v1", "report.json": '{"v": 1}'})
    assert partial_matches(ws.partial, "fp") and not partial_matches(ws.partial, "other")
    assert publish(ws) == ws.final
    marker = b'{"fingerprint": "fp"}'  # ingest.json travels with the scene; tiles/ does not
    assert _published(ws) == {"old.tif": b"old", "semantic.tif": b"v1", "report.json": b'{"v": 1}',
                              "ingest.json": marker}
    assert not objects.list_objects(ws.partial)  # partial work and bookkeeping are gone
    # a failed second run: its partial work is discarded, the finished scene is untouched
    _build(ws, {"semantic.tif": "broken"})
    discard(ws)
    assert not objects.list_objects(ws.partial) and _published(ws)["semantic.tif"] == b"v1"
    # a successful second run replaces it: stale objects go, report.json is the new one
    _build(ws, {"semantic.tif": "v2", "scene.zarr/zarr.json": "{}", "report.json": '{"v": 2}'})
    publish(ws)
    assert _published(ws) == {"semantic.tif": b"v2", "scene.zarr/zarr.json": b"{}",
                              "report.json": b'{"v": 2}', "ingest.json": marker}


def test_a_publish_cut_short_leaves_no_report_and_is_redone(bucket, monkeypatch):
    ws = Workspace(Scene(S3Uri(bucket, "in/s.tif"), "s", "geotiff"), S3Uri(bucket, "out"))
    _build(ws, {"semantic.tif": "v1", "report.json": '{"v": 1}'})
    publish(ws)
    _build(ws, {"semantic.tif": "v2", "report.json": '{"v": 2}'})
    copies = []
    real_copy = objects.copy_objects

    def copy_then_fail(pairs):
        pairs = list(pairs)
        copies.append([str(t) for _, t in pairs])
        if any(t.name == "report.json" for _, t in pairs):
            raise StorageError(str(pairs[0][1]), "connection lost")
        return real_copy(pairs)

    monkeypatch.setattr(objects, "copy_objects", copy_then_fail)
    with pytest.raises(StorageError, match="connection lost"):
        publish(ws)
    assert copies[-1] == [str(ws.final / "report.json")]  # report.json is copied last, alone
    assert "report.json" not in _published(ws)  # not a finished scene any more
    assert objects.exists(ws.partial / "report.json")  # the partial work is kept
    monkeypatch.setattr(objects, "copy_objects", real_copy)
    publish(ws)
    assert json.loads(_published(ws)["report.json"]) == {"v": 2}


def test_finished_report_reads_s3_and_out_is_checked_up_front(bucket, s3_env, monkeypatch):
    final = S3Uri(bucket, "out/s")
    assert finished_report(final, "fp") is None  # nothing there yet
    objects.put_bytes(final / "report.json", b"{not json")
    assert finished_report(final, "fp") is None  # malformed: run again
    assert prepare_out_dir(f"s3://{bucket}/out") == S3Uri(bucket, "out")
    assert [o.uri.name for o in objects.list_objects(S3Uri(bucket, "out"))] == ["report.json"]
    with pytest.raises(ConfigError, match=r"^--out s3://segpipe-nope-nope/o: cannot write "
                                          r"results there \(bucket 'segpipe-nope-nope' does"):
        prepare_out_dir("s3://segpipe-nope-nope/o")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    with pytest.raises(StorageError, match="cannot reach the S3 endpoint http://127.0.0.1:9"):
        finished_report(final, "fp")  # unreachable storage is said, not taken for "absent"
