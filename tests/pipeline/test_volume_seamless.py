"""Seamless 3-D tiling: a 96 x 128 x 136 phantom, --tile 64 (12 tiles) versus one tile,
demo-medical with its exact halo (56): on every axis some windows are cut by the volume's
edge and some by the halo, so each seam sees exactly the context the model needs."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.options import RunOptions
from pipeline.synthdata.phantoms import write_phantom
from pipeline.run import Workspace, run_scene
from pipeline.formats import Scene
from pipeline.store import INSTANCE, SEMANTIC, iter_blocks, open_store

SHAPE = (96, 128, 136)  # canonical (Z, Y, X) voxels


@pytest.fixture(scope="module")
def medical_pool(ray_session):
    from pipeline.bundle import load_bundle
    from pipeline.inference.pool import PoolConfig, WorkerPool

    pool = WorkerPool(str(load_bundle("demo-medical").path), PoolConfig(workers=2, batch_size=2))
    yield pool
    pool.shutdown()


def test_tiled_volume_equals_single_tile(tmp_path, medical_pool):
    from pipeline.bundle import load_bundle

    bundle = load_bundle("demo-medical")
    spacing = tuple(bundle.spec.spacing)
    path = tmp_path / "phantom.nii.gz"
    write_phantom(path, shape=SHAPE, spacing=spacing, seed=42, axcodes="LPS", lesions=(8, 12))
    scene = Scene(path, "phantom", "nifti")
    reports, groups = {}, {}
    for tile in (64, 192):  # 192: one tile
        ws = Workspace(scene, tmp_path / f"tile{tile}")
        options = RunOptions(tile=tile, halo_mode="exact")  # exact: seamless by construction
        reports[tile] = run_scene(ws, bundle, options, medical_pool).report.to_json()
        groups[tile] = open_store(ws.final / "scene.zarr")
    assert reports[64]["tiles"]["total"] == 12 and reports[192]["tiles"]["total"] == 1
    same = total = 0
    tiled, whole = groups[64][SEMANTIC], groups[192][SEMANTIC]
    for key in iter_blocks(tiled.shape, (64, 192, 192)):
        a, b = tiled[key], whole[key]
        same += int((a == b).sum())
        total += a.size
    agreement = same / total
    print(f"\n{SHAPE} phantom, tile 64 vs one tile: {100 * agreement:.6f} % of voxels agree "
          f"({total - same} differ)")
    assert agreement >= 0.9999
    # the objects too: the same lesion count, each lesion one id across tile borders
    counts = {t: reports[t]["summary"]["instances"]["lesion"] for t in reports}
    assert counts[64] == counts[192] > 0
    # one-to-one: every tiled lesion id meets exactly one single-tile id and vice versa
    a, b = groups[64][INSTANCE][:], groups[192][INSTANCE][:]
    both = (a > 0) & (b > 0)
    pairs = np.unique(np.stack([a[both], b[both]]), axis=1)
    assert pairs.shape[1] == np.unique(a[a > 0]).size == np.unique(b[b > 0]).size == counts[64]
