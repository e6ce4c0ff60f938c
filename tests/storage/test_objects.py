"""Objects, atomic writes, staging, tile records and discovery on a local S3 server."""

from __future__ import annotations

import pickle
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from pipeline.atomic import atomic_path, write_json_atomic
from pipeline.discovery import discover, match_labels
from pipeline.inference import records as rec
from pipeline.io.nifti import open_volume
from pipeline.storage import (
    MissingObjectError,
    S3Uri,
    StorageError,
    access,
    objects,
    parse_location,
)
from pipeline.storage.staging import local_dir
from pipeline.streaming.tile_outcome import TileOutcome
from segcore.errors import InputError


def test_objects_round_trip_list_copy_and_delete_a_prefix(bucket):
    root = S3Uri(bucket, "run")
    for key in ("a.txt", "sub/b.txt", "sub/deeper/c.txt"):
        objects.put_bytes(root / key, key.encode())
    objects.put_bytes(S3Uri(bucket, "run2/x.txt"), b"sibling with a shared prefix text")
    assert [o.uri.relative_to(root).as_posix() for o in objects.list_objects(root)] == \
        ["a.txt", "sub/b.txt", "sub/deeper/c.txt"]
    assert objects.get_bytes(root / "sub/b.txt") == b"sub/b.txt"
    assert objects.stat(root / "a.txt").size == 5 and objects.exists(root / "a.txt")
    assert not objects.exists(root / "nope") and objects.is_prefix(root / "sub")
    objects.copy_objects([(root / "a.txt", S3Uri(bucket, "copy/a.txt"))])
    assert objects.get_bytes(S3Uri(bucket, "copy/a.txt")) == b"a.txt"
    assert objects.delete_prefix(root) == 3
    assert not objects.list_objects(root) and objects.exists(S3Uri(bucket, "run2/x.txt"))
    with pytest.raises(MissingObjectError, match=f"no such key 'run/a.txt' in bucket '{bucket}'"):
        objects.get_bytes(root / "a.txt")


def test_atomic_writes_and_staged_files_appear_whole_or_not_at_all(bucket, tmp_path):
    out = S3Uri(bucket, "scene")
    write_json_atomic(out / "doc.json", {"ok": True})
    assert access.read_text(out / "doc.json") == '{\n  "ok": true\n}'
    with atomic_path(out / "blob.bin", suffix=".bin") as tmp:
        assert not str(tmp).startswith("s3:")
        tmp.write_bytes(b"x" * 1000)
    assert objects.stat(out / "blob.bin").size == 1000
    with pytest.raises(RuntimeError), atomic_path(out / "failed.bin") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer failed")
    assert not objects.exists(out / "failed.bin") and not tmp.exists()
    with local_dir(out) as staging:  # what GDAL/Pillow write locally lands on S3 on success
        (staging / "q.png").write_bytes(b"png")
        (staging / ".q.png.tmp").write_bytes(b"writer's temporary file")
    assert objects.get_bytes(out / "q.png") == b"png" and not objects.exists(out / ".q.png.tmp")
    assert not staging.exists()
    with pytest.raises(RuntimeError), local_dir(out) as staging:
        (staging / "broken.tif").write_bytes(b"half")
        raise RuntimeError("export failed")
    assert not objects.exists(out / "broken.tif")
    with local_dir(tmp_path) as same:  # a local destination is used as it is
        assert same == tmp_path


def _outcome(index: tuple[int, int]) -> TileOutcome:
    return TileOutcome(index=index, seconds=0.1, worker="w1", retried=True,
                       centres=np.array([[101, 7], [103, 9]]),
                       scores=np.array([0.25, 0.75], np.float32))


class _Exploit:
    """Unpickling this creates a file: proof that a record was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("where", ["local", "s3"])
def test_tile_records_round_trip_without_pickle(where, bucket, tmp_path):
    directory = tmp_path / "tiles" if where == "local" else S3Uri(bucket, "p/tiles")
    rec.prepare_records(directory, keep=False)
    assert rec.mark_started(directory, 4) is False and rec.mark_started(directory, 4) is True
    rec.write_record(directory, 4, _outcome((1, 1)))
    rec.write_record(directory, 7, _outcome((2, 1)))
    marker = tmp_path / "unpickled"
    evil = parse_location(directory) / "9.done"
    if where == "local":
        Path(evil).write_bytes(pickle.dumps(_Exploit(marker)))
    else:
        objects.put_bytes(evil, pickle.dumps(_Exploit(marker)))
    found = rec.read_records(directory)
    assert sorted(found) == [4, 7] and not marker.exists()  # never unpickled, ignored
    back = found[4]
    assert back.index == (1, 1)
    assert back.centres.dtype == np.int64 and back.centres.tolist() == [[101, 7], [103, 9]]
    assert back.scores.tolist() == [0.25, 0.75]
    assert (back.retried, back.skipped) == (True, False)
    rec.prepare_records(directory, keep=True)
    assert sorted(rec.read_records(directory)) == [4, 7]
    rec.prepare_records(directory, keep=False)
    assert rec.read_records(directory) == {}


def test_an_s3_prefix_is_scanned_like_a_directory(bucket):
    for key in ("scenes/a.tif", "scenes/sub/b.TIFF", "scenes/sub/.hidden.tif", "scenes/notes.txt",
                "labels/a_labels.tif", "labels/sub__b.tif"):
        objects.put_bytes(S3Uri(bucket, key), b"")
    scenes = discover([f"s3://{bucket}/scenes/"])
    assert [(s.scene_id, str(s.path)) for s in scenes] == [
        ("a", f"s3://{bucket}/scenes/a.tif"), ("sub__b", f"s3://{bucket}/scenes/sub/b.TIFF")]
    single = discover([f"s3://{bucket}/scenes/sub/b.TIFF"])
    assert [s.scene_id for s in single] == ["b"]
    labels = match_labels(scenes, f"s3://{bucket}/labels")
    assert {k: str(v) for k, v in labels.items()} == {
        "a": f"s3://{bucket}/labels/a_labels.tif", "sub__b": f"s3://{bucket}/labels/sub__b.tif"}
    with pytest.raises(StorageError, match=r"s3://.*/scenez: no such key 'scenez'"):
        discover([f"s3://{bucket}/scenez"])


def test_nifti_inputs_are_downloaded_for_nibabel(bucket, tmp_path):
    volume = np.arange(6 * 5 * 4, dtype=np.int16).reshape(6, 5, 4)
    path = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(volume, np.diag([0.8, 0.8, 1.5, 1.0])), path)
    uri = S3Uri(bucket, "mri/vol.nii.gz")
    objects.put_file(uri, path)
    info = open_volume(uri)
    assert info.disk_shape == (6, 5, 4) and Path(info.path).read_bytes() == path.read_bytes()
    objects.put_bytes(S3Uri(bucket, "mri/bad.nii"), b"not a volume at all" * 30)
    with pytest.raises(InputError, match=f"^s3://{bucket}/mri/bad.nii: "):
        open_volume(S3Uri(bucket, "mri/bad.nii"))
