"""Hidden folders below a scanned s3:// prefix are skipped, as they are on disk."""

from __future__ import annotations

from pipeline.discovery import discover
from pipeline.storage import objects
from pipeline.storage.location import S3Uri


def test_hidden_folders_below_an_s3_prefix_are_skipped(bucket):
    for key in ("scenes/a.tif", "scenes/.snapshot/daily/a.tif", "scenes/sub/.trash/b.tif",
                "scenes/sub/b.tif", "scenes/batch.json.tif"):
        objects.put_bytes(S3Uri(bucket, key), b"")
    assert [s.scene_id for s in discover([f"s3://{bucket}/scenes"])] == [
        "a", "_batch.json", "sub__b"]
    (explicit,) = discover([f"s3://{bucket}/scenes/.snapshot/daily/a.tif"])
    assert explicit.scene_id == "a"
