"""The run fingerprint's ``input`` part covers every file a scene is read from.

A DICOM scene stands for a whole series but names one file; a STAC scene names its Item
file, whose bands are other files. Touching, adding or removing a slice file, or
replacing a band file, must compute the scene again (the recompute line says ``the
input changed``); junk beside a series must not. Real DICOM files (pydicom), real COGs,
real Zarr and the in-process model pool.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from rasterio.transform import Affine

from pipeline.bundle import load_bundle
from pipeline.formats import FORMATS
from pipeline.formats.base import file_identity
from pipeline.formats.dicom import DICOM
from pipeline.inference.local_pool import LocalPool
from pipeline.options import RunOptions
from pipeline.run import Workspace, run_scene
from tests.pipeline.formats.cases import write_band, write_stac_item
from tests.pipeline.formats.dicom_make import Geometry, Options, non_image, write_series

GEOMETRY = Geometry(pixel_spacing=(2.0, 2.0), slice_spacing=2.0)


def _series(folder: Path, slices: int = 12) -> list[Path]:
    rng = np.random.default_rng(5)
    volume = rng.integers(-200, 200, (20, 24, slices)).astype(np.int16)
    return write_series(folder, volume, GEOMETRY, Options(names="ordered"))


def _touch(path: Path, ns: int = 10**9) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + ns))


def test_a_dicom_identity_covers_every_slice_and_nothing_else(tmp_path):
    files = _series(tmp_path / "CT")
    [scene] = DICOM.discover(tmp_path)
    first = DICOM.input_identity(scene)
    assert first == DICOM.input_identity(scene)  # stable
    assert first[2] == len(files) and str(files[0]) not in str(first[3:])
    _touch(files[7])  # a slice other than the one the scene names
    touched = DICOM.input_identity(scene)
    assert touched != first
    files[-1].unlink()  # one slice fewer
    removed = DICOM.input_identity(scene)
    assert removed != touched and removed[2] == len(files) - 1
    shutil.copy(files[3], tmp_path / "CT" / "zz-copy")  # a repeated instance: read once
    (tmp_path / "CT" / "notes.txt").write_text("not a slice")
    non_image(tmp_path / "CT" / "rt", "1.2.840.10008.5.1.4.1.1.481.3")
    assert DICOM.input_identity(scene) == removed
    # single-file formats keep the one-file identity (finished results stay reusable)
    assert FORMATS["nifti"].input_identity(scene) == file_identity(scene.path)


def test_a_stac_identity_covers_its_band_files(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("red", "green"):
        write_band(tmp_path / f"b_{name}.tif", rng.integers(1, 999, (32, 32)).astype(np.uint16),
                   transform=Affine(10, 0, 500000, 0, -10, 6100000))
    item = write_stac_item(tmp_path / "item.json", "it", {"B04": ("b_red.tif", "red"),
                                                         "B03": ("b_green.tif", "green")})
    [scene] = FORMATS["stac"].scenes(item)
    stac = FORMATS["stac"]
    first = stac.input_identity(scene)
    assert first[:3] == file_identity(item)
    _touch(tmp_path / "b_green.tif")  # the Item file is unchanged
    assert stac.input_identity(scene) != first


@pytest.fixture(scope="module")
def medical():
    bundle = load_bundle("demo-medical")
    pool = LocalPool(str(bundle.path), cores=2)
    yield bundle, pool
    pool.shutdown()


def _recomputed(caplog) -> list[str]:
    lines = [r.getMessage() for r in caplog.records
             if r.name == "pipeline.run.resume" and "recomputed" in r.getMessage()]
    caplog.clear()
    return lines


def test_touching_or_removing_a_slice_recomputes_the_series(tmp_path, medical, caplog):
    bundle, pool = medical
    files = _series(tmp_path / "in" / "CT", slices=16)
    [scene] = DICOM.discover(tmp_path / "in")
    ws = Workspace(scene, tmp_path / "out")
    options = RunOptions(executor="local")
    caplog.set_level(logging.WARNING, logger="pipeline.run.resume")

    def run():
        return run_scene(ws, bundle, options, pool)

    done = run()
    assert not done.reused and done.report.tiles.computed > 0
    again = run()
    assert again.reused and _recomputed(caplog) == []  # untouched: reused
    assert scene.path == files[0]
    _touch(files[9])  # not the file the scene names
    touched = run()
    assert not touched.reused and touched.report.tiles.computed > 0
    assert _recomputed(caplog) == [f"{scene.scene_id}: recomputed: the input changed"]
    files[-1].unlink()  # the top slice: still an even series, one slice shorter
    removed = run()
    assert not removed.reused and removed.report.tiles.computed > 0
    assert sorted(touched.report.shape) != sorted(removed.report.shape)  # 16 -> 15 slices
    assert _recomputed(caplog) == [f"{scene.scene_id}: recomputed: the input changed"]
    assert run().reused
