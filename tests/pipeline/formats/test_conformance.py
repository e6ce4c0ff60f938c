"""The conformance suite every registered scene format passes (real files, Zarr, Ray actors).

For each format in ``pipeline.formats.FORMATS`` (cases in ``cases.py``):

* round trip on the exact grid: exports keep the input's grid, and a predictable model's
  classes land on exactly the pixels (voxels) of the input that caused them;
* bad input (an empty file, a truncated one) gives one line naming the file, fails only
  its own scene, and leaves no partial work;
* a label file on another grid is refused before inference with one line naming the
  label file (``metrics.error``), and the segmentation is still published;
* resume after an interrupt reuses the finished tiles and gives byte-identical arrays;
* seamless tiling: a convolutional model tiled small agrees with one tile on >= 99.99 %.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

from pipeline.formats import FORMATS
from pipeline.inference.pool import PoolConfig, WorkerPool
from pipeline.options import RunOptions
from pipeline.progress import progress_sink
from pipeline.run import Workspace, run_scene
from pipeline.store import INSTANCE, PANOPTIC, SEMANTIC, open_store
from tests.pipeline.formats.cases import CASES, conv_bundle, smooth_data, spot_bundle, spot_data

FORMAT_NAMES = sorted(FORMATS)


def test_every_registered_format_has_a_conformance_case():
    assert set(CASES) == set(FORMATS)
    for name, case in CASES.items():
        assert FORMATS[name].ndim == case.ndim


@pytest.fixture(scope="module", params=FORMAT_NAMES)
def fmt(request):
    return CASES[request.param]


@pytest.fixture(scope="session")
def bundles_of(tmp_path_factory):
    """``bundles_of(ndim)``: the spot and the convolutional bundle, one pair per number of
    axes, so formats of the same dimensionality share them (and the effective-halo
    check, which is measured once per bundle and process)."""
    made: dict[int, dict] = {}

    def get(ndim: int) -> dict:
        if ndim not in made:
            root = tmp_path_factory.mktemp(f"models-{ndim}d")
            made[ndim] = {"spot": spot_bundle(root / "spot", ndim),
                          "conv": conv_bundle(root / "conv", ndim)}
        return made[ndim]

    return get


@pytest.fixture(scope="module")
def models(fmt, ray_session, bundles_of):
    """The spot and the convolutional model of the format's dimensionality, with pools."""
    bundles = bundles_of(fmt.ndim)
    pools = {k: WorkerPool(str(b.path), PoolConfig(workers=1, batch_size=4))
             for k, b in bundles.items()}
    yield {k: (bundles[k], pools[k]) for k in bundles}
    for pool in pools.values():
        pool.shutdown()


def _exported(fmt) -> str:
    """The file ending of the format's label exports (its input's, unless it says)."""
    return getattr(fmt, "export_suffix", fmt.suffix)


def _scene(fmt, path):
    return FORMATS[fmt.name].scene(path)


def _run(fmt, models, which, path, out, *, labels=None, **options):
    bundle, pool = models[which]
    ws = Workspace(_scene(fmt, path), out, labels)
    return ws, run_scene(ws, bundle, RunOptions(**options), pool)


def test_round_trip_keeps_the_exact_grid(fmt, models, tmp_path):
    data, spots = spot_data(fmt, seed=1)
    path = fmt.write(tmp_path / f"spots{fmt.suffix}", data)
    ws, result = _run(fmt, models, "spot", path, tmp_path / "out", tile=fmt.tile)
    _, grid_in = fmt.read(path)
    report = result.report
    assert report.kind == fmt.name and tuple(report.shape) == fmt.shape
    assert report.tiles.total > 4  # really tiled
    assert report.outputs[SEMANTIC] == f"{SEMANTIC}{_exported(fmt)}"  # the export, not a quicklook
    _, grid_out = fmt.read(ws.final / report.outputs[SEMANTIC])
    assert grid_out == grid_in
    # a semantic-only model: no instance or panoptic arrays or exports
    assert INSTANCE not in report.outputs and PANOPTIC not in report.outputs
    assert not (ws.final / f"{INSTANCE}{_exported(fmt)}").exists()
    assert set(open_store(ws.final / "scene.zarr").array_keys()).isdisjoint({INSTANCE, PANOPTIC})
    assert all((ws.final / f).is_file() for f in report.outputs["quicklooks"].values())
    semantic, _ = fmt.read(ws.final / f"semantic{_exported(fmt)}")
    np.testing.assert_array_equal(semantic == 1, spots)
    np.testing.assert_array_equal(semantic[~spots], 0)
    assert report.summary.classes["spot"].pixels == int(spots.sum())
    assert not ws.partial.exists()


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_bad_input_is_one_line_and_fails_only_its_scene(fmt, models, tmp_path, damage,
                                                        prefect_harness):
    from flows.segment_scene import segment_batch

    data, _ = spot_data(fmt, seed=2)
    good = fmt.write(tmp_path / f"good{fmt.suffix}", data)
    bad = tmp_path / f"bad{fmt.suffix}"
    full = fmt.write(tmp_path / f"full{fmt.suffix}", data).read_bytes()
    bad.write_bytes(b"" if damage == "empty" else full[: len(full) // 2])
    bundle, pool = models["spot"]
    scenes = [_scene(fmt, good), _scene(fmt, bad)]
    result = segment_batch(scenes, bundle, RunOptions(tile=fmt.tile), tmp_path / "out", pool=pool)
    rows = {o.scene_id: o for o in result.outcomes}
    assert rows["good"].ok and not rows["bad"].ok
    reason = rows["bad"].reason
    assert "\n" not in reason and str(bad) in reason, reason
    assert (tmp_path / "out" / "good" / "report.json").is_file()
    assert not (tmp_path / "out" / "bad").exists()
    assert not (tmp_path / "out" / ".bad.partial").exists()


def test_labels_on_another_grid_are_refused_in_one_line(fmt, models, tmp_path):
    data, _ = spot_data(fmt, seed=3)
    path = fmt.write(tmp_path / f"scene{fmt.suffix}", data)
    other = tuple(n - 2 for n in fmt.shape)
    labels = fmt.write(tmp_path / f"labels{fmt.suffix}", np.zeros(other, data.dtype))
    ws, result = _run(fmt, models, "spot", path, tmp_path / "out", labels=labels,
                      tile=fmt.tile)
    error = result.report.metrics_error
    assert error is not None and "\n" not in error and str(labels) in error, error
    assert result.report.to_json()["metrics"] == {
        "error": error, "labels": str(labels),
        "labels_digest": result.report.metrics.labels_digest}
    assert (ws.final / result.report.outputs[SEMANTIC]).is_file()  # segmentation kept
    assert result.report.tiles.computed == result.report.tiles.total


class _InterruptAfter:
    """A progress sink that interrupts the run (like Ctrl-C) after ``n`` finished tiles."""

    def __init__(self, n: int) -> None:
        self.n, self.done = n, 0

    def start(self, scene_id: str, stage: str, total: int) -> None:
        pass

    def advance(self, scene_id: str, stage: str, n: int) -> None:
        self.done += n
        if self.done >= self.n:
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def conv_scene(fmt, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"conv-{fmt.name}")
    return fmt.write(root / f"conv{fmt.suffix}", smooth_data(fmt, seed=4))


def _arrays(ws) -> dict[str, np.ndarray]:
    group = open_store(ws.final / "scene.zarr")
    return {name: group[name][:] for name in (SEMANTIC, INSTANCE, PANOPTIC) if name in group}


def test_resume_after_an_interrupt_reuses_tiles(fmt, models, conv_scene, tmp_path):
    # the exact halo: resume is the point here; the effective one is the tiled test's
    options = {"tile": fmt.tile, "halo_mode": "exact"}
    clean_ws, clean = _run(fmt, models, "conv", conv_scene, tmp_path / "clean", **options)
    out = tmp_path / "resumed"
    with contextlib.suppress(KeyboardInterrupt), progress_sink(_InterruptAfter(3)):
        _run(fmt, models, "conv", conv_scene, out, **options)
    ws = Workspace(_scene(fmt, conv_scene), out)
    assert ws.partial.is_dir() and not ws.final.exists()
    _, resumed = _run(fmt, models, "conv", conv_scene, out, **options)
    tiles = resumed.report.tiles
    assert tiles.reused >= 3 and tiles.reused + tiles.computed == tiles.total
    assert tiles.total == clean.report.tiles.total
    want, got = _arrays(clean_ws), _arrays(ws)
    for name in want:
        assert got[name].tobytes() == want[name].tobytes(), name


def test_tiled_output_equals_a_single_tile(fmt, models, conv_scene, tmp_path):
    _, tiled = _run(fmt, models, "conv", conv_scene, tmp_path / "tiled", tile=fmt.tile)
    _, whole = _run(fmt, models, "conv", conv_scene, tmp_path / "whole", tile=512)
    assert tiled.report.tiles.total >= 8 and whole.report.tiles.total == 1
    a = open_store(tmp_path / "tiled" / "conv" / "scene.zarr")[SEMANTIC][:]
    b = open_store(tmp_path / "whole" / "conv" / "scene.zarr")[SEMANTIC][:]
    agree = float((a == b).mean())
    assert agree >= 0.9999, agree
    assert len(np.unique(b)) > 1  # the model is not trivially constant
    semantic, _ = fmt.read(tmp_path / "tiled" / "conv" / f"semantic{_exported(fmt)}")
    whole_file, _ = fmt.read(tmp_path / "whole" / "conv" / f"semantic{_exported(fmt)}")
    assert float((semantic == whole_file).mean()) >= 0.9999
