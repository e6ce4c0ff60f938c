"""Discovery: hidden trees are skipped, scene ids are safe and never collide with --out files."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.discovery import discover, match_labels
from pipeline.formats import Scene
from pipeline.formats.base import MAX_ID_LENGTH, RESERVED_NAMES, safe_id
from pipeline.run.workspace import Workspace
from segcore.errors import ConfigError


def _touch(root: Path, *names: str) -> None:
    for name in names:  # discovery never opens files: their content does not matter
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")


def test_hidden_files_and_directories_are_skipped_when_scanning(tmp_path: Path) -> None:
    _touch(tmp_path, "a.tif", "sub/b.nii.gz", ".snapshot/hourly.0/a.tif",
           ".snapshot/hourly.0/sub/b.nii.gz", "sub/.trash/c.tif", "sub/.d.tif")
    ids = [s.scene_id for s in discover([tmp_path])]
    assert ids == ["a", "sub__b"]


def test_a_hidden_file_or_folder_named_explicitly_is_accepted(tmp_path: Path) -> None:
    _touch(tmp_path, ".snapshot/hourly.0/a.tif", ".scan.nii.gz")
    (snap,) = discover([tmp_path / ".snapshot" / "hourly.0" / "a.tif"])
    assert snap.scene_id == "a"
    (hidden,) = discover([tmp_path / ".scan.nii.gz"])
    assert hidden.scene_id == "_.scan" and hidden.kind == "nifti"
    assert [s.scene_id for s in discover([tmp_path / ".snapshot"])] == ["hourly.0__a"]


def test_label_directories_skip_hidden_trees(tmp_path: Path) -> None:
    _touch(tmp_path, "in/a.tif", "in/b.tif", "labels/a_labels.tif",
           "labels/.snapshot/b.tif", "labels/.b.tif")
    scenes = discover([tmp_path / "in"])
    assert match_labels(scenes, tmp_path / "labels") == {"a": tmp_path / "labels" / "a_labels.tif"}


@pytest.mark.parametrize("name", ["batch.json.tif", "batch.csv.tif", "catalog.json.tiff",
                                  "BATCH.JSON.tif", "batch.json.nii.gz"])
def test_scene_ids_never_name_a_batch_file(tmp_path: Path, name: str) -> None:
    _touch(tmp_path, name)
    (scene,) = discover([tmp_path])
    assert scene.scene_id.lower() not in RESERVED_NAMES
    assert scene.scene_id == "_" + name.split(".")[0] + "." + name.split(".")[1]


def test_equal_names_in_different_folders_get_distinct_ids(tmp_path: Path) -> None:
    _touch(tmp_path, "site-a/scan.nii.gz", "site-b/scan.nii.gz")
    assert [s.scene_id for s in discover([tmp_path])] == ["site-a__scan", "site-b__scan"]
    with pytest.raises(ConfigError, match="also the id of"):  # named one by one: said, not merged
        discover([tmp_path / "site-a" / "scan.nii.gz", tmp_path / "site-b" / "scan.nii.gz"])


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(codec="utf-8"), max_size=300))
def test_safe_id_stays_inside_out(text: str) -> None:
    sid = safe_id(text)
    assert sid and "/" not in sid and "\\" not in sid and "\x00" not in sid
    assert not sid.startswith(".") and sid.lower() not in RESERVED_NAMES
    assert len(sid) <= MAX_ID_LENGTH and safe_id(sid) == sid
    out = Path("/out")
    assert (out / sid).resolve().parent == out
    assert (out / f".{sid}.partial").resolve().parent == out


def test_long_ids_stay_distinct() -> None:
    a, b = safe_id("x" * 300 + "a"), safe_id("x" * 300 + "b")
    assert a != b and len(a) == len(b) == MAX_ID_LENGTH


@pytest.mark.parametrize("sid", ["../escape", "a/b", ".hidden", "..", "batch.csv", ""])
def test_workspace_refuses_an_unsafe_scene_id(tmp_path: Path, sid: str) -> None:
    with pytest.raises(ConfigError, match="scene id"):
        Workspace(Scene(tmp_path / "a.tif", sid, "geotiff"), tmp_path / "out")
